using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Data;

namespace PtqTools.Core.Runtime;

/// <summary>One ONNX Runtime session fed with data set samples (one float input, or whole input tensors of any type;
/// a sample of <see cref="Sample.BatchCount"/> > 1 is a batch that <see cref="SampleBatcher"/> combined).</summary>
public sealed class OrtRunner : IDisposable
{
    readonly InferenceSession _session;
    readonly RunOptions _runOptions = new();
    readonly string _source;
    readonly (string Name, NodeMetadata Meta)[] _inputs;

    /// <summary>A sample of one float array feeds a model with one float input.</summary>
    void RequireSingleFloatInput()
    {
        if (_inputs.Length != 1)
            throw new PtqException("MultipleInputsNotSupported", PtqErrorKind.NotSupported,
                $"'{_source}' has {_inputs.Length} inputs ({string.Join(", ", _inputs.Select(i => i.Name))}); feed it samples of whole inputs (a TensorProto data set: folders of input_K.pb).", _source);
        if (_inputs[0].Meta.ElementType != typeof(float))
            throw new PtqException("InputTypeNotSupported", PtqErrorKind.NotSupported,
                $"Input '{_inputs[0].Name}' of '{_source}' is {_inputs[0].Meta.ElementType.Name}; feed it samples of whole inputs (a TensorProto data set: folders of input_K.pb).", _inputs[0].Name);
    }

