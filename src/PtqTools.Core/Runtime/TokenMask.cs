using PtqTools.Core.Data;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Runtime;

/// <summary>
/// Which positions of a model's per-token outputs count when two models' outputs are compared: the one place that
/// decides it, for the fidelity guard, Compare-Model / Test-QuantizedModel (ModelComparer) and the
/// embedding metrics. A model has a token mask when one of its inputs is an attention mask: its name contains "mask",
/// it holds integers or booleans, and it has rank 2 ([batch, sequence]). An output is per token when its leading two
/// dimensions are the mask's (the same fixed size, or the same symbolic name: [batch, sequence, ...]). On such an
/// output only the tokens whose mask is non-zero are compared: a padded token's output means nothing (the model was
/// told to ignore it), so it could only drag a figure down or flatter it. Outputs that are not per token, and models
/// without such an input, are compared whole.
/// </summary>
public sealed class TokenMask
{
    /// <summary>What is known of a model input or output: name, whether it holds integers or booleans, and its dims
    /// (a number, a symbolic name, or "?" when unknown).</summary>
    public readonly record struct Tensor(string Name, bool Integer, string[] Dims);

    TokenMask(string input, int inputIndex, int inputCount, bool[] perToken, string[] outputs)
    {
        Input = input;
        InputIndex = inputIndex;
        _inputCount = inputCount;
        PerToken = perToken;
        _outputs = outputs;
    }

    readonly int _inputCount;
    readonly string[] _outputs;

    /// <summary>The mask input's name.</summary>
    public string Input { get; }

    /// <summary>Its position among the model's inputs (a sample of unnamed tensors feeds inputs by position).</summary>
    public int InputIndex { get; }

    /// <summary>Per output (in the order given to <see cref="Find"/>): whether it is per token.</summary>
    public bool[] PerToken { get; }

    /// <summary>The per-token outputs' names.</summary>
    public IEnumerable<string> MaskedOutputs => _outputs.Where((_, k) => PerToken[k]);

    /// <summary>What the figures say: which positions were left out, and of which outputs.</summary>
    public string Text => $"padding excluded: tokens whose '{Input}' is 0 are not compared in {string.Join(", ", MaskedOutputs)}";

    /// <summary>The model's token mask, or null when it has none (no such input, or no per-token output).</summary>
    public static TokenMask? Find(IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> outputs)
    {
        for (int i = 0; i < inputs.Count; i++)
        {
            var m = inputs[i];
            if (!m.Integer || m.Dims.Length != 2 || !m.Name.Contains("mask", StringComparison.OrdinalIgnoreCase)) continue;
            var perToken = outputs.Select(o => o.Dims.Length >= 2 && Same(o.Dims[0], m.Dims[0]) && Same(o.Dims[1], m.Dims[1])).ToArray();
            if (perToken.Any(p => p)) return new TokenMask(m.Name, i, inputs.Count, perToken, outputs.Select(o => o.Name).ToArray());
        }
        return null;
    }

    /// <summary>A model's token mask from its graph's declared inputs (initializers listed as inputs left out) and outputs.</summary>
    public static TokenMask? Find(global::Onnx.ModelProto model)
    {
        var g = model.Graph;
        var initializers = g.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        return Find(g.Input.Where(i => !initializers.Contains(i.Name)).Select(Of).ToList(), g.Output.Select(Of).ToList());
    }

    static Tensor Of(global::Onnx.ValueInfoProto vi)
    {
        var info = Onnx.GraphView.Info(vi);
        int type = vi.Type?.TensorType?.ElemType ?? 0;
        return new Tensor(vi.Name, IsInteger(type), info.RankKnown ? info.Shape.ToArray() : Array.Empty<string>());
    }

    /// <summary>Integer and boolean ONNX element types (the types a mask is given in).</summary>
    public static bool IsInteger(int onnxType) => onnxType is (int)OnnxDataType.Int64 or (int)OnnxDataType.Int32 or (int)OnnxDataType.Int16
        or (int)OnnxDataType.Int8 or (int)OnnxDataType.UInt8 or (int)OnnxDataType.UInt16 or (int)OnnxDataType.UInt32 or (int)OnnxDataType.UInt64
        or (int)OnnxDataType.Bool;

    /// <summary>Two dims are the same when both are the same fixed size or the same symbolic name ("?" never matches).</summary>
    static bool Same(string a, string b) => a != "?" && a.Length > 0 && a == b;

    /// <summary>The mask of one sample (flattened; batch first), or null when the sample does not carry it (a single
    /// float input, or fewer tensors than the model's inputs).</summary>
    public long[]? Read(Sample sample)
    {
        if (sample.Inputs is null) return null;
        var t = sample.Inputs.FirstOrDefault(x => x.Name == Input)
            ?? (sample.Inputs.Count == _inputCount && sample.Inputs.All(x => x.Name.Length == 0 || x.Name != Input) ? sample.Inputs[InputIndex] : null);
        if (t is null || !IsInteger(t.DataType)) return null;
        return NonZero(t);
    }

    /// <summary>1 where an integer or boolean tensor is non-zero, else 0 (only that matters of a mask).</summary>
    static long[]? NonZero(global::Onnx.TensorProto t)
    {
        if (t.DataLocation == global::Onnx.TensorProto.Types.DataLocation.External) return null;
        long n = TensorData.ElementCount(t.Dims);
        var result = new long[n];
        if (!t.RawData.IsEmpty)
        {
            int size = OnnxDataTypes.ElementSize((OnnxDataType)t.DataType);
            var raw = t.RawData.Span;
            if (size == 0 || raw.Length != n * size) return null;
            for (long i = 0; i < n; i++)
            {
                bool any = false;
                for (int b = 0; b < size; b++) any |= raw[(int)(i * size + b)] != 0;
                result[i] = any ? 1 : 0;
            }
            return result;
        }
        IReadOnlyList<long> values = t.Int64Data.Count > 0 ? t.Int64Data : t.Uint64Data.Count > 0 ? t.Uint64Data.Select(v => (long)v).ToList() : t.Int32Data.Select(v => (long)v).ToList();
        if (values.Count != n) return null;
        for (int i = 0; i < n; i++) result[i] = values[i] != 0 ? 1 : 0;
        return result;
    }

    /// <summary>The values of a per-token output at the tokens that count (mask non-zero), in order; the output itself
    /// when it is not per token, when there is no mask, or when its size is not a whole number of values per token.</summary>
    public float[] Keep(float[] output, int outputIndex, long[]? mask)
    {
        if (mask is null || mask.Length == 0 || outputIndex >= PerToken.Length || !PerToken[outputIndex] || output.Length % mask.Length != 0) return output;
        return Keep(output, mask);
    }

    /// <summary>The values at the positions whose mask is non-zero: output holds mask.Length positions of equal size.</summary>
    public static float[] Keep(float[] output, long[] mask)
    {
        int inner = output.Length / mask.Length, kept = 0;
        foreach (var m in mask) if (m != 0) kept++;
        if (kept == mask.Length) return output;
        var result = new float[kept * inner];
        int at = 0;
        for (int t = 0; t < mask.Length; t++)
        {
            if (mask[t] == 0) continue;
            Array.Copy(output, t * inner, result, at, inner);
            at += inner;
        }
        return result;
    }

    /// <summary>Every output of one sample, its per-token outputs reduced to the tokens that count.</summary>
    public float[][] Keep(float[][] outputs, long[]? mask) => outputs.Select((o, k) => Keep(o, k, mask)).ToArray();
}
