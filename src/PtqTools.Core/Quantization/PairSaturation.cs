using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>How a model written for a CPU class whose u8 x s8 pair sums saturate at int16 (<see cref="QuantTargets.NeedsPairSafeWeights"/>)
/// keeps them inside int16.</summary>
public enum OverflowFix
{
    /// <summary>Per layer and per output channel: only the channels in which some pair of weights could leave int16
    /// get a larger scale, just large enough that no pair can (the layer's reason says how many and by how much).</summary>
    Channels,
    /// <summary>7-bit weights ([-64, 64]) on every layer in which some pair could leave int16.</summary>
    ReduceRange,
    /// <summary>NNCF's first_layer_only: 7-bit weights on the first quantized layer only; the others are checked
    /// and reported, not fixed.</summary>
    FirstLayer,
    /// <summary>No fix: layers in which a pair sum could leave int16 are reported (result, warning), not changed.</summary>
    None,
}

/// <summary>The order in which a kernel pairs the K elements of one output channel: ONNX Runtime's u8 x s8 kernels
/// without VNNI multiply with vpmaddubsw, which adds the products of two adjacent K elements and saturates that sum
/// at int16. <see cref="Index"/> maps (output channel, local k) to the weight's flat index; each ordering lists local
/// k in kernel order, -1 for padding (a zero weight), and pairs its elements (0,1), (2,3), ...</summary>
public sealed class PairLayout
{
    PairLayout(int outputChannels, Func<int, int, long> index, int[][] orderings, int k)
    { OutputChannels = outputChannels; Index = index; Orderings = orderings; K = k; }

    public int OutputChannels { get; }
    public int K { get; }
    public Func<int, int, long> Index { get; }
    public int[][] Orderings { get; }

    static int[] Sequence(int k) => Enumerable.Range(0, k).ToArray();

    /// <summary>Rows of two elements, one pair each (the candidate pairs of <see cref="PairSaturation"/>'s search).</summary>
    internal static PairLayout Pairs { get; } = new(0, (oc, kk) => kk, new[] { new[] { 0, 1 } }, 2);

    /// <summary>B of X x B, [K, N]: output channel n, pairs (k, k+1) along K.</summary>
    public static PairLayout MatMul(long k, long n) =>
        new(checked((int)n), (oc, kk) => (long)kk * n + oc, new[] { Sequence(checked((int)k)) }, checked((int)k));

    /// <summary>A weight stored [N, K] (Gemm with transB, LSTM gate rows): row n, pairs along the row.</summary>
    public static PairLayout Rows(long rows, long cols) =>
        new(checked((int)rows), (oc, kk) => (long)oc * cols + kk, new[] { Sequence(checked((int)cols)) }, checked((int)cols));

    /// <summary>Conv weight [M, C/group, kernel...]: K is (kernel position, input channel). ONNX Runtime's symmetric
    /// convolution pairs two adjacent input channels at one kernel position (channels padded to even); its im2col
    /// + QGEMM path pairs the flat K, so with an odd channel count a pair straddles two positions. Both orderings are
    /// checked, so the weights are safe whichever kernel ONNX Runtime picks.</summary>
    public static PairLayout Conv(long[] dims)
    {
        int m = checked((int)dims[0]), c = checked((int)dims[1]);
        int p = checked((int)(TensorSize(dims) / ((long)m * c)));
        return ChannelsAtPositions(m, c, p, (oc, kk) => (long)oc * c * p + kk);
    }

    /// <summary>ConvTranspose weight [C_in, M/group, kernel...]: output channel m reads every input channel at every
    /// position; the same two orderings as <see cref="Conv"/>.</summary>
    public static PairLayout ConvTranspose(long[] dims)
    {
        int cin = checked((int)dims[0]), m = checked((int)dims[1]);
        int p = checked((int)(TensorSize(dims) / ((long)m * cin)));
        return ChannelsAtPositions(m, cin, p, (oc, kk) => ((long)(kk / p) * m + oc) * p + kk % p);
    }

