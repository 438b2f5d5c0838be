using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;

namespace PtqTools.Core.Evaluation;

/// <summary>Latency percentiles, throughput and memory of one model in ONNX Runtime.</summary>
public static class PerformanceMeter
{
    public static ModelPerformance Measure(string modelPath, PtqDataSet? data, int threads, int batchSize, int warmup, int runs,
        IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        if (runs < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"At least one timed run is needed, not {runs}.", runs);
        if (batchSize < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The batch size must be at least 1, not {batchSize}.", batchSize);
        long baseline = ResidentBytes(), peak = baseline;
        using var runner = OrtRunner.FromFile(modelPath, threads);
        peak = Math.Max(peak, ResidentBytes());
        var (sample, shape, source) = Input(runner, data, cancel);
        runner.CheckShape(shape, source);
        var batch = new float[sample.Length * batchSize];
        for (int b = 0; b < batchSize; b++) sample.CopyTo(batch, b * sample.Length);

        for (int i = 0; i < warmup; i++) runner.RunBatch(batch, batchSize, shape, cancel);
        var times = new double[runs];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < runs; i++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            runner.RunBatch(batch, batchSize, shape, cancel);
            times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            peak = Math.Max(peak, ResidentBytes());
            progress?.Report(new RunProgress(i + 1, runs, (i + 1) / Math.Max(1e-9, clock.Elapsed.TotalSeconds), Path.GetFileName(modelPath)));
        }
        double total = times.Sum();
        Array.Sort(times);
        return new ModelPerformance
        {
            Model = Path.GetFullPath(modelPath),
            Engine = "OnnxRuntime",
            Threads = threads,
            BatchSize = batchSize,
            WarmupRuns = warmup,
            Runs = runs,
            P50Ms = Math.Round(OrtRunner.Percentile(times, 0.5), 3),
            P90Ms = Math.Round(OrtRunner.Percentile(times, 0.9), 3),
            P99Ms = Math.Round(OrtRunner.Percentile(times, 0.99), 3),
            MeanMs = Math.Round(total / runs, 3),
            SamplesPerSecond = Math.Round(batchSize * runs * 1000.0 / total, 2),
            PeakMemoryBytes = Math.Max(0, peak - baseline),
            SizeBytes = new FileInfo(modelPath).Length,
            Input = source,
        };
    }

    /// <summary>The first sample of the data set, or (without one) seeded random values of the model's fixed input shape.</summary>
    static (float[] Data, int[] Shape, string Source) Input(OrtRunner runner, PtqDataSet? data, CancellationToken cancel)
    {
        if (data is not null)
        {
            using var reader = new SampleReader(data);
            foreach (var s in reader.Read(cancel)) return (s.Data, s.Shape, $"sample '{s.Id}' of {data.Name}");
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{data.Name}' has no samples.", data.Name);
        }
        var dims = runner.InputShape.Skip(1).ToArray();
        if (dims.Any(d => d < 1))
            throw new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument,
                $"Input '{runner.InputName}' has dynamic dimensions [{string.Join(",", runner.InputShape)}]; give -DataSet so that a real sample sets the shape.", runner.InputName);
        var random = new Random(1);
        var values = new float[dims.Aggregate(1, (a, d) => checked(a * d))];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return (values, dims, "random values (seed 1)");
    }

    /// <summary>The process's resident memory (Linux /proc; the working set elsewhere).</summary>
    internal static long ResidentBytes()
    {
        try
        {
            if (File.Exists("/proc/self/statm"))
            {
                var fields = File.ReadAllText("/proc/self/statm").Split(' ');
                return long.Parse(fields[1]) * Environment.SystemPageSize;
            }
        }
        catch (IOException) { }
        using var p = System.Diagnostics.Process.GetCurrentProcess();
        return p.WorkingSet64;
    }
}
