using System.Management.Automation;
using PtqTools.Core.Quantization;

namespace PtqTools;

/// <summary>
/// Base of the cmdlets that take many source models with quantization options (Update-QuantizedModel,
/// Get-QuantizationStatus): -Path (wildcards) and -LiteralPath (FullName from Get-ChildItem), where a folder stands
/// for the *.onnx files in it. Sources are collected over the pipeline, without duplicates, in input order.
/// </summary>
public abstract class SourceModelsCmdlet : QuantizationOptionsCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path", ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    readonly List<string> _sources = new();
    readonly HashSet<string> _seen = new(StringComparer.Ordinal);

    /// <summary>The source models collected so far.</summary>
    protected IReadOnlyList<string> Sources => _sources;

    /// <summary>A folder whose *.int8.onnx and *.int4.onnx files are outputs, not sources (the output folder).</summary>
    protected virtual string? OutputFolderForSkip => null;

    protected override void ProcessRecord()
    {
        bool literal = ParameterSetName == "LiteralPath";
        foreach (var path in ResolveExisting(literal ? LiteralPath : Path, literal))
        {
            if (!Directory.Exists(path))
            {
                Add(path);
                continue;
            }
            bool outputs = OutputFolderForSkip is { } folder && Core.PathNames.Same(System.IO.Path.GetFullPath(folder).TrimEnd('/', '\\'),
                System.IO.Path.GetFullPath(path).TrimEnd('/', '\\'));
            foreach (var file in Directory.EnumerateFiles(path, "*.onnx").Order(StringComparer.Ordinal))
            {
                if (outputs && (file.EndsWith(".int8.onnx", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".int4.onnx", StringComparison.OrdinalIgnoreCase)))
                {
                    WriteVerbose($"'{file}' is in the output folder and named as an output: not a source.");
                    continue;
                }
                Add(file);
            }
        }
    }

    void Add(string file)
    {
        var full = System.IO.Path.GetFullPath(file);
        if (_seen.Add(full)) _sources.Add(full);
    }

    /// <summary>Where the output of <paramref name="source"/> goes in <paramref name="folder"/>.</summary>
    protected static string OutputIn(string folder, QuantizationOptions options, string source) =>
        System.IO.Path.Combine(folder, QuantizationOutputs.FileName(options, source));
}
