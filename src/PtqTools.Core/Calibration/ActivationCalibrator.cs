using Google.Protobuf;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Calibration;

/// <summary>Progress of a run over a data set.</summary>
public readonly record struct RunProgress(int Done, int Total, double SamplesPerSecond, string Current);

/// <summary>
/// MinMax calibration: runs the prepared float model in ONNX Runtime over the data set with the planned
/// activation tensors exposed as extra outputs, and keeps streaming statistics of each.
/// </summary>
public static class ActivationCalibrator
{
    public static List<TensorStatistics> Run(PreparedModel prepared, IReadOnlyDictionary<string, List<string>> tensors, PtqDataSet data,
        int threads, IProgress<RunProgress>? progress, CancellationToken cancel) =>
        Run(prepared, tensors, data, threads, new CalibrationOptions(), progress, cancel);

    /// <summary>One pass over the data computes every method's range (<see cref="TensorObserver"/>); the statistics
    /// carry them all, with the range of <paramref name="options"/>' method as RangeMin/RangeMax.</summary>
    public static List<TensorStatistics> Run(PreparedModel prepared, IReadOnlyDictionary<string, List<string>> tensors, PtqDataSet data,
        int threads, CalibrationOptions options, IProgress<RunProgress>? progress, CancellationToken cancel) =>
        Run(prepared, tensors, data, threads, options, null, progress, cancel);

    /// <summary>As above; with <paramref name="onInvalid"/>, a sample the model rejects (wrong shape) or whose
    /// activations hold NaN or infinity is skipped and reported to it instead of stopping the run.</summary>
    public static List<TensorStatistics> Run(PreparedModel prepared, IReadOnlyDictionary<string, List<string>> tensors, PtqDataSet data,
        int threads, CalibrationOptions options, Action<PtqException>? onInvalid, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        options.Validate();
        // Calibration runs the model at its own opset: no raise is needed for it.
        if (tensors.Count == 0)
            throw new PtqException("NothingToCalibrate", PtqErrorKind.InvalidArgument, "None of the selected layers can be quantized, so there is nothing to calibrate.", prepared.SourcePath);
        var names = tensors.Keys.ToArray();
        var augmented = prepared.Model.Clone();
        // Tensors inside If/Loop/Scan subgraphs are passed out through their owners (an untaken branch yields none).
        var outputNames = SubgraphTensors.Expose(augmented, names);

        var observers = names.ToDictionary(n => n, _ => new TensorObserver(), StringComparer.Ordinal);
        var (bytes, dataFolder) = ExternalData.ForRuntime(augmented);
        using var runner = new OrtRunner(bytes, prepared.SourcePath, threads, outputNames, externalDataFolder: dataFolder);
        bytes = Array.Empty<byte>();
        using var reader = new SampleReader(data);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        foreach (var sample in reader.Read(cancel))
        {
            float[][] outputs;
            try
            {
                outputs = runner.Run(sample, cancel);
            }
            catch (PtqException ex) when (onInvalid is not null && ex.ErrorId == "DataShapeMismatch")
            {
                onInvalid(ex);
                continue;
            }
            if (onInvalid is not null && FirstNotFinite(outputs) is int bad)
            {
                // Checked before any observer sees the sample, so that a skipped sample leaves no trace.
                onInvalid(new PtqException("ActivationNotFinite", PtqErrorKind.InvalidData, $"Tensor '{names[bad]}' holds NaN or infinity on sample '{sample.Id}'.", sample.Id));
                continue;
            }
            for (int i = 0; i < names.Length; i++)
                if (!observers[names[i]].Observe(outputs[i]))
                    throw new PtqException("ActivationNotFinite", PtqErrorKind.InvalidData,
                        $"Tensor '{names[i]}' holds NaN or infinity on sample '{sample.Id}'.", names[i]);
            done++;
            progress?.Report(new RunProgress(done, data.Count, done / Math.Max(1e-9, clock.Elapsed.TotalSeconds), sample.Id));
        }
        cancel.ThrowIfCancellationRequested();
        if (done == 0)
            throw new PtqException("NoValidSamples", PtqErrorKind.InvalidData, $"None of the {data.Count} samples of '{data.Name}' could be used.", data.Name);
        return names.Select(n => cancel.IsCancellationRequested ? throw new OperationCanceledException(cancel) : observers[n].ToStatistics(prepared.SourcePath, prepared.SourceSha256, n, tensors[n].ToArray(), options)).ToList();
    }

    static int? FirstNotFinite(float[][] outputs)
    {
        for (int i = 0; i < outputs.Length; i++)
            foreach (var v in outputs[i])
                if (!float.IsFinite(v)) return i;
        return null;
    }
}
