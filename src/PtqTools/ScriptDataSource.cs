using System.Management.Automation;
using System.Runtime.CompilerServices;
using PtqTools.Core.Model;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;

namespace PtqTools;

/// <summary>
/// The samples of a Script data set (New-PtqDataSet -ScriptBlock). The description holds the script's text (plain
/// data, it survives serialization); the live script block, with the scope it was written in, stays attached to the
/// description object it came with. Running it: a nested pipeline in the current runspace, on the pipeline thread,
/// whose output is taken one object at a time and pushed into the calibration as it is written, so the samples are
/// never collected. -MaxSamples stops the script once enough samples came (an endless generator is fine), and
/// Ctrl+C stops it as well as the model run.
/// </summary>
internal static class ScriptDataSources
{
    static readonly ConditionalWeakTable<PtqDataSet, ScriptBlock> Live = new();

    public static void Attach(PtqDataSet data, ScriptBlock script) => Live.AddOrUpdate(data, script);

    /// <summary>The live script block, or one made from the recorded text (a deserialized description).</summary>
    public static ScriptBlock Get(PtqDataSet data) =>
        Live.TryGetValue(data, out var script) ? script
        : data.ScriptText is { } text ? ScriptBlock.Create(text)
        : throw new PtqException("InvalidDataSet", PtqErrorKind.InvalidArgument, "The script data set has no script.", data);

    /// <summary>Runs the script and pushes every sample it yields into <paramref name="add"/>; returns the number
    /// of samples taken. Errors and warnings the script writes are passed on to <paramref name="cmdlet"/>.</summary>
    public static int Run(PSCmdlet cmdlet, PtqDataSet data, Action<Sample> add, Action<PtqException>? onInvalid, CancellationToken cancel)
    {
        var script = Get(data);
        using var ps = PowerShell.Create(RunspaceMode.CurrentRunspace);
        ps.AddScript("param($__ptqScript) & $__ptqScript", useLocalScope: true).AddArgument(script);
        using var output = new PSDataCollection<PSObject>();
        int index = 0;
        Exception? failure = null;
        bool enough = false;
        output.DataAdded += (_, _) =>
        {
            foreach (var item in output.ReadAll())
            {
                if (failure is not null || enough) return;
                try
                {
                    cancel.ThrowIfCancellationRequested();
                    Sample sample;
                    try
                    {
                        sample = DataSetReader.ScriptSample(data, index, ToSample(item, index));
                    }
                    catch (PtqException ex) when (onInvalid is not null)
                    {
                        index++;
                        onInvalid(ex);
                        continue;
                    }
                    index++;
                    add(sample);
                    if (data.Count > 0 && index >= data.Count) enough = true;
                }
                catch (Exception ex)
                {
                    failure = ex;
                }
                // Stops the script at its next statement (it may be an endless generator).
                if (failure is not null || enough) ps.BeginStop(null, null);
            }
        };
        ps.Streams.Error.DataAdded += (_, e) => cmdlet.WriteError(ps.Streams.Error[e.Index]);
        ps.Streams.Warning.DataAdded += (_, e) => cmdlet.WriteWarning(ps.Streams.Warning[e.Index].Message);
        using var registration = cancel.Register(() => ps.BeginStop(null, null));
        try
        {
            ps.Invoke(null, output);
        }
        catch (Exception ex) when (failure is not null || enough || cancel.IsCancellationRequested)
        {
            // The stop asked for above (or Ctrl+C), seen from the script's side.
            _ = ex;
        }
        catch (RuntimeException ex)
        {
            throw new PtqException("ScriptDataSourceFailed", PtqErrorKind.InvalidData, $"The data set's script failed after {index} samples: {ex.Message}", data.ScriptText, ex);
        }
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        cancel.ThrowIfCancellationRequested();
        return index;
    }

    static float[] ToSample(PSObject item, int index)
    {
        try
        {
            return LanguagePrimitives.ConvertTo<float[]>(item.BaseObject);
        }
        catch (PSInvalidCastException ex)
        {
            throw new PtqException("SampleNotNumeric", PtqErrorKind.InvalidData, $"Sample {index} the script yielded is not a list of numbers: {ex.Message}", $"script[{index}]", ex);
        }
    }
}
