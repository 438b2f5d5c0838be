using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.TestModels;

/// <summary>An ONNX Runtime session at one thread, fed TensorProto inputs by name (float or int64).</summary>
public sealed class OrtModel : IDisposable
{
    readonly InferenceSession _session;
    readonly string[] _inputs, _outputs;

    public OrtModel(byte[] model, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level, IntraOpNumThreads = 1, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        _session = new InferenceSession(model, options);
        _inputs = _session.InputNames.ToArray();
        _outputs = _session.OutputNames.ToArray();
    }

    public OrtModel(ModelProto model) : this(model.ToByteArray()) { }
    public static OrtModel FromFile(string path) => new(File.ReadAllBytes(path));

    public string[] OutputNames => _outputs;

    /// <summary>Every output as floats; inputs matched by name, else by position.</summary>
    public float[][] Run(IReadOnlyList<TensorProto> inputs)
    {
        var values = new OrtValue[_inputs.Length];
        try
        {
            for (int k = 0; k < _inputs.Length; k++)
            {
                var t = inputs.FirstOrDefault(i => i.Name == _inputs[k]) ?? inputs[k];
                var shape = t.Dims.ToArray();
                values[k] = t.DataType == (int)OnnxDataType.Int64
                    ? OrtValue.CreateTensorValueFromMemory(ReadInt64(t), shape)
                    : OrtValue.CreateTensorValueFromMemory(TensorData.ReadFloats(t), shape);
            }
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, _inputs, values, _outputs);
            return results.Select(r => r.GetTensorDataAsSpan<float>().ToArray()).ToArray();
        }
        finally { foreach (var v in values) v?.Dispose(); }
    }

    public static long[] ReadInt64(TensorProto t)
    {
        if (t.Int64Data.Count > 0) return t.Int64Data.ToArray();
        var raw = t.RawData.ToByteArray();
        var v = new long[raw.Length / 8];
        Buffer.BlockCopy(raw, 0, v, 0, raw.Length);
        return v;
    }

    /// <summary>Median milliseconds of one run after warm-up.</summary>
    public double Latency(IReadOnlyList<TensorProto> inputs, int runs = 20, int warmup = 5)
    {
        for (int i = 0; i < warmup; i++) Run(inputs);
        var t = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            Run(inputs);
            t[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(t);
        return t[runs / 2];
    }

    /// <summary>Median milliseconds of each of two models, run in alternation (load changes hit both alike).</summary>
    public static (double A, double B) Latencies(OrtModel a, OrtModel b, IReadOnlyList<TensorProto> inputs, int runs)
    {
        for (int i = 0; i < 5; i++) { a.Run(inputs); b.Run(inputs); }
        // Tiny models run in microseconds: each timing covers enough runs to take about a millisecond.
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        a.Run(inputs);
        int reps = Math.Clamp((int)(1.0 / Math.Max(1e-3, System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds)), 1, 50);
        var ta = new double[runs];
        var tb = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            ta[i] = Time(a, inputs, reps);
            tb[i] = Time(b, inputs, reps);
        }
        Array.Sort(ta);
        Array.Sort(tb);
        return (ta[runs / 2], tb[runs / 2]);
    }

    /// <summary>Milliseconds per run of the session alone: inputs made once, outputs not copied.</summary>
    static double Time(OrtModel m, IReadOnlyList<TensorProto> inputs, int reps)
    {
        var values = m.Values(inputs);
        try
        {
            using var runOptions = new RunOptions();
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            for (int r = 0; r < reps; r++) { using var results = m._session.Run(runOptions, m._inputs, values, m._outputs); }
            return System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds / reps;
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    OrtValue[] Values(IReadOnlyList<TensorProto> inputs)
    {
        var values = new OrtValue[_inputs.Length];
        for (int k = 0; k < _inputs.Length; k++)
        {
            var t = inputs.FirstOrDefault(i => i.Name == _inputs[k]) ?? inputs[k];
            values[k] = t.DataType == (int)OnnxDataType.Int64
                ? OrtValue.CreateTensorValueFromMemory(ReadInt64(t), t.Dims.ToArray())
                : OrtValue.CreateTensorValueFromMemory(TensorData.ReadFloats(t), t.Dims.ToArray());
        }
        return values;
    }

    public void Dispose() => _session.Dispose();
}
