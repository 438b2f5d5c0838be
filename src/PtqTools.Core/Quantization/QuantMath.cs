namespace PtqTools.Core.Quantization;

/// <summary>Integer type of a quantized tensor.</summary>
public enum QuantType { UInt8, Int8, UInt16, Int16 }

/// <summary>How weights are quantized: type, symmetry, and ONNX Runtime's reduce-range (7 bits, for CPUs
/// without VNNI whose u8 x s8 pair sums saturate in 16 bits).</summary>
public readonly record struct WeightSpec(QuantType Type = QuantType.Int8, bool Symmetric = true, bool ReduceRange = false)
{
    public (int Min, int Max) Limits => QuantMath.WeightLimits(this);
}

/// <summary>Scale and zero point of an affine mapping: real = scale * (q - zeroPoint).</summary>
public readonly record struct QuantParams(float Scale, int ZeroPoint);

/// <summary>The affine quantization math, in scalar form (the reference the rest of the engine is held to).</summary>
public static class QuantMath
{
    public static (int Min, int Max) Limits(QuantType type, bool symmetric = false) => type switch
    {
        QuantType.UInt8 => (0, 255),
        // Symmetric int8 uses [-127, 127] so that the range is centred on zero (as ONNX Runtime does).
        QuantType.Int8 => symmetric ? (-127, 127) : (-128, 127),
        QuantType.UInt16 => (0, 65535),
        QuantType.Int16 => symmetric ? (-32767, 32767) : (-32768, 32767),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>The zero point of a symmetric range: the middle of an unsigned type, 0 for a signed one.</summary>
    public static int SymmetricZero(QuantType type) => type switch
    {
        QuantType.UInt8 => 128,
        QuantType.UInt16 => 32768,
        _ => 0,
    };

    public static bool Is16Bit(QuantType type) => type is QuantType.UInt16 or QuantType.Int16;

    /// <summary>Weight code limits as ONNX Runtime's quantizer sets them: int8 symmetric [-127, 127], reduce-range
    /// int8 [-64, 64] and uint8 [0, 127] (7 bits).</summary>
    public static (int Min, int Max) WeightLimits(WeightSpec spec) => (spec.Type, spec.ReduceRange) switch
    {
        (QuantType.Int8, true) => (-64, 64),
        (QuantType.UInt8, true) => (0, 127),
        (QuantType.Int8 or QuantType.UInt8, false) => Limits(spec.Type, spec.Symmetric),
        _ => throw new ArgumentOutOfRangeException(nameof(spec), $"Weights are int8 or uint8, not {spec.Type}."),
    };
    /// <summary>Parameters that map [min, max] (widened to include 0, so zero is exact) onto the type's range.</summary>
    public static QuantParams FromRange(float min, float max, QuantType type, bool symmetric)
    {
        if (!float.IsFinite(min) || !float.IsFinite(max) || min > max)
            throw new PtqException("RangeNotFinite", PtqErrorKind.InvalidData, $"The range [{min}, {max}] cannot be quantized.", new[] { min, max });
        double rmin = Math.Min(min, 0f), rmax = Math.Max(max, 0f);
        var (qmin, qmax) = Limits(type, symmetric);
        if (symmetric)
        {
            double absMax = Math.Max(-rmin, rmax);
            if (absMax == 0) return new QuantParams(1f, SymmetricZero(type));
            float scale = (float)(2 * absMax / (qmax - qmin));
            return new QuantParams(scale, SymmetricZero(type));
        }
        if (rmax == rmin) return new QuantParams(1f, 0);
        float s = (float)((rmax - rmin) / (qmax - qmin));
        int zp = (int)Math.Round(qmin - rmin / s, MidpointRounding.ToEven);
        return new QuantParams(s, Math.Clamp(zp, qmin, qmax));
    }

    /// <summary>q = saturate(round_half_even(x / scale) + zeroPoint), as ONNX QuantizeLinear defines it.</summary>
    public static int Quantize(float x, QuantParams p, int qmin, int qmax)
    {
        float v = MathF.Round(x / p.Scale, MidpointRounding.ToEven) + p.ZeroPoint;
        if (float.IsNaN(v)) return Math.Clamp(p.ZeroPoint, qmin, qmax);
        return (int)Math.Clamp(v, qmin, qmax);
    }

    public static float Dequantize(int q, QuantParams p) => (q - p.ZeroPoint) * p.Scale;

    /// <summary>Symmetric int8 weights, one scale per slice along <paramref name="axis"/> (or one for all when null).</summary>
    public static (sbyte[] Values, float[] Scales) QuantizeWeights(ReadOnlySpan<float> w, long[] dims, int? axis)
    {
        int channels = axis is int a ? checked((int)dims[a]) : 1;
        long inner = 1;
        if (axis is int ax) for (int d = ax + 1; d < dims.Length; d++) inner *= dims[d];
        else inner = w.Length;
        var scales = new float[channels];
        var absMax = new float[channels];
        for (int i = 0; i < w.Length; i++)
        {
            int c = (int)(i / inner % channels);
            float v = Math.Abs(w[i]);
            if (!float.IsFinite(v))
                throw new PtqException("WeightNotFinite", PtqErrorKind.InvalidData, "A weight tensor holds NaN or infinity.", i);
            if (v > absMax[c]) absMax[c] = v;
        }
        for (int c = 0; c < channels; c++) scales[c] = absMax[c] == 0 ? 1f : absMax[c] / 127f;
        var q = new sbyte[w.Length];
        for (int i = 0; i < w.Length; i++)
        {
            int c = (int)(i / inner % channels);
            q[i] = (sbyte)Quantize(w[i], new QuantParams(scales[c], 0), -127, 127);
        }
        return (q, scales);
    }

    /// <summary>Weights of any <see cref="WeightSpec"/>, one scale and zero point per slice along
    /// <paramref name="axis"/> (or one for all when null). Symmetric: scale = max|w| / ((qmax - qmin) / 2) and the
    /// type's middle as zero point; asymmetric: the slice's [min, max] widened to include 0 over [qmin, qmax].</summary>
    public static (int[] Values, float[] Scales, int[] ZeroPoints) QuantizeWeights(ReadOnlySpan<float> w, long[] dims, int? axis, WeightSpec spec)
    {
        int channels = axis is int a ? checked((int)dims[a]) : 1;
        long inner = 1;
        if (axis is int ax) for (int d = ax + 1; d < dims.Length; d++) inner *= dims[d];
        else inner = w.Length;
        var min = new float[channels];
        var max = new float[channels];
        for (int i = 0; i < w.Length; i++)
        {
            int c = (int)(i / inner % channels);
            float v = w[i];
            if (!float.IsFinite(v))
                throw new PtqException("WeightNotFinite", PtqErrorKind.InvalidData, "A weight tensor holds NaN or infinity.", i);
            if (v < min[c]) min[c] = v;
            if (v > max[c]) max[c] = v;
        }
        var (qmin, qmax) = spec.Limits;
        var p = new QuantParams[channels];
        for (int c = 0; c < channels; c++)
        {
            if (spec.Symmetric)
            {
                float absMax = Math.Max(-min[c], max[c]);
                int zero = spec.Type == QuantType.UInt8 ? (qmin + qmax + 1) / 2 : 0;
                // In float, as the int8 entry point above computes absMax / 127f.
                p[c] = new QuantParams(absMax == 0 ? 1f : absMax / ((qmax - qmin) / 2f), zero);
            }
            else if (max[c] == min[c]) p[c] = new QuantParams(1f, Math.Clamp(0, qmin, qmax));
            else
            {
                float s = (float)(((double)max[c] - min[c]) / (qmax - qmin));
                p[c] = new QuantParams(s, Math.Clamp((int)Math.Round(qmin - min[c] / (double)s, MidpointRounding.ToEven), qmin, qmax));
            }
        }
        var q = new int[w.Length];
        for (int i = 0; i < w.Length; i++) q[i] = Quantize(w[i], p[(int)(i / inner % channels)], qmin, qmax);
        return (q, p.Select(x => x.Scale).ToArray(), p.Select(x => x.ZeroPoint).ToArray());
    }

    /// <summary>int32 bias with scale = input scale x weight scale (per output channel), zero point 0.</summary>
    public static (int[] Values, float[] Scales) QuantizeBias(ReadOnlySpan<float> bias, float inputScale, float[] weightScales)
    {
        var values = new int[bias.Length];
        var scales = new float[bias.Length];
        for (int c = 0; c < bias.Length; c++)
        {
            float s = inputScale * weightScales[weightScales.Length == 1 ? 0 : c];
            scales[c] = s;
            double v = Math.Round(bias[c] / (double)s, MidpointRounding.ToEven);
            values[c] = (int)Math.Clamp(v, int.MinValue, int.MaxValue);
        }
        return (values, scales);
    }

    /// <summary>int32 accumulator to int8/uint8 with a float multiplier, as ONNX Runtime's MLAS requantizes:
    /// q = saturate(round_half_even((float)acc * multiplier) + zeroPoint).</summary>
    public static int Requantize(int acc, float multiplier, int zeroPoint, int qmin, int qmax)
    {
        float v = MathF.Round((float)acc * multiplier, MidpointRounding.ToEven) + zeroPoint;
        return (int)Math.Clamp(v, qmin, qmax);
    }

    /// <summary>A real multiplier as a Q31 fixed-point value and a power-of-two exponent (TFLite/gemmlowp):
    /// multiplier ~= fixed * 2^(shift - 31).</summary>
    public static (int Fixed, int Shift) QuantizeMultiplier(double multiplier)
    {
        if (!(multiplier > 0) || !double.IsFinite(multiplier)) return (0, 0);
        int shift = 0;
        double q = multiplier;
        // frexp: q in [0.5, 1).
        while (q >= 1) { q /= 2; shift++; }
        while (q < 0.5) { q *= 2; shift--; }
        long qFixed = (long)Math.Round(q * (1L << 31), MidpointRounding.AwayFromZero);
        if (qFixed == 1L << 31) { qFixed /= 2; shift++; }
        if (shift < -31) return (0, 0);
        if (shift > 30) { shift = 30; qFixed = int.MaxValue; }
        return ((int)qFixed, shift);
    }

    /// <summary>gemmlowp's SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating the one overflow.</summary>
    public static int SaturatingRoundingDoublingHighMul(int a, int b)
    {
        if (a == int.MinValue && b == int.MinValue) return int.MaxValue;
        long ab = (long)a * b;
        long nudge = ab >= 0 ? 1L << 30 : 1 - (1L << 30);
        return (int)((ab + nudge) / (1L << 31));
    }

    /// <summary>gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero.</summary>
    public static int RoundingDivideByPOT(int x, int exponent)
    {
        int mask = (int)((1L << exponent) - 1);
        int remainder = x & mask;
        int threshold = (mask >> 1) + (x < 0 ? 1 : 0);
        return (x >> exponent) + (remainder > threshold ? 1 : 0);
    }

    /// <summary>int32 accumulator to int8/uint8 with a fixed-point multiplier and shift, as integer-only hardware does.</summary>
    public static int RequantizeFixedPoint(int acc, int fixedMultiplier, int shift, int zeroPoint, int qmin, int qmax)
    {
        int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        int v = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(unchecked(acc * (1 << left)), fixedMultiplier), right);
        return Math.Clamp(v + zeroPoint, qmin, qmax);
    }

