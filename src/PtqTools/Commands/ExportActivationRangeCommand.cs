using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

/// <summary>Saves statistics from Measure-ActivationRange (or Merge-/Import-ActivationRange) to a versioned JSON file.</summary>
[Cmdlet(VerbsData.Export, "ActivationRange", SupportsShouldProcess = true, HelpUri = HelpLinks.Docs + "Export-ActivationRange.md")]
[OutputType(typeof(FileInfo))]
public sealed class ExportActivationRangeCommand : PtqCmdlet
{
    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    [Parameter(Mandatory = true, Position = 0)]
    [Alias("LiteralPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>Replaces an existing file.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Writes the file to the pipeline, as Get-Item returns it.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    readonly List<TensorStatistics> _stats = new();

    // The output path is taken as typed (output paths are never patterns). Its folder is checked here, before the
    // commands earlier in the pipeline do their work.
    protected override void Begin()
    {
        try { CheckOutputFile(ResolveOutput(Path)); }
        catch (PtqException ex) { Fail(ex); }
    }

    protected override void ProcessRecord()
    {
        foreach (var o in InputObject)
            Try(() =>
            {
                if (!PipelineObjects.Has(o, "Tensor", "ModelSha256", "RangeMin", "RangeMax")) WriteError(PipelineObjects.Unexpected(o, "statistics from Measure-ActivationRange"));
                else _stats.Add(PipelineObjects.To<TensorStatistics>(o));
            }, o);
    }

    protected override void EndProcessing()
    {
        if (_stats.Count == 0) return;
        string target = ResolveOutput(Path);
        Try(() =>
        {
            if (File.Exists(target) && !Force)
                throw new PtqException("OutputExists", PtqErrorKind.ResourceExists, $"'{target}' exists; use -Force to replace it.", target);
            if (!ShouldProcess(target, $"Write the ranges of {_stats.Count} tensor(s)")) return;
            ActivationRangeStore.Save(_stats, target);
            if (PassThru) WriteObject(FileItem(target));
        }, target);
    }
}
