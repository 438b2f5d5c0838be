using System.Management.Automation;
using System.Reflection;
using System.Runtime.Loader;
using Google.Protobuf.WellKnownTypes;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace AlcProbe;

/// <summary>Uses this module's Google.Protobuf and ONNX Runtime managed API and says which versions answered.</summary>
[Cmdlet(VerbsCommon.Get, "AlcProbe")]
public sealed class GetAlcProbeCommand : PSCmdlet
{
    protected override void ProcessRecord()
    {
        // Protobuf: a message through its binary and JSON forms.
        var value = new Struct { Fields = { ["answer"] = Value.ForNumber(42) } };
        var parsed = Struct.Parser.ParseFrom(Google.Protobuf.MessageExtensions.ToByteArray(value));
        var json = Google.Protobuf.JsonFormatter.Default.Format(parsed);
        // ONNX Runtime's managed tensor type (no native library needed).
        var tensor = new DenseTensor<float>(new[] { 2, 3 });
        tensor[1, 2] = 5f;
        WriteObject(new PSObject(new
        {
            Protobuf = Version(typeof(Struct).Assembly),
            ProtobufContext = AssemblyLoadContext.GetLoadContext(typeof(Struct).Assembly)?.Name,
            OnnxRuntime = Version(typeof(DenseTensor<float>).Assembly),
            Json = json,
            TensorSum = tensor.Buffer.ToArray().Sum(),
        }));
    }

    static string Version(Assembly assembly) =>
        (assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? assembly.GetName().Version!.ToString()).Split('+')[0];
}