    /// <summary>
    /// Block-wise asymmetric round-to-nearest of a [K, N] weight into <paramref name="bits"/>-bit codes, laid out
    /// as com.microsoft MatMulNBits wants it: codes [N][blocks][blockSize * bits / 8] (low nibble first, K padded
    /// with zeros to whole blocks), scales [N * blocks], zero points [N][ceil(blocks * bits / 8)] (low nibble first).
    /// Each block's range is widened to include zero so that zero is exact.
    /// </summary>
    /// <param name="hqq">Refine each block's zero point with HQQ's half-quadratic solver (Badri and Shaji, 2023),
    /// which fits the codes to the weights under an lp (p &lt; 1) error that lets outliers go; the zero point stays
    /// an integer, as MatMulNBits stores it. The block keeps whichever of RTN and HQQ has the smaller squared error.</param>
    /// <param name="symmetric">Symmetric blocks without zero points (MatMulNBits then uses 8): as ONNX Runtime's own
    /// quantizer, the block's largest-magnitude value maps to code 0 (scale = value / -8), so the other side reaches
    /// 7/8 of it; with <paramref name="hqq"/> a search over smaller scales keeps the lowest squared error.
    /// ZeroPoints is null.</param>
    public static (byte[] Codes, float[] Scales, byte[]? ZeroPoints) QuantizeBlockwise(ReadOnlySpan<float> w, int k, int n, int bits, int blockSize, bool hqq = false,
        bool symmetric = false)
    {
        if (bits != 4) throw new ArgumentOutOfRangeException(nameof(bits), "Only 4-bit block-wise codes are written.");
        if (w.Length != (long)k * n) throw new ArgumentException($"The weight has {w.Length} values, not {k}x{n}.", nameof(w));
        var output = new BlockwiseCodes(k, n, blockSize, symmetric);
        var block = new float[blockSize];
        for (int col = 0; col < n; col++)
            for (int b = 0; b < output.Blocks; b++)
            {
                int start = b * blockSize, end = Math.Min(k, start + blockSize);
                for (int r = start; r < end; r++)
                {
                    float v = w[r * n + col];
                    if (!float.IsFinite(v))
                        throw new PtqException("WeightNotFinite", PtqErrorKind.InvalidData, "A weight tensor holds NaN or infinity.", r * n + col);
                    block[r - start] = v;
                }
                var (scale, zp) = BlockParams(block.AsSpan(0, end - start), output.Levels, hqq, symmetric);
                output.SetBlock(col, b, scale, zp);
                var p = new QuantParams(scale, zp);
                for (int r = start; r < end; r++) output.SetCode(r, col, Quantize(w[r * n + col], p, 0, output.Levels));
            }
        return output.Result();
    }

