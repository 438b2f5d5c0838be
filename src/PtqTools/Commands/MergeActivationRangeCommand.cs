using System.Management.Automation;
using PtqTools.Core.Calibration;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

/// <summary>Combines statistics of shards (parts of a data set calibrated apart) into those of one run over all of them.</summary>
[Cmdlet(VerbsData.Merge, "ActivationRange", HelpUri = HelpLinks.Docs + "Merge-ActivationRange.md")]
[OutputType(typeof(TensorStatistics))]
public sealed class MergeActivationRangeCommand : PtqCmdlet
{
    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>The method whose range becomes RangeMin/RangeMax (default: the one the shards were measured with).</summary>
    [Parameter]
    [ValidateSet("MinMax", "MovingAverageMinMax", "Percentile", "Entropy", "Mse", "Auto")]
    public string? Method { get; set; }

    [Parameter]
    public SwitchParameter Symmetric { get; set; }

    [Parameter]
    [ValidateRange(50.0001, 100.0)]
    public double Percentile { get; set; } = 99.99;

    readonly List<TensorStatistics> _stats = new();

    protected override void ProcessRecord()
    {
        foreach (var o in InputObject)
            Try(() =>
            {
                if (!PipelineObjects.Has(o, "Tensor", "ModelSha256", "Histogram")) WriteError(PipelineObjects.Unexpected(o, "statistics from Measure-ActivationRange"));
                else _stats.Add(PipelineObjects.To<TensorStatistics>(o));
            }, o);
    }

    protected override void EndProcessing()
    {
        if (_stats.Count == 0) return;
        Try(() =>
        {
            CalibrationOptions? options = null;
            var bound = MyInvocation.BoundParameters;
            if (Method is not null || bound.ContainsKey(nameof(Symmetric)) || bound.ContainsKey(nameof(Percentile)))
            {
                var first = _stats[0];
                options = new CalibrationOptions(ActivationRangeStore.ParseMethod(Method ?? first.Method),
                    bound.ContainsKey(nameof(Symmetric)) ? Symmetric.IsPresent : first.Symmetric,
                    bound.ContainsKey(nameof(Percentile)) ? Percentile : first.Percentile);
            }
            var merged = ActivationRangeStore.Merge(_stats, options);
            WriteVerbose($"Merged {_stats.Count} statistics into {merged.Count} tensor(s).");
            WriteObject(merged, enumerateCollection: true);
        });
    }
}
