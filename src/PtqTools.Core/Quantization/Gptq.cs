using System.Numerics;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Quantization;

/// <summary>
/// GPTQ (Frantar et al., 2023) for the 4-bit block-wise weights of MatMulNBits. For a MatMul Y = X W with a constant
/// [K, N] weight, H = 2 X^T X over the calibration inputs of that MatMul (in double) measures how much an error on
/// each input row of W costs in Y. The K rows are quantized in order; each row's rounding error, divided by the
/// diagonal of U (the upper Cholesky factor of H^-1, H dampened by <see cref="Damping"/> of its mean diagonal), is fed back into the
/// rows not yet quantized (W[j] -= U[r, j] err), so that they absorb it. Each block's scale and zero point are those
/// of round-to-nearest (<see cref="QuantMath.BlockParams"/>) over the block's error-corrected rows, computed when the
/// block is reached. The fast path defers the feedback to rows past the current block until the block is done (GPTQ's
/// lazy batch updates) and applies it then in the same order, so its codes are bit-identical to the row-by-row
/// reference (<see cref="QuantizeReference"/>).
/// </summary>
public static class Gptq
{
    /// <summary>The damping added to H's diagonal, as a share of its mean diagonal. GPTQ's paper uses 1% with
    /// 128 x 2048 calibration tokens; with 32-64 sentences (1-2 thousand rows, fewer than MiniLM's K = 1536) H is
    /// rank-deficient and 1% over-fits the calibration text: on MiniLM's held-out inputs 1% gave embedding cosines
    /// below RTN's (block 64: 0.958-0.976), 10% 0.967-0.981, 30% 0.970-0.978 (docs/benchmarks.md). Larger damping
    /// tends to RTN (H -> diagonal, no feedback).</summary>
    public const double Damping = 0.3;

    /// <summary>Sum of x x^T over the rows of one tensor (K wide), in double: the upper triangle as it is accumulated
    /// (<see cref="Add"/>), full after <see cref="Finish"/>. Rows are buffered and added in blocks, each H row held in
    /// cache while the block's rows pass over it; every H element still receives its terms in row order, so the sum is
    /// bit-identical to the plain loop (<see cref="AddReference"/>).</summary>
    public sealed class Hessian
    {
        const int BufferRows = 128;
        readonly double[] _buffer;
        int _buffered;

        public Hessian(int k)
        {
            K = k;
            H = new double[(long)k * k];
            _buffer = new double[(long)BufferRows * k];
        }

        public int K { get; }
        public double[] H { get; }
        public long Rows { get; private set; }

        /// <summary>Adds the rows of <paramref name="x"/> (length a multiple of K).</summary>
        public void Add(ReadOnlySpan<float> x, int threads = 1)
        {
            if (x.Length % K != 0) throw new ArgumentException($"{x.Length} values are not rows of {K}.", nameof(x));
            for (int at = 0; at < x.Length; at += K)
            {
                var row = x.Slice(at, K);
                var dest = _buffer.AsSpan(_buffered * K, K);
                for (int i = 0; i < K; i++) dest[i] = row[i];
                Rows++;
                if (++_buffered == BufferRows) Flush(threads);
            }
        }

        void Flush(int threads)
        {
            int rows = _buffered, k = K;
            var h = H;
            var buffer = _buffer;
            void RowOf(int i)
            {
                var hi = h.AsSpan(i * k + i, k - i);
                for (int r = 0; r < rows; r++)
                {
                    var x = buffer.AsSpan(r * k, k);
                    double xi = x[i];
                    // A zero x_i adds exact zeros (the inputs are checked finite): skipping them leaves the sum as it is.
                    if (xi != 0) Axpy(hi, xi, x[i..]);
                }
            }
            if (threads > 1) Parallel.For(0, k, new ParallelOptions { MaxDegreeOfParallelism = threads }, RowOf);
            else for (int i = 0; i < k; i++) RowOf(i);
            _buffered = 0;
        }

        /// <summary>The plain accumulation the fast path is held to: every row, every upper element, in row order.</summary>
        public void AddReference(ReadOnlySpan<float> x)
        {
            for (int at = 0; at < x.Length; at += K)
            {
                for (int i = 0; i < K; i++)
                    for (int j = i; j < K; j++) H[(long)i * K + j] += (double)x[at + i] * x[at + j];
                Rows++;
            }
        }