    /// <summary>Scale and zero point of one block of 4-bit codes (its values finite): the block's [min, max] widened to
    /// include zero, refined by HQQ; or symmetric (<see cref="SymmetricBlockScale"/>) with zero point 8. Round-to-nearest,
    /// HQQ and GPTQ (which calls it on each block of error-corrected weights as it reaches it) share it.</summary>
    internal static (float Scale, int Zero) BlockParams(ReadOnlySpan<float> block, int levels, bool hqq, bool symmetric)
    {
        if (symmetric) return (SymmetricBlockScale(block, levels, hqq), (levels + 1) / 2);
        float min = 0, max = 0;
        foreach (var v in block)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        if (hqq && max != min) return HqqBlock(block, min, max, levels);
        float scale = max == min ? 1f : (max - min) / levels;
        return (scale, Math.Clamp((int)MathF.Round(-min / scale, MidpointRounding.ToEven), 0, levels));
    }

    /// <summary>Scale of a symmetric block with zero point (levels + 1) / 2: the largest-magnitude value over -8
    /// (negative when that value is positive), or with <paramref name="search"/> the best of 1.0 .. 0.7 times it.
    /// (A finer search with least-squares refits lowered the weights' squared error but not MiniLM's error: the
    /// large weights matter more than their share of the squared error.)</summary>
    internal static float SymmetricBlockScale(ReadOnlySpan<float> block, int levels, bool search)
    {
        float peak = 0;
        foreach (var v in block) if (Math.Abs(v) > Math.Abs(peak)) peak = v;
        int zero = (levels + 1) / 2;
        if (peak == 0) return 1f;
        float best = peak / -zero;
        if (!search) return best;
        double bestError = SquaredError(block, best, zero, levels);
        for (int step = 1; step <= 6; step++)
        {
            float scale = peak * (1f - 0.05f * step) / -zero;
            double e = SquaredError(block, scale, zero, levels);
            if (e < bestError) (bestError, best) = (e, scale);
        }
        return best;
    }

