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
        int threads, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        if (ModelPreparer.OpsetBlocked(prepared.Model) is { } blocked)
            throw new PtqException("OpsetUpgradeBlocked", PtqErrorKind.NotSupported, blocked, prepared.SourcePath);
        if (tensors.Count == 0)
            throw new PtqException("NothingToCalibrate", PtqErrorKind.InvalidArgument, "None of the selected layers can be quantized, so there is nothing to calibrate.", prepared.SourcePath);
        var names = tensors.Keys.ToArray();
        var augmented = prepared.Model.Clone();
        var existing = augmented.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var t in names.Where(n => !existing.Contains(n)))
            augmented.Graph.Output.Add(new ValueInfoProto { Name = t, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } });

        var observers = names.ToDictionary(n => n, _ => new MinMaxObserver(), StringComparer.Ordinal);
        using var runner = new OrtRunner(augmented.ToByteArray(), prepared.SourcePath, threads, names);
        using var reader = new SampleReader(data);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        foreach (var sample in reader.Read(cancel))
        {
            var outputs = runner.Run(sample, cancel);
            for (int i = 0; i < names.Length; i++)
                if (!observers[names[i]].Observe(outputs[i]))
                    throw new PtqException("ActivationNotFinite", PtqErrorKind.InvalidData,
                        $"Tensor '{names[i]}' holds NaN or infinity on sample '{sample.Id}'.", names[i]);
            done++;
            progress?.Report(new RunProgress(done, data.Count, done / Math.Max(1e-9, clock.Elapsed.TotalSeconds), sample.Id));
        }
        return names.Select(n =>
        {
            var o = observers[n];
            return new TensorStatistics
            {
                ModelPath = prepared.SourcePath, ModelSha256 = prepared.SourceSha256, Tensor = n, Layers = tensors[n].ToArray(),
                Method = "MinMax", Min = o.Min, Max = o.Max, Mean = o.Mean, Std = o.Std, SampleCount = o.Samples,
                ElementCount = o.Count, RangeMin = o.Min, RangeMax = o.Max,
            };
        }).ToList();
    }
}
