using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

public class QuantMathTests
{
    public static TheoryData<QuantType, bool> Kinds => new()
    {
        { QuantType.UInt8, false }, { QuantType.Int8, false }, { QuantType.Int8, true }, { QuantType.UInt8, true },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FromRange_MakesZeroExactAndCoversTheRange(QuantType type, bool symmetric)
    {
        var (qmin, qmax) = QuantMath.Limits(type, symmetric);
        var ranges = new (float Min, float Max)[] { (-1f, 3f), (-7.25f, 0.5f), (2f, 5f), (-4f, -1f), (-0.001f, 1000f), (0f, 1f), (-1f, 0f) };
        foreach (var (min, max) in ranges)
        {
            var p = QuantMath.FromRange(min, max, type, symmetric);
            Assert.True(p.Scale > 0 && float.IsFinite(p.Scale), $"[{min},{max}]: scale {p.Scale}");
            Assert.InRange(p.ZeroPoint, qmin, qmax);
            // Zero is exactly representable: it quantizes to the zero point, which dequantizes to exactly 0.
            Assert.Equal(p.ZeroPoint, QuantMath.Quantize(0f, p, qmin, qmax));
            Assert.Equal(0f, QuantMath.Dequantize(p.ZeroPoint, p));
            // The grid spans the range (widened to include 0) within half a step at each end.
            double lo = Math.Min(min, 0), hi = Math.Max(max, 0);
            Assert.True(QuantMath.Dequantize(qmin, p) <= lo + p.Scale * 0.5001, $"[{min},{max}]: lowest level {QuantMath.Dequantize(qmin, p)}");
            Assert.True(QuantMath.Dequantize(qmax, p) >= hi - p.Scale * 0.5001, $"[{min},{max}]: highest level {QuantMath.Dequantize(qmax, p)}");
            if (symmetric)
            {
                Assert.Equal(type == QuantType.UInt8 ? 128 : 0, p.ZeroPoint);
                AssertRelative(Math.Max(Math.Abs(lo), hi) / ((qmax - qmin) / 2.0), p.Scale);
            }
            else
            {
                AssertRelative((hi - lo) / (qmax - qmin), p.Scale);
            }
        }
    }

    static void AssertRelative(double expected, float actual) =>
        Assert.True(Math.Abs(actual - expected) <= 1e-6 * Math.Abs(expected), $"expected {expected}, got {actual}");

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FromRange_OfAllZeroRange_DoesNotDivideByZero(QuantType type, bool symmetric)
    {
        var (qmin, qmax) = QuantMath.Limits(type, symmetric);
        var p = QuantMath.FromRange(0f, 0f, type, symmetric);
        Assert.True(p.Scale > 0 && float.IsFinite(p.Scale));
        Assert.InRange(p.ZeroPoint, qmin, qmax);
        Assert.Equal(p.ZeroPoint, QuantMath.Quantize(0f, p, qmin, qmax));
        Assert.Equal(0f, QuantMath.Dequantize(QuantMath.Quantize(0f, p, qmin, qmax), p));
    }

    [Theory]
    [InlineData(float.NaN, 1f)]
    [InlineData(-1f, float.NaN)]
    [InlineData(float.NegativeInfinity, 1f)]
    [InlineData(-1f, float.PositiveInfinity)]
    [InlineData(2f, 1f)]
    public void FromRange_RefusesUnusableRanges(float min, float max)
    {
        foreach (var (type, symmetric) in new[] { (QuantType.UInt8, false), (QuantType.Int8, true) })
            Check.Throws("RangeNotFinite", () => QuantMath.FromRange(min, max, type, symmetric));
    }

    [Fact]
    public void Quantize_RoundsHalfToEven()
    {
        var p = new QuantParams(1f, 0);
        // Ties go to the even neighbour (ONNX QuantizeLinear), not away from zero.
        Assert.Equal(0, QuantMath.Quantize(0.5f, p, -128, 127));
        Assert.Equal(2, QuantMath.Quantize(1.5f, p, -128, 127));
        Assert.Equal(2, QuantMath.Quantize(2.5f, p, -128, 127));
        Assert.Equal(4, QuantMath.Quantize(3.5f, p, -128, 127));
        Assert.Equal(0, QuantMath.Quantize(-0.5f, p, -128, 127));
        Assert.Equal(-2, QuantMath.Quantize(-1.5f, p, -128, 127));
        Assert.Equal(-2, QuantMath.Quantize(-2.5f, p, -128, 127));
        // Off the tie it is ordinary rounding; the zero point is added after rounding.
        Assert.Equal(3, QuantMath.Quantize(2.51f, p, -128, 127));
        var shifted = new QuantParams(0.5f, 10);
        Assert.Equal(10 + 2, QuantMath.Quantize(1.25f, shifted, 0, 255));   // 2.5 -> 2
        Assert.Equal(10 + 4, QuantMath.Quantize(1.75f, shifted, 0, 255));   // 3.5 -> 4
    }

    [Fact]
    public void Quantize_Saturates()
    {
        var p = new QuantParams(0.1f, 0);
        Assert.Equal(127, QuantMath.Quantize(1000f, p, -128, 127));
        Assert.Equal(-128, QuantMath.Quantize(-1000f, p, -128, 127));
        Assert.Equal(127, QuantMath.Quantize(float.MaxValue, p, -127, 127));
        Assert.Equal(-127, QuantMath.Quantize(-1000f, p, -127, 127));
        var u = new QuantParams(0.1f, 128);
        Assert.Equal(255, QuantMath.Quantize(1e6f, u, 0, 255));
        Assert.Equal(0, QuantMath.Quantize(-1e6f, u, 0, 255));
        Assert.Equal(255, QuantMath.Quantize(float.PositiveInfinity, u, 0, 255));
        Assert.Equal(0, QuantMath.Quantize(float.NegativeInfinity, u, 0, 255));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RoundTrip_ErrorIsAtMostHalfAStepInsideTheRange(QuantType type, bool symmetric)
    {
        var random = new Random(1234);
        var (qmin, qmax) = QuantMath.Limits(type, symmetric);
        for (int r = 0; r < 200; r++)
        {
            float a = (float)((random.NextDouble() * 2 - 1) * Math.Pow(10, random.Next(-3, 4)));
            float b = (float)((random.NextDouble() * 2 - 1) * Math.Pow(10, random.Next(-3, 4)));
            float min = Math.Min(a, b), max = Math.Max(a, b);
            var p = QuantMath.FromRange(min, max, type, symmetric);
            for (int k = 0; k < 200; k++)
            {
                float x = k switch { 0 => min, 1 => max, _ => (float)(min + random.NextDouble() * (max - min)) };
                float back = QuantMath.Dequantize(QuantMath.Quantize(x, p, qmin, qmax), p);
                // Half a step, plus float32 rounding of x / scale and of the product.
                double bound = p.Scale * 0.5 + 4e-7 * Math.Max(Math.Abs(x), p.Scale);
                Assert.True(Math.Abs(back - x) <= bound,
                    $"{type} symmetric={symmetric} range [{min},{max}] scale {p.Scale} zp {p.ZeroPoint}: {x} -> {back}, error {Math.Abs(back - x)} > {bound}");
            }
        }
    }

    /// <summary>Row-major 4-D weights [O,I,H,W]: per output channel (axis 0) by explicit loops.</summary>
    static (sbyte[] Values, float[] Scales) NaiveAxis0(float[] w, int o, int i, int h, int wd)
    {
        var scales = new float[o];
        var q = new sbyte[w.Length];
        for (int c = 0; c < o; c++)
        {
            float absMax = 0;
            for (int a = 0; a < i; a++) for (int y = 0; y < h; y++) for (int x = 0; x < wd; x++)
                absMax = Math.Max(absMax, Math.Abs(w[((c * i + a) * h + y) * wd + x]));
            scales[c] = absMax == 0 ? 1f : absMax / 127f;
            for (int a = 0; a < i; a++) for (int y = 0; y < h; y++) for (int x = 0; x < wd; x++)
            {
                int idx = ((c * i + a) * h + y) * wd + x;
                q[idx] = (sbyte)Math.Clamp(Math.Round(w[idx] / scales[c], MidpointRounding.ToEven), -127, 127);
            }
        }
        return (q, scales);
    }

    /// <summary>Weights [A,C,R] per channel along axis 1 by explicit loops (a 2-D [K,N] matrix is A=K, C=N, R=1).</summary>
    static (sbyte[] Values, float[] Scales) NaiveAxis1(float[] w, int outer, int channels, int inner)
    {
        var scales = new float[channels];
        var q = new sbyte[w.Length];
        for (int c = 0; c < channels; c++)
        {
            float absMax = 0;
            for (int a = 0; a < outer; a++) for (int r = 0; r < inner; r++) absMax = Math.Max(absMax, Math.Abs(w[(a * channels + c) * inner + r]));
            scales[c] = absMax == 0 ? 1f : absMax / 127f;
            for (int a = 0; a < outer; a++) for (int r = 0; r < inner; r++)
            {
                int idx = (a * channels + c) * inner + r;
                q[idx] = (sbyte)Math.Clamp(Math.Round(w[idx] / scales[c], MidpointRounding.ToEven), -127, 127);
            }
        }
        return (q, scales);
    }

    /// <summary>Channels whose magnitudes differ by orders of magnitude, and one all-zero channel.</summary>
    static float[] SpreadWeights(Random random, int channels, int per, Func<int, int, int> index)
    {
        var w = new float[channels * per];
        for (int c = 0; c < channels; c++)
            for (int k = 0; k < per; k++)
                w[index(c, k)] = c == 1 ? 0f : (float)((random.NextDouble() * 2 - 1) * Math.Pow(10, c - 2));
        return w;
    }

    static void AssertQuantizedLike((sbyte[] Values, float[] Scales) expected, (sbyte[] Values, float[] Scales) actual)
    {
        Assert.Equal(expected.Scales, actual.Scales);
        Assert.Equal(expected.Values, actual.Values);
        Assert.All(actual.Values, v => Assert.InRange(v, (sbyte)-127, (sbyte)127));
        Assert.Contains(actual.Values, v => v is 127 or -127);   // each scale is set by the largest magnitude
        Assert.All(actual.Scales, s => Assert.True(s > 0 && float.IsFinite(s)));
    }

    [Fact]
    public void QuantizeWeights_PerChannelAlongAxis0()
    {
        var random = new Random(7);
        int o = 5, i = 3, h = 2, wd = 2, per = i * h * wd;
        var w = SpreadWeights(random, o, per, (c, k) => c * per + k);
        var actual = QuantMath.QuantizeWeights(w, new long[] { o, i, h, wd }, 0);
        var expected = NaiveAxis0(w, o, i, h, wd);
        AssertQuantizedLike(expected, actual);
        Assert.Equal(1f, actual.Scales[1]);   // the all-zero channel: no division by zero
        Assert.All(Enumerable.Range(per, per), k => Assert.Equal(0, actual.Values[k]));
        for (int k = 0; k < w.Length; k++)
            Assert.True(Math.Abs(actual.Values[k] * actual.Scales[k / per] - w[k]) <= actual.Scales[k / per] * 0.5001);
    }

    [Fact]
    public void QuantizeWeights_PerChannelAlongAxis1()
    {
        var random = new Random(8);
        // A Gemm B matrix [K, N]: one scale per column.
        int k = 6, n = 4;
        var w = SpreadWeights(random, n, k, (c, r) => r * n + c);
        var actual = QuantMath.QuantizeWeights(w, new long[] { k, n }, 1);
        AssertQuantizedLike(NaiveAxis1(w, k, n, 1), actual);
        Assert.Equal(n, actual.Scales.Length);

        // A 4-D tensor along axis 1: outer and inner strides both matter.
        int outer = 2, channels = 3, inner = 4;
        var w4 = SpreadWeights(random, channels, outer * inner, (c, r) => ((r / inner) * channels + c) * inner + r % inner);
        var actual4 = QuantMath.QuantizeWeights(w4, new long[] { outer, channels, 2, 2 }, 1);
        AssertQuantizedLike(NaiveAxis1(w4, outer, channels, inner), actual4);
    }

    [Fact]
    public void QuantizeWeights_PerTensor()
    {
        var random = new Random(9);
        var w = Check.RandomFloats(random, 60, 3f);
        var actual = QuantMath.QuantizeWeights(w, new long[] { 5, 12 }, null);
        Assert.Single(actual.Scales);
        var expected = NaiveAxis1(w, 1, 1, w.Length);   // one channel holding everything
        AssertQuantizedLike(expected, actual);
        Assert.Equal(w.Max(Math.Abs) / 127f, actual.Scales[0]);

        var zeros = QuantMath.QuantizeWeights(new float[8], new long[] { 2, 4 }, null);
        Assert.Equal(1f, zeros.Scales[0]);
        Assert.All(zeros.Values, v => Assert.Equal(0, v));
    }

    [Fact]
    public void QuantizeWeights_RefusesNonFiniteWeights()
    {
        Check.Throws("WeightNotFinite", () => QuantMath.QuantizeWeights(new[] { 1f, float.NaN }, new long[] { 2 }, 0));
        Check.Throws("WeightNotFinite", () => QuantMath.QuantizeWeights(new[] { 1f, float.PositiveInfinity }, new long[] { 2 }, null));
    }

    [Fact]
    public void QuantizeBias_IsBiasOverInputScaleTimesWeightScale()
    {
        var random = new Random(10);
        var bias = Check.RandomFloats(random, 16, 5f);
        var weightScales = Enumerable.Range(0, 16).Select(_ => (float)(0.001 + random.NextDouble() * 0.05)).ToArray();
        float inputScale = 0.0371f;
        var (values, scales) = QuantMath.QuantizeBias(bias, inputScale, weightScales);
        for (int c = 0; c < bias.Length; c++)
        {
            float s = inputScale * weightScales[c];
            Assert.Equal(s, scales[c]);
            Assert.Equal((int)Math.Round(bias[c] / (double)s, MidpointRounding.ToEven), values[c]);
            Assert.True(Math.Abs(values[c] * (double)scales[c] - bias[c]) <= s * 0.5 + 1e-9);
        }

        // One weight scale (per-tensor weights) applies to every channel; ties round to even.
        var (tied, tiedScales) = QuantMath.QuantizeBias(new[] { 0.3125f, 0.4375f, -0.3125f }, 0.5f, new[] { 0.25f });
        Assert.Equal(new[] { 0.125f, 0.125f, 0.125f }, tiedScales);
        Assert.Equal(new[] { 2, 4, -2 }, tied);   // 2.5 -> 2, 3.5 -> 4, -2.5 -> -2

        // Saturates to int32 instead of wrapping.
        var (huge, _) = QuantMath.QuantizeBias(new[] { 1e30f, -1e30f }, 1e-10f, new[] { 1e-10f });
        Assert.Equal(new[] { int.MaxValue, int.MinValue }, huge);
    }
}
