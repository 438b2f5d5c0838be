using System.Management.Automation;

namespace PtqTools;

/// <summary>
/// Base of the cmdlets that read model files: -Path (wildcards; strings piped in) and -LiteralPath (taken as typed;
/// the path properties of piped objects: PSPath of Get-Item/Get-ChildItem and of Get-OnnxModel's summary, FullName,
/// and OutputPath of Invoke-Quantization's result), resolved to existing file-system paths. A path held in an
/// object's property names a real file, never a pattern, so it binds literally: -Path does not bind by property
/// name (a summary's Path would otherwise win over its PSPath, and '[v1]' in its name would be read as a wildcard).
/// </summary>
public abstract class ModelPathCmdlet : PtqCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path", ValueFromPipeline = true)]
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
