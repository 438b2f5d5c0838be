using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Data;

namespace PtqTools.Core.Evaluation;

/// <summary>One ONNX Runtime session fed with data set samples (batch 1, one float input).</summary>
public sealed class OrtRunner : IDisposable
{
    readonly InferenceSession _session;
    readonly RunOptions _runOptions = new();
    readonly string _source;

    public OrtRunner(byte[] model, string source, int threads = 1, IReadOnlyList<string>? outputs = null,
        GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        _source = source;
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = level,
            IntraOpNumThreads = Math.Max(1, threads),
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        // Threads that spin after their work keep a core busy between runs; a tool sharing the machine should not.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        try
        {
            _session = new InferenceSession(model, options);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("ModelRejectedByRuntime", PtqErrorKind.InvalidData, $"ONNX Runtime cannot load '{source}': {ex.Message}", source, ex);
        }
        var inputs = _session.InputMetadata;
        if (inputs.Count != 1)
        {
            _session.Dispose();
            throw new PtqException("MultipleInputsNotSupported", PtqErrorKind.NotSupported,
                $"'{source}' has {inputs.Count} inputs ({string.Join(", ", inputs.Keys)}); data sets feed models with one input in this version.", source);
        }
        var (name, meta) = inputs.First();
        if (meta.ElementType != typeof(float))
        {
            _session.Dispose();
            throw new PtqException("InputTypeNotSupported", PtqErrorKind.NotSupported,
                $"Input '{name}' of '{source}' is {meta.ElementType.Name}; data sets feed float32 inputs in this version.", name);
        }
        InputName = name;
        InputShape = meta.Dimensions;
        OutputNames = outputs?.ToArray() ?? _session.OutputNames.ToArray();
    }

    public static OrtRunner FromFile(string path, int threads = 1) => new(File.ReadAllBytes(path), path, threads);

    public string InputName { get; }
    public int[] InputShape { get; }
    public string[] OutputNames { get; }

    /// <summary>Refuses a sample whose shape does not fit the model input (batch dimension first).</summary>
    public void CheckShape(int[] sampleShape, string sampleId)
    {
        bool fits = InputShape.Length == sampleShape.Length + 1 && InputShape[0] is 1 or < 0;
        for (int i = 0; fits && i < sampleShape.Length; i++)
            fits = InputShape[i + 1] < 0 || InputShape[i + 1] == sampleShape[i];
        if (!fits)
            throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData,
                $"Sample '{sampleId}' has shape [{string.Join(",", sampleShape)}], but input '{InputName}' of '{Path.GetFileName(_source)}' expects [{string.Join(",", InputShape.Select(d => d < 0 ? "?" : d.ToString()))}] (batch first). Prepare the data set to the model's input size (for example -Resize).",
                sampleId);
    }

    /// <summary>Runs one sample; returns the requested outputs as flat float arrays.</summary>
    public float[][] Run(Sample sample, CancellationToken cancel = default)
    {
        CheckShape(sample.Shape, sample.Id);
        var shape = new long[] { 1 }.Concat(sample.Shape.Select(d => (long)d)).ToArray();
        using var input = OrtValue.CreateTensorValueFromMemory(sample.Data, shape);
        using var registration = cancel.Register(() => _runOptions.Terminate = true);
        try
        {
            using var results = _session.Run(_runOptions, new[] { InputName }, new[] { input }, OutputNames);
            var arrays = new float[results.Count][];
            for (int i = 0; i < results.Count; i++)
            {
                var info = results[i].GetTensorTypeAndShape();
                if (info.ElementDataType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                    throw new PtqException("OutputTypeNotSupported", PtqErrorKind.NotSupported,
                        $"Output '{OutputNames[i]}' of '{Path.GetFileName(_source)}' is {info.ElementDataType}, not float32.", OutputNames[i]);
                arrays[i] = results[i].GetTensorDataAsSpan<float>().ToArray();
            }
            return arrays;
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("InferenceFailed", PtqErrorKind.InvalidData, $"ONNX Runtime failed on sample '{sample.Id}' of '{Path.GetFileName(_source)}': {ex.Message}", sample.Id, ex);
        }
    }

    /// <summary>Runs a batch of samples laid one after the other in <paramref name="data"/>; the outputs are dropped
    /// (a timing run). The model's batch dimension must be dynamic or equal to the batch.</summary>
    public void RunBatch(float[] data, int batch, int[] sampleShape, CancellationToken cancel = default)
    {
        if (InputShape.Length != sampleShape.Length + 1 || !(InputShape[0] < 0 || InputShape[0] == batch))
            throw new PtqException("BatchSizeNotSupported", PtqErrorKind.InvalidArgument,
                $"Input '{InputName}' of '{Path.GetFileName(_source)}' has the batch dimension {(InputShape.Length > 0 ? InputShape[0].ToString() : "none")}; it cannot take a batch of {batch}.", batch);
        var shape = new long[] { batch }.Concat(sampleShape.Select(d => (long)d)).ToArray();
        using var input = OrtValue.CreateTensorValueFromMemory(data, shape);
        using var registration = cancel.Register(() => _runOptions.Terminate = true);
        try
        {
            using var results = _session.Run(_runOptions, new[] { InputName }, new[] { input }, OutputNames);
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("InferenceFailed", PtqErrorKind.InvalidData, $"ONNX Runtime failed on a batch of {batch} for '{Path.GetFileName(_source)}': {ex.Message}", _source, ex);
        }
    }

    /// <summary>Median and 90th percentile latency in milliseconds of one sample, after warm-up runs.</summary>
    public (double Median, double P90) MeasureLatency(Sample sample, int runs, int warmup, CancellationToken cancel)
    {
        for (int i = 0; i < warmup; i++) Run(sample, cancel);
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            Run(sample, cancel);
            times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return (Percentile(times, 0.5), Percentile(times, 0.9));
    }

    internal static double Percentile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    public void Dispose()
    {
        _session.Dispose();
        _runOptions.Dispose();
    }
}
