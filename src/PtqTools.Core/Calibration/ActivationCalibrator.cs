using Google.Protobuf;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Calibration;

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
        using var session = new CalibrationSession(prepared, tensors, data, threads, options, onInvalid, progress, cancel);
        using var reader = new SampleReader(data);
        foreach (var sample in reader.Read(cancel)) session.Add(sample);
        return session.Finish();
    }
}

/// <summary>
/// One calibration run that samples are pushed into (<see cref="Add"/>), so that a source the engine cannot pull
/// from (a PowerShell script on the pipeline thread) streams into it as well as a data set reader does. Samples
/// are grouped into batches of the data set's BatchSize; each batch is one ONNX Runtime run of the model with the
/// planned activation tensors exposed as extra outputs, read in place (no copy), one slice per sample.
/// </summary>
public sealed class CalibrationSession : IDisposable
{
    readonly PreparedModel _prepared;
    readonly IReadOnlyDictionary<string, List<string>> _tensors;
    readonly PtqDataSet _data;
    readonly CalibrationOptions _options;
    readonly Action<PtqException>? _onInvalid;
    readonly IProgress<RunProgress>? _progress;
    readonly CancellationToken _cancel;
    readonly string[] _names;
    readonly TensorObserver[] _observers;
    readonly TensorTap _tap;
    readonly List<Sample> _pending = new();
    readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    readonly ParallelOptions _parallel;
    int _seen;