    // Local k = channel * positions + position (the weight's own order).
    static PairLayout ChannelsAtPositions(int m, int c, int p, Func<int, int, long> index)
    {
        int cPadded = c + (c & 1);
        var padded = new int[p * cPadded];
        var flat = new int[p * c];
        for (int pos = 0; pos < p; pos++)
        {
            for (int ch = 0; ch < cPadded; ch++) padded[pos * cPadded + ch] = ch < c ? ch * p + pos : -1;
            for (int ch = 0; ch < c; ch++) flat[pos * c + ch] = ch * p + pos;
        }
        return new PairLayout(m, index, c % 2 == 0 ? new[] { padded } : new[] { padded, flat }, c * p);
    }

    static long TensorSize(long[] dims) => dims.Aggregate(1L, (a, d) => a * d);

    /// <summary>The layout of a node's weight, or null for an op ONNX Runtime does not run as a u8 x s8 product
    /// that can saturate.</summary>
    public static PairLayout? For(NodeProto node, long[] dims) => OpHandlers.ForOpType(node.OpType)?.Pairs(node, dims);
}

/// <summary>What the pair check found and did for one weight.</summary>
public sealed record PairCheck(int Channels, int ChannelsAtRisk, int ChannelsRescaled, float LargestStepRatio, bool ReducedTo7Bits)
{
    public bool AtRisk => ChannelsAtRisk > 0;
    public bool Fixed => ChannelsRescaled > 0 || ReducedTo7Bits;
    /// <summary>Still able to leave int16 after the fix.</summary>
    public bool Overflows => AtRisk && !Fixed;

    /// <summary>Two weights of one layer (an LSTM's W and R, per direction) as one check.</summary>
    public static PairCheck? Combine(PairCheck? a, PairCheck? b) => a is null ? b : b is null ? a
        : new PairCheck(a.Channels + b.Channels, a.ChannelsAtRisk + b.ChannelsAtRisk, a.ChannelsRescaled + b.ChannelsRescaled,
            Math.Max(a.LargestStepRatio, b.LargestStepRatio), a.ReducedTo7Bits || b.ReducedTo7Bits);
}

/// <summary>The u8 x s8 pair-sum check and its fixes. Activations are uint8 codes (0..255, whatever the zero point:
/// calibrated static ranges and DynamicQuantizeLinear's run-time range both span the whole type), so a pair of stored
/// weight codes (w1, w2) stays inside int16 for every input exactly when 255 * (max(w1,0) + max(w2,0)) &lt;= 32767 and
/// 255 * (min(w1,0) + min(w2,0)) &gt;= -32768, that is when the positive part and the negative part of the pair
/// each sum to at most 128 in magnitude.</summary>
public static class PairSaturation
{
    public const int ActivationMax = 255;

    /// <summary>Whether the pair (w1, w2) of stored codes can leave int16 for some uint8 activations.</summary>
    public static bool CanOverflow(int w1, int w2) =>
        ActivationMax * (Math.Max(w1, 0) + Math.Max(w2, 0)) > short.MaxValue
        || ActivationMax * (Math.Min(w1, 0) + Math.Min(w2, 0)) < short.MinValue;

    /// <summary>Output channels in which some pair of the codes can leave int16, as they are or, with a nonzero
    /// <paramref name="offset"/>, stored with it added.</summary>
    public static bool[] ChannelsAtRisk(ReadOnlySpan<int> values, PairLayout layout, int offset = 0)
    {
        var risk = new bool[layout.OutputChannels];
        for (int oc = 0; oc < layout.OutputChannels; oc++)
            risk[oc] = ChannelAtRisk(values, layout, oc, offset);
        return risk;
    }

    static bool ChannelAtRisk(ReadOnlySpan<int> values, PairLayout layout, int oc, int offset)
    {
        foreach (var order in layout.Orderings)
            for (int j = 0; j + 1 < order.Length; j += 2)
            {
                int w1 = order[j] < 0 ? 0 : values[(int)layout.Index(oc, order[j])];
                int w2 = order[j + 1] < 0 ? 0 : values[(int)layout.Index(oc, order[j + 1])];
                if (PairAtRisk(w1, w2, order[j] >= 0, order[j + 1] >= 0, offset)) return true;
            }
        return false;
    }

