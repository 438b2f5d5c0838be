using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Commands;

[Cmdlet(VerbsCommon.Get, "OnnxModel", DefaultParameterSetName = "Path")]
[OutputType(typeof(ModelSummary))]
public sealed class GetOnnxModelCommand : PtqCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path", ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        bool literal = ParameterSetName == "LiteralPath";
        foreach (var file in ResolveExisting(literal ? LiteralPath : Path, literal))
            Try(() => WriteObject(ModelInspector.Summarize(file)), file);
    }
}
