using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

[Cmdlet(VerbsCommon.Get, "OnnxModel", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Get-OnnxModel.md")]
[OutputType(typeof(ModelSummary))]
public sealed class GetOnnxModelCommand : ModelPathCmdlet
{
    protected override void ProcessRecord()
    {
        foreach (var file in ResolveModelPaths())
            Try(() => WriteObject(ModelInspector.Summarize(file)), file);
    }
}