    /// <param name="externalDataFolder">Where the model's external-data files are (a model above 2 GB, whose tensors
    /// stay in their side files); weights are then not pre-packed, which would hold a second copy of them.</param>
    public OrtRunner(byte[] model, string source, int threads = 1, IReadOnlyList<string>? outputs = null,
        GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL, string? externalDataFolder = null)
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
        if (externalDataFolder is not null)
        {
            options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", externalDataFolder);
            options.AddSessionConfigEntry("session.disable_prepacking", "1");
        }
        try
        {
            _session = new InferenceSession(model, options);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("ModelRejectedByRuntime", PtqErrorKind.InvalidData, $"ONNX Runtime cannot load '{source}': {ex.Message}", source, ex);
        }
        var inputs = _session.InputMetadata;
        _inputs = inputs.Select(kv => (kv.Key, kv.Value)).ToArray();
        // A model may take no input at all (everything constant): it then has no first input to describe.
        if (_inputs.Length > 0)
        {
            InputName = _inputs[0].Name;
            InputShape = _inputs[0].Meta.Dimensions;
        }
        else (InputName, InputShape) = ("", Array.Empty<int>());
        OutputNames = outputs?.ToArray() ?? _session.OutputNames.ToArray();
    }

    /// <summary>A session on a model file, which is validated first (as every model is before ONNX Runtime sees it):
    /// a damaged or hostile file ends in a PtqException, never inside native code. External data is read by the
    /// engine, inside the model's folder only, and handed to ONNX Runtime inline.</summary>
    public static OrtRunner FromFile(string path, int threads = 1)
    {
        var bytes = Onnx.OnnxModelIO.ReadFile(path);
        var model = Onnx.OnnxModelIO.Parse(bytes, path);
        return new(model.CalculateSize() == bytes.Length && !Onnx.ExternalData.HasExternal(model) ? bytes : Google.Protobuf.MessageExtensions.ToByteArray(model), path, threads);
    }

    public string InputName { get; }
    public int[] InputShape { get; }
    public string[] OutputNames { get; }

    /// <summary>The model's attention mask and which of the outputs this session returns are per token
    /// (<see cref="TokenMask"/>, from the session's declared inputs and outputs); null when it has none.</summary>
    public TokenMask? TokenMask => _tokenMask.Value;

    Lazy<TokenMask?> _tokenMask => _mask ??= new(() =>
    {
        static TokenMask.Tensor Of(string name, NodeMetadata m)
        {
            bool integer = m.IsTensor && m.ElementDataType is Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64
                or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int32 or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int16
                or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int8 or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt8
                or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt16 or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt32
                or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt64 or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Bool;
            var dims = m.IsTensor && m.Dimensions is { } d
                ? d.Select((v, k) => v >= 0 ? v.ToString(System.Globalization.CultureInfo.InvariantCulture)
                    : m.SymbolicDimensions is { } s && k < s.Length && s[k].Length > 0 ? s[k] : "?").ToArray()
                : Array.Empty<string>();
            return new(name, integer, dims);
        }
        var outputs = _session.OutputMetadata;
        return TokenMask.Find(_inputs.Select(i => Of(i.Name, i.Meta)).ToList(),
            OutputNames.Select(o => outputs.TryGetValue(o, out var m) ? Of(o, m) : new TokenMask.Tensor(o, false, Array.Empty<string>())).ToList());
    });
    Lazy<TokenMask?>? _mask;

    /// <summary>Refuses a sample whose shape does not fit the model input (batch dimension first).</summary>
    public void CheckShape(int[] sampleShape, string sampleId, int batch = 1)
    {
        if (batch > 1 && InputShape.Length > 0 && InputShape[0] >= 0 && InputShape[0] != batch)
            throw new PtqException("BatchSizeNotSupported", PtqErrorKind.InvalidArgument,
                $"Input '{InputName}' of '{Path.GetFileName(_source)}' has the fixed batch dimension {InputShape[0]}; it cannot take a batch of {batch} samples. Use -BatchSize 1 (the default) with this model.", batch);
        bool fits = InputShape.Length == sampleShape.Length + 1 && (InputShape[0] < 0 || InputShape[0] == batch);
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
        using var results = RunValues(sample, cancel);
        var arrays = new float[results.Count][];
        for (int i = 0; i < results.Count; i++) arrays[i] = results[i].GetTensorDataAsSpan<float>().ToArray();
        return arrays;
    }

    /// <summary>Runs one sample (or a batch of them, <see cref="Sample.BatchCount"/>) and returns ONNX Runtime's
    /// output values, each checked to be float32, for the caller to read in place and dispose.</summary>
    public IDisposableReadOnlyCollection<OrtValue> RunValues(Sample sample, CancellationToken cancel = default)
    {
        var (names, values) = Feed(sample);
        using var inputs = new DisposeAll(values);
        using var registration = cancel.Register(() => _runOptions.Terminate = true);
        IDisposableReadOnlyCollection<OrtValue>? results = null;
        try
        {
            results = _session.Run(_runOptions, names, values, OutputNames);
            for (int i = 0; i < results.Count; i++)
            {
                var info = results[i].GetTensorTypeAndShape();
                if (info.ElementDataType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                    throw new PtqException("OutputTypeNotSupported", PtqErrorKind.NotSupported,
                        $"Output '{OutputNames[i]}' of '{Path.GetFileName(_source)}' is {info.ElementDataType}, not float32.", OutputNames[i]);
            }
            var done = results;
            results = null;
            return done;
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException ex) when (!cancel.IsCancellationRequested)
        {
            throw new PtqException("InferenceFailed", PtqErrorKind.InvalidData, $"ONNX Runtime failed on sample '{sample.Id}' of '{Path.GetFileName(_source)}': {ex.Message}", sample.Id, ex);
        }
        finally
        {
            results?.Dispose();
        }
    }

    sealed class DisposeAll(OrtValue[] values) : IDisposable
    {
        public void Dispose() { foreach (var v in values) v.Dispose(); }
    }

    /// <summary>The named input values of one sample, checked against the model's inputs.</summary>
    (string[] Names, OrtValue[] Values) Feed(Sample sample)
    {
        if (sample.Inputs is null)
        {
            RequireSingleFloatInput();
            CheckShape(sample.Shape, sample.Id, sample.BatchCount);
            var shape = new long[] { sample.BatchCount }.Concat(sample.Shape.Select(d => (long)d)).ToArray();
            return (new[] { InputName }, new[] { OrtValue.CreateTensorValueFromMemory(sample.Data, shape) });
        }
        // Tensors named like every model input feed them by name (text samples carry more inputs than some models
        // take); otherwise the K-th tensor feeds the K-th input.
        var byName = sample.Inputs.Where(t => t.Name.Length > 0).GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var ordered = _inputs.All(i => byName.ContainsKey(i.Name)) ? _inputs.Select(i => byName[i.Name]).ToList() : sample.Inputs;
        if (ordered.Count != _inputs.Length)
            throw new PtqException("DataInputCountMismatch", PtqErrorKind.InvalidData,
                $"Sample '{sample.Id}' has {sample.Inputs.Count} input tensor(s), but '{Path.GetFileName(_source)}' takes {_inputs.Length} ({string.Join(", ", _inputs.Select(i => i.Name))}).", sample.Id);
        var values = new OrtValue[_inputs.Length];
        try
        {
            for (int k = 0; k < _inputs.Length; k++)
            {
                var (name, meta) = _inputs[k];
                var t = ordered[k];
                if (meta.IsTensor && (int)meta.ElementDataType != t.DataType)
                    throw new PtqException("DataTypeMismatch", PtqErrorKind.InvalidData,
                        $"Input {k} of sample '{sample.Id}' is {Onnx.OnnxDataTypes.Name(t.DataType)}, but input '{name}' of '{Path.GetFileName(_source)}' takes {meta.ElementDataType}.", sample.Id);
                var dims = meta.Dimensions;
                if (sample.BatchCount > 1 && dims.Length > 0 && dims[0] >= 0 && t.Dims.Count > 0 && dims[0] != t.Dims[0])
                    throw new PtqException("BatchSizeNotSupported", PtqErrorKind.InvalidArgument,
                        $"Input '{name}' of '{Path.GetFileName(_source)}' has the fixed batch dimension {dims[0]}; it cannot take a batch of {sample.BatchCount} samples. Use -BatchSize 1 (the default) with this model.", sample.BatchCount);
                bool fits = dims.Length == t.Dims.Count;
                for (int d = 0; fits && d < dims.Length; d++) fits = dims[d] < 0 || dims[d] == t.Dims[d];
                if (!fits)
                    throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData,
                        $"Input {k} of sample '{sample.Id}' has shape [{string.Join(",", t.Dims)}], but input '{name}' of '{Path.GetFileName(_source)}' expects [{string.Join(",", dims.Select(d => d < 0 ? "?" : d.ToString()))}].", sample.Id);
                values[k] = OrtTensors.FromTensorProto(t);
            }
        }
        catch
        {
            foreach (var v in values) v?.Dispose();
            throw;
        }
        return (_inputs.Select(i => i.Name).ToArray(), values);
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