    /// <summary>The [K, N] float weight that MatMulNBits codes stand for (the reference its output is held to).</summary>
    public static float[] DequantizeBlockwise(byte[] codes, float[] scales, byte[]? zeroPoints, int k, int n, int bits, int blockSize)
    {
        int blocks = (k + blockSize - 1) / blockSize;
        int blob = blockSize * bits / 8;
        int zpRow = (blocks * bits + 7) / 8;
        var w = new float[(long)k * n];
        for (int col = 0; col < n; col++)
            for (int b = 0; b < blocks; b++)
            {
                int zp = 1 << (bits - 1);
                if (zeroPoints is not null)
                {
                    int zpByte = zeroPoints[col * zpRow + b / 2];
                    zp = b % 2 == 0 ? zpByte & 0xF : zpByte >> 4;
                }
                float scale = scales[col * blocks + b];
                for (int j = 0; j < blockSize && b * blockSize + j < k; j++)
                {
                    int c = codes[((long)col * blocks + b) * blob + j / 2];
                    int q = j % 2 == 0 ? c & 0xF : c >> 4;
                    w[(b * blockSize + j) * n + col] = (q - zp) * scale;
                }
            }
        return w;
    }

    /// <summary>Scale candidates from the full range down to 70% of it (clipping outliers), each with HQQ's zero point;
    /// the pair with the smallest squared error wins (the full-range RTN pair is the first candidate).</summary>
    internal static (float Scale, int Zero) HqqBlock(ReadOnlySpan<float> block, float min, float max, int levels)
    {
        float bestScale = (max - min) / levels;
        int bestZero = Math.Clamp((int)MathF.Round(-min / bestScale, MidpointRounding.ToEven), 0, levels);
        double best = SquaredError(block, bestScale, bestZero, levels);
        for (int step = 0; step <= 6; step++)
        {
            float f = 1f - 0.05f * step;
            float scale = (max - min) * f / levels;
            int rtn = Math.Clamp((int)MathF.Round(-min * f / scale, MidpointRounding.ToEven), 0, levels);
            int zero = HqqZeroPoint(block, scale, rtn, levels);
            double e = SquaredError(block, scale, zero, levels);
            if (e < best) (best, bestScale, bestZero) = (e, scale, zero);
        }
        return (bestScale, bestZero);
    }

