using PtqTools.Core.Onnx;
using PtqTools.Core.Data;

namespace PtqTools.Core.Engine;

/// <summary>Running comparison of the engine's outputs with another runtime's (ONNX Runtime) on the same samples,
/// in steps of the output's quantization scale (the scale of the DequantizeLinear that produces it).</summary>
public sealed class EngineParity
{
    readonly float[] _steps;
    readonly IntegerEngine _engine;

    public EngineParity(IntegerEngine engine)
    {
        _engine = engine;
        _steps = engine.Outputs.Select(engine.OutputStep).ToArray();
    }

    public int Samples { get; private set; }
    public long Elements { get; private set; }
    public long Exact { get; private set; }
    public long WithinOne { get; private set; }
    public double MaxSteps { get; private set; }
    public double WithinOneStep => Elements == 0 ? 0 : (double)WithinOne / Elements;
    public double ExactShare => Elements == 0 ? 0 : (double)Exact / Elements;

    public static Dictionary<string, EngineTensor> Feed(IntegerEngine engine, Sample sample)
    {
        // A sample of whole input tensors (TensorProto and text data sets) feeds them as they are: by name when they
        // name every model input (text samples carry more inputs than some models take), else by position.
        if (sample.Inputs is { } inputs)
        {
            var byName = inputs.Where(t => t.Name.Length > 0).GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
            if (engine.Inputs.All(byName.ContainsKey))
                return engine.Inputs.ToDictionary(n => n, n => EngineTensor.FromProto(byName[n]), StringComparer.Ordinal);
            if (inputs.Count != engine.Inputs.Count)
                throw new PtqException("DataInputCountMismatch", PtqErrorKind.InvalidData,
                    $"Sample '{sample.Id}' has {inputs.Count} input tensor(s), but the model takes {engine.Inputs.Count}.", sample.Id);
            return engine.Inputs.Select((name, k) => (name, EngineTensor.FromProto(inputs[k]))).ToDictionary(p => p.name, p => p.Item2, StringComparer.Ordinal);
        }
        if (engine.Inputs.Count != 1)
            throw new PtqException("EngineInputCount", PtqErrorKind.NotSupported,
                $"The model has {engine.Inputs.Count} inputs; sample '{sample.Id}' is one float array. Feed it whole input tensors (a TensorProto or text data set).", sample.Id);
        var dims = new long[] { 1 }.Concat(sample.Shape.Select(d => (long)d)).ToArray();
        if (TensorData.ElementCount(dims) != sample.Data.Length)
            throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData,
                $"Sample '{sample.Id}' has {sample.Data.Length} values, which do not fill its shape [{string.Join(",", sample.Shape)}].", sample.Id);
        return new() { [engine.Inputs[0]] = EngineTensor.Float(sample.Data, dims) };
    }

    public void Add(float[][] reference, IReadOnlyDictionary<string, EngineTensor> engine)
    {
        for (int o = 0; o < _engine.Outputs.Count; o++)
        {
            var mine = engine[_engine.Outputs[o]].ToFloats();
            var theirs = reference[o];
            if (mine.Length != theirs.Length)
                throw new PtqException("EngineOutputShape", PtqErrorKind.InvalidData, $"Output '{_engine.Outputs[o]}' has {mine.Length} values on the engine and {theirs.Length} on the reference.", _engine.Outputs[o]);
            float step = _steps[o] > 0 ? _steps[o] : 1f;
            for (int i = 0; i < mine.Length; i++)
            {
                double d = Math.Abs(mine[i] - (double)theirs[i]) / step;
                Elements++;
                if (d < 1e-3) Exact++;
                if (d <= 1 + 1e-3) WithinOne++;
                MaxSteps = Math.Max(MaxSteps, d);
            }
        }
        Samples++;
    }

    public override string ToString() =>
        $"{Samples} samples, {Elements} elements: {ExactShare:P3} identical, {WithinOneStep:P3} within 1 step, max {MaxSteps:F2} steps";
}