    /// <summary>A pair at risk as the codes are, or stored with the offset added (padding stays 0).</summary>
    static bool PairAtRisk(int w1, int w2, bool real1, bool real2, int offset) =>
        CanOverflow(w1, w2) || (offset != 0 && CanOverflow(real1 ? w1 + offset : 0, real2 ? w2 + offset : 0));

    /// <summary>Checks int8 weights quantized by <see cref="QuantMath.QuantizeWeights(ReadOnlySpan{float}, long[], int?, WeightSpec)"/>
    /// (scale per output channel when <paramref name="perChannel"/>, one otherwise) and, with
    /// <see cref="OverflowFix.Channels"/>, re-quantizes each scale group that is at risk with a code range at which no
    /// pair can leave int16 (with the codes as they are and, for a nonzero <paramref name="offset"/>, with it added, so
    /// that both encodings of <see cref="ConvKernel"/> hold the same values): of the safe ranges from the largest down
    /// to 7 bits, the one with the least expected output error for the layer's calibrated <paramref name="input"/>
    /// mean and deviation (weight error alone without them). Weights of uint8 (u8 x u8 kernels widen to int16 first:
    /// exact) are never at risk.</summary>
    public static PairCheck CheckAndFix(ReadOnlySpan<float> w, PairLayout layout, bool perChannel, WeightSpec spec,
        int[] values, float[] scales, int[] zeroPoints, bool fix, int offset = 0, (double Mean, double Std)? input = null)
    {
        if (spec.Type != QuantType.Int8) return new PairCheck(layout.OutputChannels, 0, 0, 1f, false);
        var risk = ChannelsAtRisk(values, layout, offset);
        int atRisk = risk.Count(r => r);
        if (atRisk == 0 || !fix) return new PairCheck(layout.OutputChannels, atRisk, 0, 1f, false);
        var (qmin, qmax) = spec.Limits;
        float largest = 1f;
        int rescaled = 0;
        // A scale group: one output channel per channel, or every channel for a per-tensor scale.
        var groups = perChannel
            ? Enumerable.Range(0, layout.OutputChannels).Where(oc => risk[oc]).Select(oc => new[] { oc })
            : new[] { Enumerable.Range(0, layout.OutputChannels).ToArray() };
        foreach (var channels in groups)
        {
            int g = perChannel ? channels[0] : 0;
            // The group's weights in each channel's K order, gathered once.
            var local = new float[channels.Length][];
            for (int c = 0; c < channels.Length; c++)
            {
                local[c] = new float[layout.K];
                for (int k = 0; k < layout.K; k++) local[c][k] = w[(int)layout.Index(channels[c], k)];
            }
            float min = 0, max = 0;
            foreach (var v in local)
                foreach (var x in v) { if (x < min) min = x; if (x > max) max = x; }
            // Bisect the fraction r of the code range: r = 1 is the layer's own quantization (at risk), and 0.48
            // (codes within +-62, or -63 after an offset of -1: |pair| <= 126 * 255) is always safe.
            // With symmetric weights a code's magnitude only shrinks as r does, so only the pairs at risk at r = 1
            // can be at risk at any r: the trials look at those alone, and one full pass confirms the result.
            var candidates = spec.Symmetric ? PairsAtRisk(local, layout, Params(spec, qmin, qmax, min, max, 1f), qmin, qmax, offset) : local;
            var pairLayout = spec.Symmetric ? PairLayout.Pairs : layout;
            float lo = 0.48f, hi = 1f;
            var best = Params(spec, qmin, qmax, min, max, lo);
            for (int step = 0; step < 12; step++)
            {
                float r = (lo + hi) / 2;
                var trial = Params(spec, qmin, qmax, min, max, r);
                if (Safe(candidates, pairLayout, trial, qmin, qmax, offset)) { lo = r; best = trial; } else hi = r;
            }
            if (!Safe(local, layout, best, qmin, qmax, offset)) throw new InvalidOperationException("A pair the check passed overflows: the pair check is wrong.");
            // Among the safe ranges, from the largest down to 7 bits (ONNX Runtime's reduce_range), the one whose
            // rounding costs the layer's output least: for inputs of mean m and deviation s, the expected squared output
            // error of a channel is about s^2 * sum(e^2) + m^2 * (sum e)^2 (e the weight errors); without input
            // statistics, sum(e^2). Where 7-bit codes are safe, the fix is never less faithful than they are by that measure.
            if (spec.Symmetric)
            {
                double m2 = input is { } moments ? moments.Mean * moments.Mean : 0, s2 = input is { } mo ? mo.Std * mo.Std : 1;
                if (s2 == 0 && m2 == 0) s2 = 1;
                var (rmin, rmax) = QuantMath.WeightLimits(spec with { ReduceRange = true });
                float sevenBit = (rmax - rmin) / (float)(qmax - qmin);
                double bestCost = OutputCost(local, best, qmin, qmax, s2, m2);
                const int steps = 8;
                for (int i = 1; i <= steps && lo > sevenBit; i++)
                {
                    var trial = Params(spec, qmin, qmax, min, max, lo + (sevenBit - lo) * i / steps);
                    if (!Safe(candidates, pairLayout, trial, qmin, qmax, offset)) continue;
                    double cost = OutputCost(local, trial, qmin, qmax, s2, m2);
                    if (cost < bestCost) (best, bestCost) = (trial, cost);
                }
            }
            largest = Math.Max(largest, best.Scale / scales[g]);
            scales[g] = best.Scale;
            zeroPoints[g] = best.ZeroPoint;
            for (int c = 0; c < channels.Length; c++)
                for (int k = 0; k < layout.K; k++)
                    values[layout.Index(channels[c], k)] = QuantMath.Quantize(local[c][k], best, qmin, qmax);
            rescaled += channels.Length;
        }
        return new PairCheck(layout.OutputChannels, atRisk, perChannel ? rescaled : layout.OutputChannels, largest, false);
    }

