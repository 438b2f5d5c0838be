using System.Management.Automation;
using PtqTools.Core.Quantization;
using PtqTools.Core;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Commands;

[Cmdlet(VerbsCommon.Get, "ModelLayer", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Get-ModelLayer.md")]
[OutputType(typeof(ModelLayer))]
public sealed class GetModelLayerCommand : ModelPathCmdlet
{
    /// <summary>Only layers whose name matches one of these wildcard patterns.</summary>
    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(LayerNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Only layers of these op types.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(OpTypeCompleter))]
    public string[]? OpType { get; set; }

    /// <summary>Only layers that can be quantized.</summary>
    [Parameter]
    public SwitchParameter Quantizable { get; set; }

    protected override void ProcessRecord()
    {
        var patterns = Name?.Select(n => new WildcardPattern(n, WildcardOptions.IgnoreCase)).ToArray();
        foreach (var file in ResolveModelPaths())
        {
            Try(() =>
            {
                WriteVerbose($"Preparing '{file}' (BatchNormalization folding, opset upgrade); cached in {ModelPreparer.CacheFolder}.");
                var prepared = ModelPreparer.Prepare(file);
                var matched = new bool[patterns?.Length ?? 0];
                foreach (var layer in ModelInspector.Layers(prepared))
                {
                    if (patterns is not null)
                    {
                        bool any = false;
                        for (int i = 0; i < patterns.Length; i++)
                            if (patterns[i].IsMatch(layer.Name)) any = matched[i] = true;
                        if (!any) continue;
                    }
                    if (OpType is not null && !OpType.Contains(layer.OpType, StringComparer.OrdinalIgnoreCase)) continue;
                    if (Quantizable && !layer.Quantizable) continue;
                    WriteObject(layer);
                }
                // A name without wildcards that names no layer is an error, as Get-Item's missing path; a pattern
                // that matches nothing is not.
                for (int i = 0; i < matched.Length; i++)
                    if (!matched[i] && !WildcardPattern.ContainsWildcardCharacters(Name![i]))
                        WriteError(ToErrorRecord(new PtqException("LayerNotFound", PtqErrorKind.ObjectNotFound,
                            $"Cannot find layer '{Name[i]}' in '{file}'; Get-ModelLayer without -Name lists its layers.", Name[i])));
            }, file);
        }
    }
}

/// <summary>Completes op type names the quantizer has handlers for.</summary>
public sealed class OpTypeCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters) =>
        Core.Quantization.OpHandlers.OpTypes.Concat(Core.Quantization.OpHandlers.FoldedActivations)
            .Where(t => t.StartsWith(wordToComplete.Trim('\'', '"'), StringComparison.OrdinalIgnoreCase))
            .OrderBy(t => t, StringComparer.Ordinal)
            .Select(t => new CompletionResult(t, t, CompletionResultType.ParameterValue, t));
}
