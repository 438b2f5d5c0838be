using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Evaluation;

/// <summary>Latency percentiles, throughput and memory of one model on ONNX Runtime or on the PtqTools integer engine.</summary>
public static class PerformanceMeter
{
    public static ModelPerformance Measure(string modelPath, PtqDataSet? data, int threads, int batchSize, int warmup, int runs,
        IProgress<RunProgress>? progress, CancellationToken cancel) =>
        Measure(modelPath, data, InferenceEngine.OnnxRuntime, threads, batchSize, warmup, runs, progress, cancel);

    /// <param name="kernels">For the PtqTools engine: how its kernels run (null: this host's default on
    /// <paramref name="threads"/> threads). This measurement's own value: nothing process-wide is changed.</param>
    public static ModelPerformance Measure(string modelPath, PtqDataSet? data, InferenceEngine engine, int threads, int batchSize, int warmup, int runs,
        IProgress<RunProgress>? progress, CancellationToken cancel, KernelContext? kernels = null)
    {
        if (runs < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"At least one timed run is needed, not {runs}.", runs);
        if (batchSize < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The batch size must be at least 1, not {batchSize}.", batchSize);
        // The peak is the kernel's high-water mark of resident memory, reset here so that it covers this measurement
        // only (Linux). Where it cannot be reset (Windows, macOS: the process's peak working set), a high-water mark
        // that rose during the measurement is this measurement's; otherwise the highest resident size sampled after
        // each run.
        bool exactPeak = ResetPeak();
        long? peakBefore = exactPeak ? null : PeakResidentBytes();
        long baseline = ResidentBytes(), sampledPeak = baseline;
        IDisposable? owner = null;
        Action<CancellationToken> runOnce;
        string source;
        string kernel = "";
        int reportedThreads = threads;
        try
        {
            if (engine == InferenceEngine.OnnxRuntime)
            {
                var runner = OrtRunner.FromFile(modelPath, threads);
                owner = runner;
                var input = Input(data, runner.InputShape.Select(d => (long)d).ToArray(), runner.InputName, cancel);
                source = input.Source;
                if (input.Sample.Inputs is { } tensors)
                {
                    // Whole input tensors (text, .pb): each repeated along its batch dimension.
                    var batched = input.Sample with { Inputs = tensors.Select(t => Repeat(t, batchSize)).ToList() };
                    runOnce = c => runner.Run(batched, c);
                }
                else
                {
                    runner.CheckShape(input.Sample.Shape, source);
                    var batch = Repeat(input.Sample.Data, batchSize);
                    runOnce = c => runner.RunBatch(batch, batchSize, input.Sample.Shape, c);
                }
            }
            else
            {
                var context = kernels ?? KernelContext.Default.WithThreads(threads);
                // The engine parses and owns the model: it holds the weights once, packed (issue 16).
                var own = IntegerEngine.Load(modelPath, EngineOptions.Default with { FallbackThreads = threads, Kernels = context });
                owner = own;
                if (own.Inputs.Count != 1)
                    throw new PtqException("EngineInputCount", PtqErrorKind.NotSupported,
                        $"'{Path.GetFileName(modelPath)}' has {own.Inputs.Count} inputs; the PtqTools engine is timed on models with one float input.", modelPath);
                var dims = own.InputShapes[own.Inputs[0]];
                if (dims.Length > 0 && dims[0] > 0 && dims[0] != batchSize)
                    throw new PtqException("BatchSizeNotSupported", PtqErrorKind.InvalidArgument,
                        $"Input '{own.Inputs[0]}' of '{Path.GetFileName(modelPath)}' has the batch dimension {dims[0]}; it cannot take a batch of {batchSize}.", batchSize);
                var input = Input(data, dims, own.Inputs[0], cancel);
                if (input.Sample.Inputs is not null)
                    throw new PtqException("EngineInputCount", PtqErrorKind.NotSupported, "The PtqTools engine is timed on a float sample, not on whole input tensors.", data?.Name);
                source = input.Source;
                var feed = new Dictionary<string, EngineTensor>
                {
                    [own.Inputs[0]] = EngineTensor.Float(Repeat(input.Sample.Data, batchSize), new long[] { batchSize }.Concat(input.Sample.Shape.Select(d => (long)d)).ToArray()),
                };
                runOnce = c => own.Run(feed, c);
                kernel = context.EffectivePath.ToString();
                reportedThreads = context.MaxThreads;
            }
            sampledPeak = Math.Max(sampledPeak, ResidentBytes());

            for (int i = 0; i < warmup; i++) runOnce(cancel);
            var times = new double[runs];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < runs; i++)
            {
                cancel.ThrowIfCancellationRequested();
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                runOnce(cancel);
                times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                sampledPeak = Math.Max(sampledPeak, ResidentBytes());
                progress?.Report(new RunProgress(i + 1, runs, (i + 1) / Math.Max(1e-9, clock.Elapsed.TotalSeconds), Path.GetFileName(modelPath)));
            }
            long? peakAfter = PeakResidentBytes();
            long peak = exactPeak && peakAfter is long hwm ? Math.Max(hwm, sampledPeak)
                : peakBefore is long before && peakAfter is long after && after > before ? Math.Max(after, sampledPeak)
                : sampledPeak;
            double total = times.Sum();
            Array.Sort(times);
            return new ModelPerformance
            {
                Model = Path.GetFullPath(modelPath),
                Engine = engine.ToString(),
                // After the runs: for NativeAvx2 the forms that ran (7-bit pairs, widened).
                KernelPath = kernel is "" ? "" : NativeKernels.Describe(Enum.Parse<KernelPath>(kernel)),
                Threads = reportedThreads,
                BatchSize = batchSize,
                WarmupRuns = warmup,
                Runs = runs,
                P50Ms = Math.Round(OrtRunner.Percentile(times, 0.5), 3),
                P90Ms = Math.Round(OrtRunner.Percentile(times, 0.9), 3),
                P99Ms = Math.Round(OrtRunner.Percentile(times, 0.99), 3),
                MeanMs = Math.Round(total / runs, 3),
                SamplesPerSecond = Math.Round(batchSize * runs * 1000.0 / total, 2),
                PeakMemoryBytes = peak,
                MemoryGrowthBytes = Math.Max(0, peak - baseline),
                PeakMemoryMethod = exactPeak ? "VmHWM" : "sampled",
                SizeBytes = new FileInfo(modelPath).Length,
                Input = source,
            };
        }
        finally
        {
            owner?.Dispose();
        }
    }

