using PtqTools.Core.Calibration;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The vectorized observer passes held to their scalar references, bit for bit.</summary>
public sealed class ObserverKernelTests
{
    /// <summary>Values of several kinds: a ReLU spike at zero (runs of one bin), signed zeros, outliers, far from zero.</summary>
    static float[] Values(int seed, int n, string kind)
    {
        var random = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            v[i] = kind switch
            {
                "relu" => (float)Math.Max(0, g * 3),
                "zeros" => random.Next(3) switch { 0 => 0f, 1 => -0f, _ => (float)g },
                "offset" => (float)(1e6 + g),
                "tiny" => (float)(g * 1e-30),
                _ => (float)(g * (i % 499 == 0 ? 50 : 1)),
            };
        }
        return v;
    }

    public static TheoryData<int, string> Cases()
    {
        var data = new TheoryData<int, string>();
        foreach (var n in new[] { 0, 1, 15, 16, 17, 31, 2047, 2048, 2049, 100_003 })
            foreach (var kind in new[] { "normal", "relu", "zeros", "offset", "tiny" })
                data.Add(n, kind);
        return data;
    }

    static void SameMoments(TensorMoments expected, TensorMoments actual, string path)
    {
        Assert.True(expected.Finite == actual.Finite, $"{path}: finite");
        // Bit for bit: -0 and +0 are told apart, and the sums are the same doubles.
        Assert.True(BitConverter.SingleToInt32Bits(expected.Min) == BitConverter.SingleToInt32Bits(actual.Min), $"{path}: min {expected.Min} vs {actual.Min}");
        Assert.True(BitConverter.SingleToInt32Bits(expected.Max) == BitConverter.SingleToInt32Bits(actual.Max), $"{path}: max {expected.Max} vs {actual.Max}");
        Assert.True(BitConverter.DoubleToInt64Bits(expected.Sum) == BitConverter.DoubleToInt64Bits(actual.Sum), $"{path}: sum {expected.Sum:R} vs {actual.Sum:R}");
        Assert.True(BitConverter.DoubleToInt64Bits(expected.SumSquares) == BitConverter.DoubleToInt64Bits(actual.SumSquares), $"{path}: sum of squares");
        Assert.Equal(expected.Length, actual.Length);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MomentsMatchTheReference(int n, string kind)
    {
        var v = Values(n + kind.Length, n, kind);
        var reference = ObserverKernels.MomentsReference(v);
        SameMoments(reference, ObserverKernels.Moments(v), ObserverKernels.Path);
        SameMoments(reference, ObserverKernels.Moments512(v), "Vector512");
        SameMoments(reference, ObserverKernels.Moments256(v), "Vector256");
        if (n > 0)
        {
            // The scalar reference is the plain definition: the exact extremes and (up to rounding) the sums.
            Assert.Equal(v.Min(), reference.Min);
            Assert.Equal(v.Max(), reference.Max);
            Assert.Equal(v.Sum(x => (double)x), reference.Sum, Math.Abs(reference.Sum) * 1e-12 + 1e-300);
        }
    }

    [Theory]
    [InlineData(float.NaN, 0)]
    [InlineData(float.PositiveInfinity, 16)]
    [InlineData(float.NegativeInfinity, 40)]
    [InlineData(float.NaN, 999)]
    public void NonFiniteValuesAreFoundAnywhere(float bad, int at)
    {
        var v = Values(1, 1000, "normal");
        v[at] = bad;
        Assert.False(ObserverKernels.MomentsReference(v).Finite);
        Assert.False(ObserverKernels.Moments(v).Finite);
        Assert.False(ObserverKernels.Moments512(v).Finite);
        Assert.False(ObserverKernels.Moments256(v).Finite);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void BinningMatchesTheReference(int n, string kind)
    {
        var v = Values(n * 7 + kind.Length, n, kind);
        if (n == 0) return;
        var m = ObserverKernels.MomentsReference(v);
        int e = StreamingHistogram.ExponentFor(m.Min, m.Max);
        double inv = Math.ScaleB(1.0, -e);
        long origin = (long)Math.Floor(m.Min * inv) - 3;
        var expected = new long[StreamingHistogram.MaxBins];
        var actual = new long[StreamingHistogram.MaxBins];
        var vector = new long[StreamingHistogram.MaxBins];
        // Counts already present are added to, not replaced.
        expected[5] = actual[5] = vector[5] = 11;
        ObserverKernels.BinReference(v, inv, origin, expected);
        ObserverKernels.Bin(v, inv, origin, actual, m.Min, m.Max);
        ObserverKernels.BinVector(v, inv, origin, vector, m.Min, m.Max);
        Assert.Equal(expected, actual);
        Assert.Equal(expected, vector);
        Assert.Equal(n + 11, vector.Sum());
        // A second call on the same thread starts from clean tables.
        ObserverKernels.BinVector(v, inv, origin, vector, m.Min, m.Max);
        ObserverKernels.BinReference(v, inv, origin, expected);
        Assert.Equal(expected, vector);
    }

    [Fact]
    public void BinningRefusesBinsOutsideTheHistogram()
    {
        var v = new float[4096];
        v[0] = 100;
        Assert.Throws<ArgumentOutOfRangeException>(() => ObserverKernels.BinVector(v, 1.0, 0, new long[StreamingHistogram.MaxBins], 0, 10000));
    }
}
