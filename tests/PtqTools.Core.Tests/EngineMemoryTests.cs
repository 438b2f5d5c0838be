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

    /// <summary>x [4,16] float -> DynamicQuantizeLinear -> MatMulInteger with int8 weights "b" [16,24] (zero point
    /// -3) -> "c" int32 [4,24]: a MiniLM-style weight the engine packs (and may release).</summary>
    static ModelProto DynamicMatMul()
    {
        var r = new Random(11);
        var b = new ModelBuilder(13, 8, "dynmatmul").Input("x", 4, 16);
        var w = new sbyte[16 * 24];
        for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-128, 128);
        b.Graph.Initializer.Add(TensorData.FromInt8("b", w, 16, 24));
        b.Graph.Initializer.Add(TensorData.FromInt8("bz", new sbyte[] { -3 }));
        b.Node("DynamicQuantizeLinear", new[] { "x" }, new[] { "q", "qs", "qz" }, "dql");
        b.Node("MatMulInteger", new[] { "q", "b", "qz", "bz" }, new[] { "c" }, "mm");
        b.Graph.Output.Add(ModelBuilder.Value("c", new long[] { 4, 24 }, (int)OnnxDataType.Int32));
        return b.Model;
    }

    static string Save(ModelProto model)
    {
        var file = Path.Combine(Path.GetTempPath(), $"ptq-engine-load-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(file, Google.Protobuf.MessageExtensions.ToByteArray(model));
        return file;
    }

    static Dictionary<string, EngineTensor> Feed(int seed, int h, int w)
    {
        var r = new Random(seed);
        var x = new float[C * h * w];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 8 - 4);
        return new() { ["x"] = EngineTensor.Float(x, 1, C, h, w) };
    }

    /// <summary>An engine that parses its own model (<see cref="IntegerEngine.Load"/>, as Measure-ModelPerformance
    /// runs it) computes the same bits as one on the caller's model, on every path, and holds each convolution weight
    /// once: after the first run the constants it keeps are the model's minus the packed weights.</summary>
    [Theory]
    [InlineData(KernelPath.Scalar)]
    [InlineData(KernelPath.Vector128)]
    [InlineData(KernelPath.Avx2)]
    [InlineData(KernelPath.NativeAvx2)]
    [InlineData(KernelPath.NativeVnni)]
    public void LoadedEngine_ReleasesEachWeightOncePacked_AndComputesTheSameBits(KernelPath path)
    {
        var model = ResidualChain(2);
        var file = Save(model);
        try
        {
            var options = EngineOptions.Default with { Kernels = KernelPaths.Context(path) };
            using var kept = new IntegerEngine(model, options);
            using var loaded = IntegerEngine.Load(file, options);
            long constants = kept.ConstantBytes, weights = 4L * C * C * 9;
            Assert.Equal(constants, loaded.ConstantBytes);
            Assert.Equal(0, loaded.ReleasedWeightBytes);
            for (int seed = 1; seed <= 3; seed++)
            {
                var expected = kept.Run(Feed(seed));
                var actual = loaded.Run(Feed(seed));
                Assert.Equal(expected["y"].Floats, actual["y"].Floats);
                Assert.Equal(expected["flat"].Bytes, actual["flat"].Bytes);
                Assert.Equal(weights, loaded.ReleasedWeightBytes);
                Assert.Equal(constants - weights, loaded.ConstantBytes);
            }
            Assert.All(Enumerable.Range(0, 4), i => Assert.False(loaded.Constants[$"w{i}"].IsHeld));
            // The caller's model and its engine keep everything (the engine never releases what it does not own).
            Assert.Equal(constants, kept.ConstantBytes);
            Assert.Equal(0, kept.ReleasedWeightBytes);
            Assert.All(model.Graph.Initializer, t => Assert.False(t.RawData.IsEmpty && t.Int64Data.Count == 0));

            // A new input shape repacks every layer: the weights are read back from the file, bit for bit, and
            // released again once packed.
            var small = kept.Run(Feed(4, 8, 8));
            var again = loaded.Run(Feed(4, 8, 8));
            Assert.Equal(small["y"].Floats, again["y"].Floats);
            Assert.Equal(weights, loaded.ReleasedWeightBytes);
            // Reading a released weight (replay, RunAll) reads it back too.
            Assert.Equal(kept.Constants["w3"].SBytes, loaded.Constants["w3"].SBytes);
            Assert.True(loaded.Constants["w3"].IsHeld);
        }
        finally { File.Delete(file); }
    }

    /// <summary>MatMulInteger weights (MiniLM's form) are released once packed too, with the same outputs.</summary>
    [Theory]
    [InlineData(KernelPath.Scalar)]
    [InlineData(KernelPath.Avx2)]
    [InlineData(KernelPath.NativeAvx2)]
    [InlineData(KernelPath.NativeVnni)]
    public void LoadedEngine_ReleasesMatMulWeights_AndComputesTheSameBits(KernelPath path)
    {
        var model = DynamicMatMul();
        var file = Save(model);
        try
        {
            var options = EngineOptions.Default with { Kernels = KernelPaths.Context(path) };
            using var kept = new IntegerEngine(model, options);
            using var loaded = IntegerEngine.Load(file, options);
            var r = new Random(5);
            for (int run = 0; run < 2; run++)
            {
                var x = new float[4 * 16];
                for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 6 - 3);
                var feed = new Dictionary<string, EngineTensor> { ["x"] = EngineTensor.Float(x, 4, 16) };
                Assert.Equal(kept.Run(feed)["c"].Ints, loaded.Run(feed)["c"].Ints);
            }
            Assert.Equal(16L * 24, loaded.ReleasedWeightBytes);
            Assert.False(loaded.Constants["b"].IsHeld);
            Assert.True(loaded.Constants["bz"].IsHeld); // a zero point is read every run: never released
        }
        finally { File.Delete(file); }
    }

    /// <summary>A released weight is read back only from the file as it was loaded: a changed file is an error, not
    /// other weights.</summary>
    [Fact]
    public void LoadedEngine_RefusesToReadBackFromAChangedFile()
    {
        var file = Save(ResidualChain(1));
        try
        {
            using var loaded = IntegerEngine.Load(file, Vector128);
            loaded.Run(Feed(1));
            Assert.Equal(2L * C * C * 9, loaded.ReleasedWeightBytes);
            File.WriteAllBytes(file, Google.Protobuf.MessageExtensions.ToByteArray(ResidualChain(1, seed: 2)));
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddMinutes(1));
            var ex = Assert.Throws<PtqException>(() => loaded.Run(Feed(1, 8, 8)));
            Assert.Equal("EngineModelChanged", ex.ErrorId);
        }
        finally { File.Delete(file); }
    }

    /// <summary>The native convolution's quads, dropped once the AVX2 kernel's widened form holds the weights, come
    /// back exactly from it (odd channel counts: padded quads and rows; per-channel zero points; u8 and s8).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NativeConvQuads_DroppedForTheWidenedForm_AreRebuiltExactly(bool unsigned)
    {
        var g = new ConvGeometry(1, 5, 6, 6, 11, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        var r = new Random(9);
        var zp = Enumerable.Range(0, 11).Select(_ => unsigned ? r.Next(0, 256) : r.Next(-128, 128)).ToArray();
        var w = new byte[11 * g.PatchSize];
        r.NextBytes(w);
        var nw = unsigned ? NativeConvWeights.Pack<byte>(w, zp, g, 0) : NativeConvWeights.Pack<sbyte>(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(w), zp, g, 0);
        var quads = nw.Data.ToArray();
        Assert.Equal(0, nw.DropQuads()); // no widened form yet: the quads are the only form
        var wide = nw.Widened.ToArray();
        Assert.Equal(quads.Length, nw.DropQuads());
        Assert.Equal(0, nw.QuadBytes);
        Assert.Equal(quads, nw.Data);
        Assert.Equal(wide, nw.Widened);
    }

    /// <summary>The GEMM form's int16 pairs, dropped on a path that runs the quads, come back exactly from them (odd K
    /// and N: padded quads and blocks; per-column zero points; s8 and u8), and a managed path's drop keeps them.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GemmPairs_DroppedForTheQuads_AreRebuiltExactly(bool unsigned)
    {
        int k = 37, n = 21;
        var r = new Random(13);
        var b = new byte[k * n];
        r.NextBytes(b);
        var zp = Enumerable.Range(0, n).Select(_ => unsigned ? r.Next(0, 256) : r.Next(-128, 128)).ToArray();
        PackedWeights Pack() => unsigned ? PackedWeights.Pack(b, k, n, zp, quads: true)
            : PackedWeights.Pack(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(b), k, n, zp, quads: true);
        var vnni = Pack();
        var pairs = vnni.Data.ToArray();
        Assert.Equal(2L * pairs.Length, vnni.DropUnusedForms(KernelPath.NativeVnni));
        Assert.Equal(0, vnni.DropUnusedForms(KernelPath.NativeVnni));
        Assert.Equal(pairs, vnni.Data);
        Assert.NotNull(vnni.Quads);
        var managed = Pack();
        Assert.True(managed.DropUnusedForms(KernelPath.Avx2) > 0);
        Assert.Null(managed.Quads);
        Assert.Equal(pairs, managed.Data);
    }

    /// <summary>Nodes ONNX Runtime runs that are alike (same op, attributes, input types and constants) share one
    /// session; a large constant such a node reads lives in its session, so an engine loaded from its file drops its
    /// own copy after the node ran, and reads it back when a new input signature compiles the node again.</summary>
    [Fact]
    public void LoadedEngine_SharesSessionsOfAlikeNodes_AndReleasesWhatOnnxRuntimeHolds()
    {
        var r = new Random(17);
        var b = new ModelBuilder(13, 8, "fallback");
        b.Graph.Input.Add(ModelBuilder.Value("ids", new long[] { 3 }, (int)OnnxDataType.Int64));
        var table = new float[2048 * 16];
        for (int i = 0; i < table.Length; i++) table[i] = (float)(r.NextDouble() * 4 - 2);
        b.Init("table", table, 2048, 16);
        b.Node("Gather", new[] { "table", "ids" }, new[] { "e" }, "gather");
        b.Node("Tanh", new[] { "e" }, new[] { "a" }, "tanh1");
        b.Node("Tanh", new[] { "a" }, new[] { "y" }, "tanh2");
        b.Output("y");
        var model = b.Model;
        var file = Save(model);
        try
        {
            using var kept = new IntegerEngine(model, Vector128);
            using var loaded = IntegerEngine.Load(file, Vector128);
            var feed = new Dictionary<string, EngineTensor> { ["ids"] = new(OnnxDataType.Int64, new long[] { 3 }, new long[] { 5, 2047, 0 }) };
            // Run: the three nodes are one ONNX Runtime region, one session holding the table.
            Assert.Equal(kept.Run(feed)["y"].Floats, loaded.Run(feed)["y"].Floats);
            Assert.Equal((1, 0), loaded.FallbackSessions);
            Assert.Equal(table.Length * 4L, loaded.ReleasedWeightBytes);
            Assert.False(loaded.Constants["table"].IsHeld);
            Assert.True(kept.Constants["table"].IsHeld);
            var rank2 = new Dictionary<string, EngineTensor> { ["ids"] = new(OnnxDataType.Int64, new long[] { 1, 3 }, new long[] { 7, 1, 2000 }) };
            Assert.Equal(kept.Run(rank2)["y"].Floats, loaded.Run(rank2)["y"].Floats);
            Assert.Equal((2, 0), loaded.FallbackSessions);
            Assert.False(loaded.Constants["table"].IsHeld);
            // Node by node (RunAll, as the layer analysis runs): the two Tanh nodes are alike and share one session.
            using var nodewise = IntegerEngine.Load(file, Vector128);
            Assert.Equal(kept.Run(feed)["y"].Floats, nodewise.RunAll(feed)["y"].Floats);
            Assert.Equal((3, 2), nodewise.FallbackSessions);
            Assert.False(nodewise.Constants["table"].IsHeld);
        }
        finally { File.Delete(file); }
    }
}