        /// <summary>Adds what is buffered and mirrors the upper triangle; returns H (the factor 2 of 2 X^T X cancels in
        /// GPTQ's update and is left out).</summary>
        public double[] Finish(int threads = 1)
        {
            if (_buffered > 0) Flush(threads);
            for (int i = 0; i < K; i++)
                for (int j = i + 1; j < K; j++) H[(long)j * K + i] = H[(long)i * K + j];
            return H;
        }
    }

    /// <summary>y += a x, element by element (a mul and an add, never fused: the reference and fast paths match).</summary>
    static void Axpy(Span<double> y, double a, ReadOnlySpan<double> x)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && y.Length >= Vector<double>.Count)
        {
            var va = new Vector<double>(a);
            for (; i <= y.Length - Vector<double>.Count; i += Vector<double>.Count)
            {
                var vy = new Vector<double>(y[i..]);
                (vy + va * new Vector<double>(x[i..])).CopyTo(y[i..]);
            }
        }
        for (; i < y.Length; i++) y[i] += a * x[i];
    }

    static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        int i = 0;
        double sum = 0;
        if (Vector.IsHardwareAccelerated && a.Length >= Vector<double>.Count)
        {
            var acc = Vector<double>.Zero;
            for (; i <= a.Length - Vector<double>.Count; i += Vector<double>.Count)
                acc += new Vector<double>(a[i..]) * new Vector<double>(b[i..]);
            sum = Vector.Sum(acc);
        }
        for (; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>The upper Cholesky factor U of H^-1 (U^T U = H^-1), row-major K x K, with H dampened by
    /// <see cref="Damping"/> of its mean diagonal; inputs that were always zero (H[i,i] = 0) get 1 on the diagonal
    /// (they are listed in <paramref name="dead"/>: their weight rows do not matter and are quantized as zero). With
    /// H = R R^T (R upper, a Cholesky factorization of H in reversed order), U = R^-1. If the dampened H is still
    /// not positive definite in floating point, the damping grows tenfold, up to three times.</summary>
    public static double[] InverseFactor(double[] hessian, int k, out bool[] dead)
    {
        dead = new bool[k];
        double mean = 0;
        for (int i = 0; i < k; i++) mean += hessian[(long)i * k + i];
        mean /= k;
        if (!(mean > 0) || !double.IsFinite(mean)) mean = 1;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            double damp = Damping * Math.Pow(10, attempt) * mean;
            // Reversed: F[i, j] = H[k-1-i, k-1-j], so that its lower Cholesky factor M gives R = P M P.
            var m = new double[(long)k * k];
            for (int i = 0; i < k; i++)
                for (int j = 0; j <= i; j++) m[(long)i * k + j] = hessian[(long)(k - 1 - i) * k + (k - 1 - j)];
            for (int i = 0; i < k; i++)
            {
                dead[k - 1 - i] = m[(long)i * k + i] == 0;
                m[(long)i * k + i] = dead[k - 1 - i] ? 1 : m[(long)i * k + i] + damp;
            }
            if (!CholeskyInPlace(m, k)) continue;
            var inv = LowerInverse(m, k);
            var u = new double[(long)k * k];
            for (int i = 0; i < k; i++)
                for (int j = i; j < k; j++) u[(long)i * k + j] = inv[(long)(k - 1 - i) * k + (k - 1 - j)];
            return u;
        }
        throw new PtqException("GptqHessianNotPositiveDefinite", PtqErrorKind.InvalidData,
            "The calibration inputs of a MatMul give a Hessian that is not positive definite even with 10% damping; use -WeightMethod RTN or HQQ for it.", k);
    }

    /// <summary>Lower Cholesky factor of the lower triangle of <paramref name="a"/>, in place; false if not positive definite.</summary>
    static bool CholeskyInPlace(double[] a, int k)
    {
        for (int i = 0; i < k; i++)
        {
            var ri = a.AsSpan(i * k, k);
            for (int j = 0; j <= i; j++)
            {
                double s = ri[j] - Dot(ri[..j], a.AsSpan(j * k, j));
                if (j == i)
                {
                    if (!(s > 0) || !double.IsFinite(s)) return false;
                    ri[i] = Math.Sqrt(s);
                }
                else ri[j] = s / a[(long)j * k + j];
            }
        }
        return true;
    }

    /// <summary>The inverse of a lower-triangular matrix, row by row: X[i] = (e_i - sum_{c &lt; i} L[i, c] X[c]) / L[i, i].</summary>
    static double[] LowerInverse(double[] l, int k)
    {
        var x = new double[(long)k * k];
        for (int i = 0; i < k; i++)
        {
            var xi = x.AsSpan(i * k, i + 1);
            xi[i] = 1;
            for (int c = 0; c < i; c++)
            {
                double a = l[(long)i * k + c];
                if (a != 0) Axpy(xi[..(c + 1)], -a, x.AsSpan(c * k, c + 1));
            }
            double d = 1 / l[(long)i * k + i];
            for (int c = 0; c <= i; c++) xi[c] *= d;
        }
        return x;
    }

    /// <summary>GPTQ's codes of a [K, N] weight in MatMulNBits' layout (as <see cref="QuantMath.QuantizeBlockwise"/>),
    /// with <paramref name="u"/> from <see cref="InverseFactor"/>. Lazy batches: the feedback of a block's rows to the
    /// rows past it is applied once the block is done, row by row of the destination (spread over
    /// <paramref name="threads"/>; each row's updates come in the same order whatever the split).</summary>
    public static (byte[] Codes, float[] Scales, byte[]? ZeroPoints) Quantize(ReadOnlySpan<float> weight, int k, int n, double[] u, bool[] dead,
        int blockSize, bool symmetric, int threads = 1, CancellationToken cancel = default) =>
        Run(weight, k, n, u, dead, blockSize, symmetric, lazy: true, threads, cancel);

    /// <summary>The plain GPTQ the fast path is held to: each row's error goes to every later row at once.</summary>
    public static (byte[] Codes, float[] Scales, byte[]? ZeroPoints) QuantizeReference(ReadOnlySpan<float> weight, int k, int n, double[] u, bool[] dead,
        int blockSize, bool symmetric) =>
        Run(weight, k, n, u, dead, blockSize, symmetric, lazy: false, 1, default);

    static (byte[] Codes, float[] Scales, byte[]? ZeroPoints) Run(ReadOnlySpan<float> weight, int k, int n, double[] u, bool[] dead,
        int blockSize, bool symmetric, bool lazy, int threads, CancellationToken cancel)
    {
        if (weight.Length != (long)k * n) throw new ArgumentException($"The weight has {weight.Length} values, not {k}x{n}.", nameof(weight));
        var w = new double[(long)k * n];
        for (int i = 0; i < w.Length; i++)
        {
            float v = weight[i];
            if (!float.IsFinite(v)) throw new PtqException("WeightNotFinite", PtqErrorKind.InvalidData, "A weight tensor holds NaN or infinity.", i);
            w[i] = dead[i / n] ? 0 : v;
        }
        var output = new BlockwiseCodes(k, n, blockSize, symmetric);
        var errors = new double[(long)blockSize * n];
        var block = new float[blockSize];
        var parameters = new QuantParams[n];
        for (int b = 0; b < output.Blocks; b++)
        {
            cancel.ThrowIfCancellationRequested();
            int start = b * blockSize, end = Math.Min(k, start + blockSize);
            for (int col = 0; col < n; col++)
            {
                for (int r = start; r < end; r++) block[r - start] = (float)w[(long)r * n + col];
                var (scale, zp) = QuantMath.BlockParams(block.AsSpan(0, end - start), output.Levels, hqq: false, symmetric);
                output.SetBlock(col, b, scale, zp);
                parameters[col] = new QuantParams(scale, zp);
            }
            for (int r = start; r < end; r++)
            {
                var row = w.AsSpan(r * n, n);
                var err = errors.AsSpan((r - start) * n, n);
                double d = u[(long)r * k + r];
                for (int col = 0; col < n; col++)
                {
                    int q = QuantMath.Quantize((float)row[col], parameters[col], 0, output.Levels);
                    output.SetCode(r, col, q);
                    err[col] = (row[col] - QuantMath.Dequantize(q, parameters[col])) / d;
                }
                int last = lazy ? end : k;
                for (int j = r + 1; j < last; j++) Axpy(w.AsSpan(j * n, n), -u[(long)r * k + j], err);
            }
            if (!lazy || end == k) continue;
            void Rest(int j)
            {
                var dest = w.AsSpan(j * n, n);
                for (int r = start; r < end; r++) Axpy(dest, -u[(long)r * k + j], errors.AsSpan((r - start) * n, n));
            }
            if (threads > 1) Parallel.For(end, k, new ParallelOptions { MaxDegreeOfParallelism = threads, CancellationToken = cancel }, Rest);
            else for (int j = end; j < k; j++) Rest(j);
        }
        return output.Result();
    }

    /// <summary>H of each weight of <paramref name="layers"/> (MatMuls with a constant [K, N] weight), from one pass of
    /// the float model in ONNX Runtime over <paramref name="data"/> with the MatMuls' inputs exposed as extra outputs
    /// (the calibrator's runner; MatMuls that read one tensor, as Q, K and V do, share its H). A weight read by several
    /// MatMuls gets the sum of their inputs' H.</summary>
    public static Dictionary<string, double[]> Hessians(PreparedModel prepared, ModelProto model, IReadOnlyCollection<string> layers, PtqDataSet data,
        int threads, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        var consumer = new HessianConsumer(model, layers, threads);
        TensorTap.Collect(model, prepared.SourcePath, data, threads, new[] { consumer }, progress, cancel);
        return consumer.Finish(data);
    }

    /// <summary>The Hessians of the MatMul inputs of <c>layers</c>, summed over the runs it is fed.</summary>
    public sealed class HessianConsumer : ITensorConsumer
    {
        readonly List<NodeProto> _nodes;
        readonly Dictionary<string, int> _width = new(StringComparer.Ordinal);
        readonly Hessian[] _hessians;
        readonly int _threads;
        int _samples;

        public HessianConsumer(ModelProto model, IReadOnlyCollection<string> layers, int threads)
        {
            var view = new GraphView(model.Graph);
            _nodes = model.Graph.Node.Where(n => layers.Contains(n.Name) && n.OpType == "MatMul").ToList();
            foreach (var n in _nodes) _width[n.Input[0]] = checked((int)view.Initializers[n.Input[1]].Dims[0]);
            Tensors = _width.Keys.OrderBy(t => t, StringComparer.Ordinal).ToArray();
            _hessians = Tensors.Select(t => new Hessian(_width[t])).ToArray();
            _threads = threads;
        }

        public IReadOnlyList<string> Tensors { get; }

        public void Add(Sample sample, TapValues outputs)
        {
            for (int t = 0; t < Tensors.Count; t++)
            {
                var name = Tensors[t];
                var values = outputs.Span(t);
                if (values.Length % _width[name] != 0)
                    throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData, $"Tensor '{name}' has {values.Length} values on sample '{sample.Id}', not rows of {_width[name]}.", name);
                foreach (var v in values)
                    if (!float.IsFinite(v))
                        throw new PtqException("ActivationNotFinite", PtqErrorKind.InvalidData, $"Tensor '{name}' holds NaN or infinity on sample '{sample.Id}'.", name);
                _hessians[t].Add(values, _threads);
            }
            _samples += Math.Max(1, sample.BatchCount);
        }

        /// <summary>Per weight, the sum of the Hessians of the inputs of the MatMuls that read it.</summary>
        public Dictionary<string, double[]> Finish(PtqDataSet data)
        {
            if (_samples == 0)
                throw new PtqException("NoValidSamples", PtqErrorKind.InvalidData, $"The data set '{data.Name}' gave no samples for GPTQ.", data.Name);
            var byInput = Tensors.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => _hessians[p.i].Finish(_threads), StringComparer.Ordinal);
            var result = new Dictionary<string, double[]>(StringComparer.Ordinal);
            foreach (var n in _nodes)
            {
                var h = byInput[n.Input[0]];
                if (!result.TryGetValue(n.Input[1], out var sum)) result[n.Input[1]] = h;
                else if (!ReferenceEquals(sum, h))
                {
                    var copy = sum.ToArray();
                    for (int i = 0; i < copy.Length; i++) copy[i] += h[i];
                    result[n.Input[1]] = copy;
                }
            }
            return result;
        }
    }
}
