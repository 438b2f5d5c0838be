using System.Management.Automation;

namespace PtqTools;

/// <summary>
/// Base of the cmdlets that read model files: -Path (wildcards, by value and by property name) and -LiteralPath
/// (also FullName from Get-ChildItem, and OutputPath from Invoke-Quantization's result), resolved to existing
/// file-system paths.
/// </summary>
public abstract class ModelPathCmdlet : PtqCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path", ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName", "OutputPath")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>The files this record names; unresolvable paths have been reported as errors.</summary>
    protected List<string> ResolveModelPaths()
    {
        bool literal = ParameterSetName == "LiteralPath";
        return ResolveExisting(literal ? LiteralPath : Path, literal);
    }
}