    /// <summary>The parameters of one scale group with the code range narrowed to r of [qmin, qmax] (symmetric:
    /// scale = max|w| / (r * qmax); asymmetric: the [min, max] range over r times the code span).</summary>
    static QuantParams Params(WeightSpec spec, int qmin, int qmax, float min, float max, float r)
    {
        if (spec.Symmetric)
        {
            float absMax = Math.Max(-min, max);
            return new QuantParams(absMax == 0 ? 1f : absMax / (r * ((qmax - qmin) / 2f)), 0);
        }
        float scale = max == min ? 1f : (float)(((double)max - min) / (r * (qmax - qmin)));
        return new QuantParams(scale, Math.Clamp((int)Math.Round(r * qmin - min / (double)scale, MidpointRounding.ToEven), qmin, qmax));
    }

    /// <summary>s2 * sum(e^2) + m2 * (sum e)^2 summed over the group's channels, e the weight rounding errors.</summary>
    static double OutputCost(float[][] local, QuantParams p, int qmin, int qmax, double s2, double m2)
    {
        double cost = 0;
        foreach (var v in local)
        {
            double sum = 0, squares = 0;
            foreach (var x in v) { double e = x - (QuantMath.Quantize(x, p, qmin, qmax) - p.ZeroPoint) * (double)p.Scale; sum += e; squares += e * e; }
            cost += s2 * squares + m2 * sum * sum;
        }
        return cost;
    }

    /// <summary>The pairs of the group at risk with <paramref name="p"/>, as two-element rows (NaN for padding).</summary>
    static float[][] PairsAtRisk(float[][] local, PairLayout layout, QuantParams p, int qmin, int qmax, int offset)
    {
        var pairs = new List<float[]>();
        foreach (var v in local)
            foreach (var order in layout.Orderings)
                for (int j = 0; j + 1 < order.Length; j += 2)
                {
                    int w1 = order[j] < 0 ? 0 : QuantMath.Quantize(v[order[j]], p, qmin, qmax);
                    int w2 = order[j + 1] < 0 ? 0 : QuantMath.Quantize(v[order[j + 1]], p, qmin, qmax);
                    if (PairAtRisk(w1, w2, order[j] >= 0, order[j + 1] >= 0, offset))
                        pairs.Add(new[] { order[j] < 0 ? float.NaN : v[order[j]], order[j + 1] < 0 ? float.NaN : v[order[j + 1]] });
                }
        return pairs.ToArray();
    }