    /// <summary>HQQ's alternating solver for one block with a fixed scale: W_e = shrink_p(W - dequant(Q(W))),
    /// z = mean(Q - (W - W_e) / s), with beta growing by kappa; returns the integer zero point (of RTN's and the
    /// solver's) with the smaller squared reconstruction error.</summary>
    internal static int HqqZeroPoint(ReadOnlySpan<float> block, float scale, int rtnZero, int levels, int iterations = 20,
        float p = 0.7f, float beta = 10f, float kappa = 1.01f)
    {
        double z = rtnZero;
        var q = new int[block.Length];
        for (int it = 0; it < iterations; it++)
        {
            double sum = 0;
            for (int i = 0; i < block.Length; i++)
            {
                q[i] = Math.Clamp((int)Math.Round(block[i] / scale + z, MidpointRounding.ToEven), 0, levels);
                double residual = block[i] - (q[i] - z) * scale;
                // Generalized soft threshold of the lp norm (the shrinkage HQQ uses).
                double a = Math.Abs(residual);
                double shrunk = a <= 1e-12 ? 0 : Math.Sign(residual) * Math.Max(0, a - Math.Pow(a, p - 1) / beta);
                sum += q[i] - (block[i] - shrunk) / scale;
            }
            z = sum / block.Length;
            beta *= kappa;
        }
        int hqqZero = Math.Clamp((int)Math.Round(z, MidpointRounding.ToEven), 0, levels);
        return SquaredError(block, scale, hqqZero, levels) < SquaredError(block, scale, rtnZero, levels) ? hqqZero : rtnZero;
    }

    static double SquaredError(ReadOnlySpan<float> block, float scale, int zero, int levels)
    {
        double e = 0;
        var p = new QuantParams(scale, zero);
        foreach (var v in block)
        {
            double d = v - Dequantize(Quantize(v, p, 0, levels), p);
            e += d * d;
        }
        return e;
    }
}

/// <summary>4-bit block-wise codes of a [K, N] weight in com.microsoft MatMulNBits' layout, filled one block's scale
/// and zero point and one code at a time: codes [N][blocks][blockSize / 2] (low nibble first, rows past K padded with
/// the block's zero point), scales [N * blocks], zero points [N][ceil(blocks / 2)] (low nibble first; none when
/// symmetric, where MatMulNBits uses 8).</summary>
internal sealed class BlockwiseCodes
{
    readonly int _k, _n, _blockSize, _blob, _zpRow;
    readonly bool _symmetric;
    readonly byte[] _codes, _zps;
    readonly float[] _scales;

    public BlockwiseCodes(int k, int n, int blockSize, bool symmetric)
    {
        (_k, _n, _blockSize, _symmetric) = (k, n, blockSize, symmetric);
        Blocks = (k + blockSize - 1) / blockSize;
        _blob = blockSize / 2;
        _zpRow = (Blocks + 1) / 2;
        _codes = new byte[(long)n * Blocks * _blob];
        _scales = new float[n * Blocks];
        _zps = new byte[n * _zpRow];
    }

    public int Blocks { get; }
    public int Levels => 15;

    /// <summary>Sets block <paramref name="b"/> of column <paramref name="col"/> (once), padding its rows past K.</summary>
    public void SetBlock(int col, int b, float scale, int zp)
    {
        _scales[col * Blocks + b] = scale;
        _zps[col * _zpRow + b / 2] |= (byte)(b % 2 == 0 ? zp : zp << 4);
        for (int r = Math.Max(_k, b * _blockSize); r < (b + 1) * _blockSize; r++) SetCode(r, col, zp);
    }

    /// <summary>Sets the code of weight [row, col] (once).</summary>
    public void SetCode(int row, int col, int q)
    {
        int b = row / _blockSize, j = row % _blockSize;
        _codes[((long)col * Blocks + b) * _blob + j / 2] |= (byte)(j % 2 == 0 ? q : q << 4);
    }

    public (byte[] Codes, float[] Scales, byte[]? ZeroPoints) Result() => (_codes, _scales, _symmetric ? null : _zps);
}