    static float[] Repeat(float[] sample, int times)
    {
        var batch = new float[sample.Length * times];
        for (int b = 0; b < times; b++) sample.CopyTo(batch, b * sample.Length);
        return batch;
    }

    /// <summary>A tensor repeated <paramref name="times"/> times along its first (batch) dimension.</summary>
    internal static TensorProto Repeat(TensorProto t, int times)
    {
        if (times == 1) return t;
        if (t.Dims.Count == 0 || t.DataType == (int)OnnxDataType.String)
            throw new PtqException("BatchSizeNotSupported", PtqErrorKind.InvalidArgument, $"Input tensor '{t.Name}' has no batch dimension to repeat; time it with -BatchSize 1.", t.Name);
        var bytes = TensorProtoFile.RawBytes(t);
        var all = new byte[bytes.Length * times];
        for (int b = 0; b < times; b++) bytes.CopyTo(all, b * bytes.Length);
        var copy = new TensorProto { Name = t.Name, DataType = t.DataType, RawData = Google.Protobuf.ByteString.CopyFrom(all) };
        copy.Dims.Add(t.Dims[0] * times);
        copy.Dims.AddRange(t.Dims.Skip(1));
        return copy;
    }

    /// <summary>The first sample of the data set, or (without one) seeded random values of the model's fixed input shape.</summary>
    static (Sample Sample, string Source) Input(PtqDataSet? data, IReadOnlyList<long> inputShape, string inputName, CancellationToken cancel)
    {
        if (data is not null)
        {
            using var reader = new SampleReader(data);
            foreach (var s in reader.Read(cancel)) return (s, $"sample '{s.Id}' of {data.Name}");
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{data.Name}' has no samples.", data.Name);
        }
        var dims = inputShape.Skip(1).Select(d => (int)d).ToArray();
        if (dims.Any(d => d < 1))
            throw new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument,
                $"Input '{inputName}' has dynamic dimensions [{string.Join(",", inputShape)}]; give -DataSet so that a real sample sets the shape.", inputName);
        var random = new Random(1);
        var values = new float[dims.Aggregate(1, (a, d) => checked(a * d))];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return (new Sample(0, "random", values, dims, -1), "random values (seed 1)");
    }

    /// <summary>Linux's per-process folder; a test points it at a missing folder to run the portable fallbacks (for
    /// its own async flow only, so that measurements running beside it read the real one).</summary>
    internal static string ProcSelf { get => ProcSelfOverride.Value ?? "/proc/self"; set => ProcSelfOverride.Value = value; }
    static readonly AsyncLocal<string?> ProcSelfOverride = new();

    /// <summary>Resets the kernel's peak resident size of this process (Linux: "5" into /proc/self/clear_refs).</summary>
    static bool ResetPeak()
    {
        try
        {
            if (!File.Exists(Path.Combine(ProcSelf, "clear_refs"))) return false;
            File.WriteAllText(Path.Combine(ProcSelf, "clear_refs"), "5");
            return PeakResidentBytes() is not null;
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>The peak resident size: VmHWM of /proc/self/status on Linux (since the last reset); elsewhere, or
    /// where /proc cannot be read, the process's peak working set (since it started); null when neither is known.</summary>
    internal static long? PeakResidentBytes()
    {
        try
        {
            if (File.Exists(Path.Combine(ProcSelf, "status")))
                foreach (var line in File.ReadLines(Path.Combine(ProcSelf, "status")))
                    if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                        return long.Parse(line[6..].Trim().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        catch (FormatException) { }
        using var p = System.Diagnostics.Process.GetCurrentProcess();
        return p.PeakWorkingSet64 > 0 ? p.PeakWorkingSet64 : null;
    }

    /// <summary>The process's resident memory (Linux /proc; the working set elsewhere).</summary>
    internal static long ResidentBytes()
    {
        try
        {
            if (File.Exists(Path.Combine(ProcSelf, "statm")))
            {
                var fields = File.ReadAllText(Path.Combine(ProcSelf, "statm")).Split(' ');
                return long.Parse(fields[1]) * Environment.SystemPageSize;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        catch (FormatException) { }
        using var p = System.Diagnostics.Process.GetCurrentProcess();
        return p.WorkingSet64;
    }
}