    /// <summary>Whether every pair of the group quantized with <paramref name="p"/> stays inside int16 (stops at the
    /// first that does not).</summary>
    static bool Safe(float[][] local, PairLayout layout, QuantParams p, int qmin, int qmax, int offset)
    {
        foreach (var v in local)
            foreach (var order in layout.Orderings)
                for (int j = 0; j + 1 < order.Length; j += 2)
                {
                    bool real1 = order[j] >= 0 && !float.IsNaN(v[order[j]]), real2 = order[j + 1] >= 0 && !float.IsNaN(v[order[j + 1]]);
                    int w1 = real1 ? QuantMath.Quantize(v[order[j]], p, qmin, qmax) : 0;
                    int w2 = real2 ? QuantMath.Quantize(v[order[j + 1]], p, qmin, qmax) : 0;
                    if (PairAtRisk(w1, w2, real1, real2, offset)) return false;
                }
        return true;
    }

    /// <summary>A weight quantized for <paramref name="options"/>' target: the one entry point of every writer whose
    /// weights meet uint8 activations in an integer product (static Conv/Gemm/MatMul, dynamic MatMul, dynamic LSTM).
    /// On a target that needs pair-safe weights, <see cref="OverflowFix"/> decides what happens to a layer at risk;
    /// elsewhere (or for a null layout) it is <see cref="QuantMath.QuantizeWeights(ReadOnlySpan{float}, long[], int?, WeightSpec)"/>
    /// and the check is null. <paramref name="firstLayer"/> marks the first quantized layer (for
    /// <see cref="OverflowFix.FirstLayer"/>); <paramref name="offset"/> is one the codes may be stored with (-1 for a
    /// convolution that <see cref="ConvKernel.Gemm"/> may encode): they are made safe both with it and without.</summary>
    public static (int[] Values, float[] Scales, int[] ZeroPoints, PairCheck? Check) QuantizeWeights(ReadOnlySpan<float> w, long[] dims, int? axis,
        WeightSpec spec, PairLayout? layout, QuantizationOptions options, bool firstLayer, int offset = 0, (double Mean, double Std)? input = null)
    {
        var (values, scales, zeroPoints) = QuantMath.QuantizeWeights(w, dims, axis, spec);
        if (layout is null || spec.Type != QuantType.Int8 || !QuantTargets.NeedsPairSafeWeights(options.Target))
            return (values, scales, zeroPoints, null);
        var fix = options.OverflowFix;
        var check = CheckAndFix(w, layout, axis is not null, spec, values, scales, zeroPoints, fix == OverflowFix.Channels, offset, input);
        if ((fix == OverflowFix.ReduceRange && check.AtRisk) || (fix == OverflowFix.FirstLayer && firstLayer))
        {
            (values, scales, zeroPoints) = QuantMath.QuantizeWeights(w, dims, axis, spec with { ReduceRange = true });
            check = check with { ReducedTo7Bits = true };
        }
        return (values, scales, zeroPoints, check);
    }

    /// <summary>The reason text for a layer's decision.</summary>
    public static string Reason(PairCheck check, QuantTarget target, OverflowFix fix)
    {
        string where = QuantTargets.Describe(target);
        if (check.ReducedTo7Bits)
            return check.AtRisk
                ? $"; 7-bit weights: u8 x s8 pair sums could leave int16 on {where} ({check.ChannelsAtRisk} of {check.Channels} output channels at risk)"
                : "; 7-bit weights (first layer, -OverflowFix FirstLayer)";
        if (!check.AtRisk) return $"; no u8 x s8 pair sum can leave int16 ({where})";
        if (check.Fixed)
            return FormattableString.Invariant(
                $"; pair-safe for {where}: {check.ChannelsRescaled} of {check.Channels} output channels rescaled so that no u8 x s8 pair sum can leave int16 (step up to {check.LargestStepRatio:0.00}x)");
        return $"; WARNING: u8 x s8 pair sums can leave int16 on {where} in {check.ChannelsAtRisk} of {check.Channels} output channels, not fixed (-OverflowFix {fix}): ONNX Runtime saturates them there";
    }
}
