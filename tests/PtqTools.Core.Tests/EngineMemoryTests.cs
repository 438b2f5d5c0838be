using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>
/// The engine's working memory (issue 16): what it plans to drop and when, what it holds at each node, the kernels'
/// shared scratch and the lazily packed weights — sizes of tensors and buffers, deterministic, not the process's
/// resident memory. Paths are forced (never the host's best); a managed path with im2col scratch is Vector128, which
/// every x64 and ARM64 CPU runs (a CPU without it clamps to Scalar, which needs no scratch: the bounds still hold).
/// </summary>
public class EngineMemoryTests
{
    /// <summary>The engine options these tests run with: the managed Vector128 path, whatever the host.</summary>
    static readonly EngineOptions Vector128 = EngineOptions.Default with { Kernels = KernelPaths.Context(KernelPath.Vector128) };

    const int C = 8, H = 16, W = 16;
    const float S = 0.05f;

    /// <summary>x [1,8,16,16] -> QuantizeLinear -> <paramref name="blocks"/> residual blocks (QLinearConv 3x3,
    /// QLinearConv 3x3, QLinearAdd with the block's input) -> "y" = DequantizeLinear(h) and "flat" = Reshape(h)
    /// (an output sharing the array of an intermediate that is dropped).</summary>
    internal static ModelProto ResidualChain(int blocks, int seed = 1)
    {
        var r = new Random(seed);
        var b = new ModelBuilder(13, 8, $"chain{blocks}").Input("x", 1, C, H, W);
        var g = b.Graph;
        g.Initializer.Add(TensorData.FromFloats("s", new[] { S }));
        g.Initializer.Add(TensorData.FromUInt8("z", new byte[] { 128 }));
        g.Initializer.Add(TensorData.FromFloats("ws", new[] { 0.01f }));
        g.Initializer.Add(TensorData.FromInt8("wz", new sbyte[] { 0 }));
        g.Initializer.Add(new TensorProto { Name = "shape", DataType = (int)OnnxDataType.Int64, Dims = { 2 }, Int64Data = { 1, -1 } });
        b.Node("QuantizeLinear", new[] { "x", "s", "z" }, new[] { "h0" }, "quantize");
        string h = "h0";
        int conv = 0;
        for (int k = 1; k <= blocks; k++)
        {
            string input = h;
            for (int j = 0; j < 2; j++, conv++)
            {
                var w = new sbyte[C * C * 9];
                for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-40, 41);
                g.Initializer.Add(TensorData.FromInt8($"w{conv}", w, C, C, 3, 3));
                b.Node("QLinearConv", new[] { h, "s", "z", $"w{conv}", "ws", "wz", "s", "z" }, new[] { $"c{conv}" }, $"conv{conv}", ("pads", new long[] { 1, 1, 1, 1 }));
                h = $"c{conv}";
            }
            b.Node("QLinearAdd", new[] { h, "s", "z", input, "s", "z", "s", "z" }, new[] { $"h{k}" }, $"add{k}");
            h = $"h{k}";
        }
        b.Node("DequantizeLinear", new[] { h, "s", "z" }, new[] { "y" }, "dequantize");
        b.Node("Reshape", new[] { h, "shape" }, new[] { "flat" }, "reshape");
        b.Output("y", 1, C, H, W);
        g.Output.Add(ModelBuilder.Value("flat", new long[] { 1, C * H * W }, (int)OnnxDataType.UInt8));
        return b.Model;
    }

    static Dictionary<string, EngineTensor> Feed(int seed)
    {
        var r = new Random(seed);
        var x = new float[C * H * W];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 8 - 4);
        return new() { ["x"] = EngineTensor.Float(x, 1, C, H, W) };
    }

    /// <summary>The values alive after each node, from the graph alone: made so far (or given) and read later, or an output.</summary>
    static List<string[]> ExpectedLive(IntegerEngine engine)
    {
        var nodes = engine.Nodes;
        var made = new List<string>(engine.Inputs);
        var live = new List<string[]>();
        for (int i = 0; i < nodes.Count; i++)
        {
            made.AddRange(nodes[i].Output.Where(o => o.Length > 0));
            live.Add(made.Where(v => engine.Outputs.Contains(v) || nodes.Skip(i + 1).Any(n => n.Input.Contains(v)))
                .OrderBy(v => v, StringComparer.Ordinal).ToArray());
        }
        return live;
    }

    [Fact]
    public void Run_DropsEachIntermediateAtItsLastUse()
    {
        using var engine = new IntegerEngine(ResidualChain(3), Vector128, "chain");
        // The plan: a block's input is kept through both convolutions for its Add, then dropped there.
        int add1 = engine.Nodes.ToList().FindIndex(n => n.Name == "add1");
        Assert.Equal(new[] { "c1", "h0" }, engine.ReleasedAfter[add1]);
        int reshape = engine.Nodes.ToList().FindIndex(n => n.Name == "reshape");
        Assert.Equal(new[] { "h3" }, engine.ReleasedAfter[reshape]);
        Assert.DoesNotContain(engine.ReleasedAfter.SelectMany(l => l), v => v is "y" or "flat" or "w0" or "s");

        var trace = engine.MemoryTrace = new EngineMemoryTrace();
        engine.Run(Feed(2));
        var expected = ExpectedLive(engine);
        Assert.Equal(engine.Nodes.Count, trace.Steps.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(expected[i].SequenceEqual(trace.Steps[i].LiveAfter), $"after {trace.Steps[i].Node}: live [{string.Join(",", trace.Steps[i].LiveAfter)}], expected [{string.Join(",", expected[i])}]");
        // Never more than a block's input, a convolution's input and its output (the x float input until quantized).
        long plane = C * H * W;
        Assert.True(trace.PeakHeldBytes <= 4 * plane + 3 * plane, $"held {trace.PeakHeldBytes} bytes");
    }

    [Fact]
    public void PeakWorkingSet_IsBoundedByTheLargestLayer_NotByTheModelsDepth()
    {
        (EngineMemoryTrace Trace, long Packed) Measure(int blocks) => ((Func<(EngineMemoryTrace, long)>)(() =>
        {
            Workspace.Release();
            using var engine = new IntegerEngine(ResidualChain(blocks), Vector128, "chain");
            var trace = engine.MemoryTrace = new EngineMemoryTrace();
            engine.Run(Feed(3));
            Assert.Equal(engine.Nodes.Count, trace.Steps.Count);
            return (trace, engine.PackedWeightBytes);
        }))();
        var shallow = Measure(2);
        var deep = Measure(12);
        Assert.True(shallow.Trace.PeakHeldBytes > 0 && shallow.Packed > 0);
        // Six times the layers: the same values held at the busiest node and the same scratch; only the weights grow.
        Assert.Equal(shallow.Trace.PeakHeldBytes, deep.Trace.PeakHeldBytes);
        Assert.Equal(shallow.Trace.ScratchBytes, deep.Trace.ScratchBytes);
        Assert.Equal(shallow.Trace.PeakWorkingSetBytes, deep.Trace.PeakWorkingSetBytes);
        Assert.Equal(6 * shallow.Packed, deep.Packed);
        // Held values: at most the largest node's own buffers plus the one skip value a residual block keeps.
        long plane = C * H * W;
        Assert.True(deep.Trace.PeakHeldBytes <= deep.Trace.LargestNodeBytes + plane, $"held {deep.Trace.PeakHeldBytes}, largest node {deep.Trace.LargestNodeBytes}");
        // Scratch: one 3x3 convolution's im2col (int16, K padded to pairs), GEMM output and int32 sums — once.
        long pixels = H * W, kp2 = (C * 9 + 1) / 2 * 2;
        long oneLayer = pixels * kp2 * 2 + pixels * C * 4 + plane * 4;
        Assert.True(deep.Trace.ScratchBytes <= oneLayer, $"scratch {deep.Trace.ScratchBytes} > one layer's {oneLayer}");
    }

    [Fact]
    public void RecycledArrays_LeaveEveryRunsOutputsExact()
    {
        var model = ResidualChain(4);
        using var engine = new IntegerEngine(model, Vector128, "chain");
        using var reference = new IntegerEngine(model, Vector128, "chain");
        {
            var first = engine.Run(Feed(4));
            var firstFlat = (byte[])first["flat"].Bytes.Clone();
            var firstY = (float[])first["y"].Floats.Clone();
            long pooled = engine.RecycledBytes;
            Assert.True(pooled > 0, "nothing was recycled");
            for (int seed = 5; seed < 8; seed++)
            {
                var run = engine.Run(Feed(seed));
                var all = reference.RunAll(Feed(seed)); // nothing dropped or recycled
                Assert.Equal(all["y"].Floats, run["y"].Floats);
                Assert.Equal(all["flat"].Bytes, run["flat"].Bytes);
                // The pool holds what one run drops; it does not grow with runs.
                Assert.Equal(pooled, engine.RecycledBytes);
            }
            // The first run's outputs, one of them sharing a dropped intermediate's array, were never reused.
            Assert.Equal(firstFlat, first["flat"].Bytes);
            Assert.Equal(firstY, first["y"].Floats);
        }
    }

    [Theory]
    [InlineData(KernelPath.Scalar)]
    [InlineData(KernelPath.Vector128)]
    [InlineData(KernelPath.Avx2)]
    [InlineData(KernelPath.NativeVnni)]
    public void ConvWeights_ArePackedOnFirstUse_OnlyInTheFormThePathRuns(KernelPath path)
    {
        var g = new ConvGeometry(1, 16, 10, 10, 32, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        var r = new Random(6);
        var w = new sbyte[32 * g.PatchSize];
        for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-128, 128);
        var x = new byte[16 * 10 * 10]; r.NextBytes(x);
        var packed = PackedConvWeights.Pack(w, new[] { 0 }, g);
        Assert.Equal(0, packed.PackedBytes);
        var y = new int[32 * 100];
        var expected = new int[y.Length];
        QConv.Reference<byte, sbyte>(x, 7, w, new[] { 0 }, g, expected);
        QConv.Run<byte>(KernelPaths.Context(path), x, 7, packed, y);
        Assert.Equal(expected, y);
        // The scalar path reads the int32 weights (4 bytes each) and nothing else; every other path a 1-byte (native)
        // or 2-byte (managed) form — 3 with the VNNI quads a library without the direct convolution runs — never the
        // int32 copy besides.
        if (path == KernelPath.Scalar || KernelDispatch.Supported().Max() == KernelPath.Scalar) Assert.Equal(4L * w.Length, packed.PackedBytes);
        else Assert.InRange(packed.PackedBytes, w.Length, 3L * w.Length + 8192);
    }
}
