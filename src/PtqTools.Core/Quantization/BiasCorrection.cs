namespace PtqTools.Core.Quantization;

/// <summary>
/// Bias correction (Nagel et al., "Data-Free Quantization", 2019, with the calibrated input mean in place of
/// BatchNormalization's): rounding the weights shifts each output channel's expected value by
/// E[x] * sum_j (W - W_q)_cj, and adding that shift to the float bias before it is quantized removes it. The
/// calibration statistics hold one mean per tensor, so E[x] is the tensor's mean for every input channel (and zero
/// padding at the borders is ignored): a first-order correction, exact for inputs of constant mean.
/// </summary>
public static class BiasCorrection
{
    /// <summary>Per output channel (slices along <paramref name="axis"/> of <paramref name="dims"/>), the sum of
    /// the weight's rounding errors W - (q - zp) * scale; <paramref name="scaleAxis"/> is the axis the scales run
    /// along (null for one scale).</summary>
    public static double[] ErrorSums(ReadOnlySpan<float> w, long[] dims, int axis, int[] q, float[] scales, int[] zeroPoints, int? scaleAxis)
    {
        long Inner(int a) { long n = 1; for (int d = a + 1; d < dims.Length; d++) n *= dims[d]; return n; }
        int channels = checked((int)dims[axis]);
        long inner = Inner(axis);
        long scaleInner = scaleAxis is int sa ? Inner(sa) : 1;
        int scaleCount = scales.Length;
        var sums = new double[channels];
        for (int i = 0; i < w.Length; i++)
        {
            int s = scaleAxis is null ? 0 : (int)(i / scaleInner % scaleCount);
            double back = (q[i] - zeroPoints[s]) * (double)scales[s];
            sums[(int)(i / inner % channels)] += w[i] - back;
        }
        return sums;
    }

    /// <summary>The bias with the expected output shift of the rounded weights added back.</summary>
    public static float[] Correct(ReadOnlySpan<float> bias, double[] errorSums, double inputMean)
    {
        if (bias.Length != errorSums.Length)
            throw new ArgumentException($"The bias has {bias.Length} values for {errorSums.Length} output channels.", nameof(bias));
        var result = new float[bias.Length];
        for (int c = 0; c < bias.Length; c++) result[c] = (float)(bias[c] + inputMean * errorSums[c]);
        return result;
    }
}