    public CalibrationSession(PreparedModel prepared, IReadOnlyDictionary<string, List<string>> tensors, PtqDataSet data,
        int threads, CalibrationOptions options, Action<PtqException>? onInvalid, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        options.Validate();
        // Calibration runs the model at its own opset: no raise is needed for it.
        if (tensors.Count == 0)
            throw new PtqException("NothingToCalibrate", PtqErrorKind.InvalidArgument, "None of the selected layers can be quantized, so there is nothing to calibrate.", prepared.SourcePath);
        if (data.BatchSize < 1)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"BatchSize must be at least 1, not {data.BatchSize}.", data.BatchSize);
        (_prepared, _tensors, _data, _options, _onInvalid, _progress, _cancel) = (prepared, tensors, data, options, onInvalid, progress, cancel);
        _names = tensors.Keys.ToArray();
        _observers = _names.Select(_ => new TensorObserver()).ToArray();
        // Tensors inside If/Loop/Scan subgraphs are passed out through their owners (an untaken branch yields none).
        _tap = new TensorTap(prepared.Model, prepared.SourcePath, _names, threads);
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads), CancellationToken = cancel };
    }

    /// <summary>The tensors observed, in output order.</summary>
    public IReadOnlyList<string> Tensors => _names;

    /// <summary>Samples observed so far.</summary>
    public int Done { get; private set; }

    /// <summary>Samples skipped as invalid so far.</summary>
    public int Skipped { get; private set; }

    /// <summary>Takes one sample; a batch runs when it is full or the next sample cannot join it.</summary>
    public void Add(Sample sample)
    {
        _cancel.ThrowIfCancellationRequested();
        _seen++;
        if (_pending.Count > 0 && (_pending.Count >= _data.BatchSize || !SampleBatcher.Compatible(_pending[0], sample))) Flush();
        _pending.Add(sample);
        if (_pending.Count >= _data.BatchSize) Flush();
    }

    void Flush()
    {
        if (_pending.Count == 0) return;
        var batch = _pending.ToArray();
        _pending.Clear();
        RunBatch(batch);
        _progress?.Report(new RunProgress(Done + Skipped, _data.Count, (Done + Skipped) / Math.Max(1e-9, _clock.Elapsed.TotalSeconds), batch[^1].Id));
    }

    void RunBatch(Sample[] batch)
    {
        var combined = SampleBatcher.Combine(batch);
        TapValues results;
        try
        {
            results = _tap.Run(combined, _cancel);
        }
        catch (PtqException ex) when (ex.ErrorId == "DataShapeMismatch" && batch.Length > 1)
        {
            // Find the sample the model rejects: each one on its own.
            foreach (var s in batch) RunBatch(new[] { s });
            return;
        }
        catch (PtqException ex) when (_onInvalid is not null && ex.ErrorId == "DataShapeMismatch")
        {
            _onInvalid(ex);
            Skipped++;
            return;
        }
        using (results)
        {
            int n = batch.Length;
            var moments = new TensorMoments[_names.Length, n];
            var bad = new int[n];
            Array.Fill(bad, -1);
            var pers = new int[_names.Length];
            for (int t = 0; t < _names.Length; t++) pers[t] = PerSample(results[t], (int)results[t].GetTensorTypeAndShape().ElementCount, n, t);
            // The tensors are independent: the passes spread them over the run's threads, largest first, one tensor
            // at a time (each observer is only ever touched by one thread, so the result does not depend on the split).
            var order = Enumerable.Range(0, _names.Length).OrderByDescending(t => pers[t]).ToArray();
            void EachTensor(Action<int> body) =>
                Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(order, loadBalance: true), _parallel, body);
            // With -SkipInvalid, every tensor's moments per sample come first, so that a sample with a NaN or infinity
            // anywhere leaves no trace. Without it, such a sample ends the run with an error and the session is dropped,
            // so each tensor is binned right after its moments, while its values are still in cache.
            bool binAtOnce = _onInvalid is null;
            EachTensor(t =>
            {
                var values = results[t].GetTensorDataAsSpan<float>();
                for (int j = 0; j < n; j++)
                {
                    var slice = values.Slice(j * pers[t], pers[t]);
                    var m = moments[t, j] = ObserverKernels.Moments(slice);
                    if (binAtOnce && m.Finite) _observers[t].Add(slice, m);
                }
            });
            for (int t = 0; t < _names.Length; t++)
                for (int j = 0; j < n; j++)
                    if (!moments[t, j].Finite && bad[j] < 0) bad[j] = t;
            for (int j = 0; j < n; j++)
                if (bad[j] >= 0)
                {
                    var ex = new PtqException("ActivationNotFinite", PtqErrorKind.InvalidData, $"Tensor '{_names[bad[j]]}' holds NaN or infinity on sample '{batch[j].Id}'.", _onInvalid is null ? _names[bad[j]] : batch[j].Id);
                    if (_onInvalid is null) throw ex;
                    _onInvalid(ex);
                    Skipped++;
                }
            if (!binAtOnce)
                EachTensor(t =>
                {
                    var values = results[t].GetTensorDataAsSpan<float>();
                    for (int j = 0; j < n; j++)
                        if (bad[j] < 0) _observers[t].Add(values.Slice(j * pers[t], pers[t]), moments[t, j]);
                });
            Done += bad.Count(b => b < 0);
        }
    }

    /// <summary>Values per sample of a batched output: its first dimension must be the batch.</summary>
    int PerSample(Microsoft.ML.OnnxRuntime.OrtValue value, int length, int n, int t)
    {
        if (n == 1) return length;
        var shape = value.GetTensorTypeAndShape().Shape;
        if (shape.Length == 0 || shape[0] != n || length % n != 0)
            throw new PtqException("BatchSizeNotSupported", PtqErrorKind.NotSupported,
                $"Tensor '{_names[t]}' has shape [{string.Join(",", shape)}] for a batch of {n}: its first dimension is not the batch, so its values cannot be told apart per sample. Use -BatchSize 1 with this model.", _names[t]);
        return length / n;
    }

    /// <summary>Runs what is pending, then turns every observer into statistics (every method's range).</summary>
    public List<TensorStatistics> Finish()
    {
        Flush();
        _cancel.ThrowIfCancellationRequested();
        if (Done == 0)
            throw new PtqException("NoValidSamples", PtqErrorKind.InvalidData, $"None of the {_seen} samples of '{_data.Name}' could be used.", _data.Name);
        // Every method's range of every tensor (the Entropy search dominates): independent, so over the run's threads.
        var result = new TensorStatistics[_names.Length];
        try
        {
            Parallel.For(0, _names.Length, _parallel, t =>
                result[t] = _observers[t].ToStatistics(_prepared.SourcePath, _prepared.SourceSha256, _names[t], _tensors[_names[t]].ToArray(), _options));
        }
        catch (AggregateException ex) when (ex.InnerExceptions.Count == 1)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex.InnerExceptions[0]).Throw();
        }
        return result.ToList();
    }

    public void Dispose() => _tap.Dispose();
}
