using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Commands;

/// <summary>Lists the prepared-model cache: one object per entry, or with -Summary its folder, count and total size.</summary>
[Cmdlet(VerbsCommon.Get, "PtqCache", DefaultParameterSetName = "Entry", HelpUri = HelpLinks.Docs + "Get-PtqCache.md")]
[OutputType(typeof(PtqCacheEntry), ParameterSetName = new[] { "Entry" })]
[OutputType(typeof(PtqCacheSummary), ParameterSetName = new[] { "Summary" })]
public sealed class GetPtqCacheCommand : PtqCmdlet
{
    /// <summary>Source model hashes (wildcards) of the entries to list.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    public string[] Sha256 { get; set; } = Array.Empty<string>();

    /// <summary>One object: the folder, the number of entries and their total size.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Summary")]
    public SwitchParameter Summary { get; set; }

    readonly List<PtqCacheEntry> _entries = new();

    protected override void ProcessRecord()
    {
        var patterns = Sha256.Select(s => WildcardPattern.Get(s, WildcardOptions.IgnoreCase)).ToList();
        foreach (var entry in PreparedModelCache.List())
        {
            if (patterns.Count > 0 && !patterns.Any(p => p.IsMatch(entry.Sha256))) continue;
            if (_entries.Any(e => e.Path == entry.Path)) continue;
            _entries.Add(entry);
            if (!Summary) WriteObject(entry);
        }
    }

    protected override void EndProcessing()
    {
        if (Summary) WriteObject(PtqCacheSummary.Of(ModelPreparer.CacheFolder, _entries));
    }
}

/// <summary>Removes entries of the prepared-model cache: all, those older than -OlderThan, or those piped from
/// Get-PtqCache. Files a live process is writing are never removed.</summary>
[Cmdlet(VerbsCommon.Clear, "PtqCache", DefaultParameterSetName = "All", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium,
    HelpUri = HelpLinks.Docs + "Clear-PtqCache.md")]
[OutputType(typeof(PtqCacheEntry))]
public sealed class ClearPtqCacheCommand : PtqCmdlet
{
    /// <summary>Entries from Get-PtqCache.</summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = "InputObject")]
    public PtqCacheEntry[] InputObject { get; set; } = Array.Empty<PtqCacheEntry>();

    /// <summary>Removes only entries last used before this time: a DateTime, or a TimeSpan counted back from now.</summary>
    [Parameter(Position = 0)]
    [CacheAgeTransformation]
    public DateTime OlderThan { get; set; }

    /// <summary>Writes each removed entry to the pipeline.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var entries = ParameterSetName == "InputObject" ? InputObject : PreparedModelCache.List().ToArray();
        foreach (var entry in entries)
        {
            if (MyInvocation.BoundParameters.ContainsKey(nameof(OlderThan)) && entry.LastUseTime >= OlderThan) continue;
            if (entry.WriterProcessIds.Count > 0)
            {
                WriteVerbose($"Kept {entry.Sha256} ({entry.Status}): process {string.Join(", ", entry.WriterProcessIds)} is writing it.");
                continue;
            }
            if (!ShouldProcess(entry.Path, $"Remove the {entry.Status} cache entry of {entry.Sha256} ({entry.Files.Count} file(s), {entry.SizeBytes:N0} bytes)")) continue;
            Try(() =>
            {
                var freed = PreparedModelCache.Remove(entry);
                WriteVerbose($"Removed {entry.Sha256}: {freed:N0} bytes.");
                if (PassThru) WriteObject(entry);
            }, entry);
        }
    }
}

/// <summary>Turns a TimeSpan (or its text, "7.00:00:00", or a number of days) into the time that far back from now,
/// so that -OlderThan takes an age or a point in time.</summary>
internal sealed class CacheAgeTransformationAttribute : ArgumentTransformationAttribute
{
    public override object? Transform(EngineIntrinsics engineIntrinsics, object? inputData)
    {
        var value = inputData is PSObject p ? p.BaseObject : inputData;
        return value switch
        {
            TimeSpan span => DateTime.Now - span,
            int or long or double => DateTime.Now - TimeSpan.FromDays(Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture)),
            string s when !s.Contains('/') && !s.Contains('-') && TimeSpan.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var span) => DateTime.Now - span,
            _ => inputData,
        };
    }
}
