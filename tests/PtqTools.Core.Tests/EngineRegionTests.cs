using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The engine's runs by regions (<see cref="OrtRegionPlan"/>: connected nodes for ONNX Runtime as one
/// session each) and its float Mul (<see cref="FloatOps"/>).</summary>
public class EngineRegionTests(ITestOutputHelper output)
{
    static bool SameBits(float[] a, float[] b) =>
        a.Length == b.Length && a.Select(BitConverter.SingleToInt32Bits).SequenceEqual(b.Select(BitConverter.SingleToInt32Bits));

    public static TheoryData<long[], long[]> MulShapes => new()
    {
        { new long[] { 2, 3, 37 }, new long[] { 2, 3, 37 } },   // same shape (vector product, odd tail)
        { new long[] { 2, 3, 37 }, new long[] { 1 } },          // scalar
        { new long[] { 1 }, new long[] { 4, 19 } },             // scalar first
        { new long[] { 1, 7, 384 }, new long[] { 384 } },       // LayerNorm's scale: a row broadcast
        { new long[] { 2, 5, 33 }, new long[] { 5, 1 } },       // a column broadcast: row times scalar
        { new long[] { 2, 1, 9 }, new long[] { 1, 4, 1 } },     // both broadcast
        { new long[] { 3, 1 }, new long[] { 1, 6 } },           // outer product
        { new long[] { 0, 3 }, new long[] { 3 } },              // empty
    };

    [Theory]
    [MemberData(nameof(MulShapes))]
    public void FloatMul_Broadcasting_BitForBit_AsScalarReference_AndOnnxRuntime(long[] aDims, long[] bDims)
    {
        var r = new Random(5);
        var a = Check.RandomFloats(r, (int)TensorData.ElementCount(aDims), 3f);
        var b = Check.RandomFloats(r, (int)TensorData.ElementCount(bDims), 3f);
        if (a.Length > 2) { a[0] = float.NaN; a[1] = float.PositiveInfinity; a[2] = -0f; }
        var dims = FloatOps.BroadcastDims(aDims, bDims)!;
        var expected = new float[TensorData.ElementCount(dims)];
        FloatOps.MultiplyReference(a, aDims, b, bDims, dims, expected);
        var fast = new float[expected.Length];
        FloatOps.Multiply(a, aDims, b, bDims, dims, fast);
        Assert.True(SameBits(expected, fast), "the vector path differs from the scalar reference");
        // Through the engine's op table, and as ONNX Runtime computes Mul: one IEEE product per element, bit for bit.
        var builder = new ModelBuilder(13, 7, "mul").Input("a", aDims).Input("b", bDims).Node("Mul", new[] { "a", "b" }, new[] { "y" }, "mul").Output("y", dims);
        using var engine = new IntegerEngine(builder.Model, "mul");
        var feed = new Dictionary<string, EngineTensor> { ["a"] = EngineTensor.Float(a, aDims), ["b"] = EngineTensor.Float(b, bDims) };
        var mine = engine.Run(feed)["y"];
        Assert.Equal(dims, mine.Dims);
        Assert.True(SameBits(expected, mine.Floats), "the engine's Mul differs from the scalar reference");
        using var ort = OrtReference.Session(builder.Bytes(), GraphOptimizationLevel.ORT_DISABLE_ALL);
        Assert.True(SameBits(expected, OrtReference.Run(ort, feed)["y"].Floats), "ONNX Runtime's Mul differs from the scalar reference");
        Assert.Null(FloatOps.BroadcastDims(new long[] { 2, 3 }, new long[] { 4 }));
    }

    [Fact]
    public void SyntheticBlock_RunsByRegions_BitForBit_AsNodeByNode_AndOnnxRuntime()
    {
        var model = EngineFallbackTests.TransformerBlock();
        using var engine = new IntegerEngine(model, "block");
        var plan = engine.RegionPlan;
        var (regions, inRegions) = engine.OnnxRuntimeRegions;
        output.WriteLine($"{engine.Nodes.Count} nodes; {regions} regions holding {inRegions} nodes: " +
                         string.Join(" | ", plan.Regions.Select(g => string.Join(",", g.Nodes.Select(n => n.Name)))));
        Assert.True(regions >= 1 && regions < engine.Nodes.Count(OrtNodeFallback.Handles), "the nodes for ONNX Runtime are not grouped");
        // No quantized op in a region; every node in exactly one unit.
        Assert.DoesNotContain(plan.Regions.SelectMany(g => g.Nodes), n => OrtNodeFallback.IsQuantizedOp(n.OpType));
        var placed = plan.Units.SelectMany(u => u.Region?.Nodes ?? new[] { u.Node! }).ToList();
        Assert.Equal(engine.Nodes.Count, placed.Count);
        Assert.Equal(engine.Nodes.ToHashSet(ReferenceEqualityComparer.Instance).Count, placed.ToHashSet(ReferenceEqualityComparer.Instance).Count);
        // LayerNorm's output h feeds the quantized MatMul and, later, the context MatMul: one region holding both
        // would need its own output back through the engine (a cycle).
        var lnRegion = plan.Regions.Single(g => g.Nodes.Any(n => n.Name == "ln_beta"));
        Assert.DoesNotContain(lnRegion.Nodes, n => n.Name == "context");
        Assert.Contains("h", lnRegion.Outputs);
        using var asWritten = OrtReference.Session(model.ToByteArray(), GraphOptimizationLevel.ORT_DISABLE_ALL);
        var r = new Random(3);
        for (int run = 0; run < 3; run++)
        {
            var ids = Enumerable.Range(0, 12).Select(i => i >= 12 - run ? 0L : r.Next(1, 50)).ToArray();
            var feed = new Dictionary<string, EngineTensor> { ["ids"] = new(OnnxDataType.Int64, new long[] { 1, 12 }, ids) };
            var byRegions = engine.Run(feed);
            var byNodes = engine.RunAll(feed);
            var ort = OrtReference.Run(asWritten, feed);
            Assert.True(SameBits(byNodes["y"].Floats, byRegions["y"].Floats), "regions differ from node by node");
            Assert.True(SameBits(ort["y"].Floats, byRegions["y"].Floats), "regions differ from ONNX Runtime computing the graph as written");
            Assert.Equal(ort["isPad"].Bools, byRegions["isPad"].Bools);
        }
    }

    [Fact]
    public void MiniLmGroundTruth_RunsByRegions_BitForBit_AsNodeByNode()
    {
        var path = Path.Combine(TestPaths.GroundTruth, "minilm_dynamic", "model.onnx");
        if (!File.Exists(path)) throw new InvalidOperationException($"'{path}' is missing (see ../shared/ground-truth/README.md).");
        var model = OnnxModelIO.Load(path);
        using var engine = new IntegerEngine(model, "minilm_dynamic");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (regions, inRegions) = engine.OnnxRuntimeRegions;
        double first = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var again = OrtRegionPlan.Build(engine.Nodes, n => n.Input.Where(i => i.Length > 0), engine.Outputs.ToArray(), engine.Constants);
        output.WriteLine($"plan built in {first:F1} ms (first, with JIT), {clock.Elapsed.TotalMilliseconds:F1} ms (again)");
        Assert.Equal(regions, again.Regions.Count);
        int forOrt = engine.Nodes.Count(OrtNodeFallback.Handles);
        output.WriteLine($"{engine.Nodes.Count} nodes, {forOrt} for ONNX Runtime; {regions} regions holding {inRegions} nodes; " +
                         $"{engine.RegionPlan.Units.Count} units per run");
        Assert.True(regions * 4 < forOrt, $"{regions} regions for {forOrt} nodes");
        var folder = Path.GetDirectoryName(path)!;
        foreach (var set in Directory.GetDirectories(folder, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).Take(2))
        {
            var feed = new Dictionary<string, EngineTensor>();
            for (int i = 0; i < engine.Inputs.Count; i++) feed[engine.Inputs[i]] = EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(set, $"input_{i}.pb")));
            var byRegions = engine.Run(feed);
            var byNodes = engine.RunAll(feed);
            foreach (var o in engine.Outputs)
                Assert.True(SameBits(byNodes[o].ToFloats(), byRegions[o].ToFloats()), $"{Path.GetFileName(set)}: output {o} differs between regions and node by node");
        }
        // The query, key and value projections quantize one input three times: computed once, taken twice.
        var shared = engine.RegionPlan.Units.Where(u => u.SameAs is not null).ToList();
        output.WriteLine($"{shared.Count} nodes take an earlier node's outputs: {string.Join(", ", shared.Select(u => u.Node!.OpType).Distinct())}; " +
                         $"region inputs read in place: {engine.RegionPlan.Regions.Sum(g => g.ReadInPlace.Count(b => b))} of {engine.RegionPlan.Regions.Sum(g => g.Inputs.Length)}");
        Assert.NotEmpty(shared);
        Assert.All(shared, u => Assert.False(OrtNodeFallback.Handles(u.Node!)));
        Assert.Contains(engine.RegionPlan.Regions, g => g.ReadInPlace.Any(b => b));
        // The regions' sessions, built once, are reused by later runs.
        Assert.All(engine.RegionPlan.Regions, g => Assert.Single(g.Sessions));
    }

    [Fact]
    public void DynamicQuantizeRange_Vector_SameAsScalarReference()
    {
        var r = new Random(11);
        foreach (int length in new[] { 0, 1, 7, 8, 15, 16, 17, 64, 1000, 49152 })
        {
            var x = Check.RandomFloats(r, length, 5f);
            var shifted = x.Select(v => v + 7f).ToArray();   // all positive: min stays 0
            var special = x.ToArray();
            if (length > 3) { special[length / 2] = float.NaN; special[0] = -0f; special[^1] = float.NegativeInfinity; }
            foreach (var data in new[] { x, shifted, special })
            {
                var (min, max) = FloatOps.RangeWithZero(data);
                var (rmin, rmax) = FloatOps.RangeWithZeroReference(data);
                Assert.Equal(BitConverter.SingleToInt32Bits(rmin), BitConverter.SingleToInt32Bits(min));
                Assert.Equal(BitConverter.SingleToInt32Bits(rmax), BitConverter.SingleToInt32Bits(max));
            }
        }
    }

    /// <summary>DequantizeLinear of u8 and s8 codes (MiniLM's embeddings), 16 codes at a time on the vector paths:
    /// bit for bit as the scalar reference, every code value, per tensor and per channel, with tails.</summary>
    [Theory]
    [MemberData(nameof(KernelTests.Paths), MemberType = typeof(KernelTests))]
    public void DequantizeBytes_EveryLengthAndCode_SameAsReference(KernelPath path)
    {
        var context = KernelPaths.Context(path);
        var r = new Random(13);
        foreach (int length in new[] { 1, 6, 15, 16, 17, 33, 36, 256, 1002, 24576 })
        {
            var u = new byte[length]; r.NextBytes(u);
            if (length >= 256) for (int i = 0; i < 256; i++) u[i] = (byte)i;
            var s = u.Select(b => (sbyte)b).ToArray();
            var last = Enumerable.Range(0, 6).Select(c => 0.01f * (c + 1)).ToArray();
            foreach (var (scales, zps, inner) in new[]
            {
                (new[] { 0.037f }, new[] { 131 }, (long)length),
                (new[] { 0.5f, 1e-3f, 3f }, new[] { 0, -7, 12 }, (long)Math.Max(1, length / 3)),   // channels first
                (last, new[] { 3, 0, -2, 9, 1, 5 }, 1L),                                             // channels last (inner 1)
                (last, new[] { 7 }, 1L),
            })
            {
                if (scales.Length > 1 && length % (inner == 1 ? scales.Length : 3) != 0) continue;
                var expected = new float[length]; var actual = new float[length];
                QuantizeKernels.DequantizeReference<byte>(u, scales, zps, inner, expected);
                QuantizeKernels.Dequantize<byte>(context, u, scales, zps, inner, actual);
                Assert.True(SameBits(expected, actual), $"u8, {length} codes, {scales.Length} scale(s)");
                QuantizeKernels.DequantizeReference<sbyte>(s, scales, zps, inner, expected);
                QuantizeKernels.Dequantize<sbyte>(context, s, scales, zps, inner, actual);
                Assert.True(SameBits(expected, actual), $"s8, {length} codes, {scales.Length} scale(s)");
            }
        }
    }

    /// <summary>Quantize to u8 and s8 (DynamicQuantizeLinear's codes), 32 values at a time on 256-bit paths: the same
    /// codes as the scalar reference, with NaN, infinities, values past the range and exact halves (ties to even).</summary>
    [Theory]
    [MemberData(nameof(KernelTests.Paths), MemberType = typeof(KernelTests))]
    public void QuantizeBytes_EveryLength_SameAsReference(KernelPath path)
    {
        var context = KernelPaths.Context(path);
        var r = new Random(17);
        foreach (int length in new[] { 1, 31, 32, 33, 64, 100, 1000, 24576 })
        {
            var x = Check.RandomFloats(r, length, 40f);
            for (int i = 0; i < length; i += 7) x[i] = (r.Next(-300, 300) + 0.5f) * 0.25f;   // halves of the step
            if (length > 40) { x[3] = float.NaN; x[5] = float.PositiveInfinity; x[9] = float.NegativeInfinity; x[11] = 1e9f; x[13] = -0f; }
            foreach (var (scale, zp) in new[] { (0.25f, 0), (0.25f, 128), (0.13f, -5), (0.5f, 17) })
            {
                var eu = new byte[length]; var au = new byte[length];
                QuantizeKernels.QuantizeReference<byte>(x, new[] { scale }, new[] { Math.Clamp(zp, 0, 255) }, length, eu);
                QuantizeKernels.Quantize<byte>(context, x, new[] { scale }, new[] { Math.Clamp(zp, 0, 255) }, length, au);
                Assert.Equal(eu, au);
                var es = new sbyte[length]; var @as = new sbyte[length];
                QuantizeKernels.QuantizeReference<sbyte>(x, new[] { scale }, new[] { Math.Clamp(zp, -128, 127) }, length, es);
                QuantizeKernels.Quantize<sbyte>(context, x, new[] { scale }, new[] { Math.Clamp(zp, -128, 127) }, length, @as);
                Assert.Equal(es, @as);
            }
        }
    }

    /// <summary>A region ONNX Runtime cannot build fails on its first run with a stable id, naming its nodes' ops;
    /// the same model node by node fails the same way at the node ONNX Runtime lacks.</summary>
    [Fact]
    public void RegionOnnxRuntimeCannotBuild_FailsWithStableId()
    {
        var builder = new ModelBuilder(13, 7, "bad").Input("x", 2, 3).Init("one", new[] { 1f })
            .Node("Add", new[] { "x", "one" }, new[] { "a" }, "add")
            .Node("Sub", new[] { "a", "one" }, new[] { "b" }, "sub")
            .Output("b", 2, 3);
        var bad = new NodeProto { OpType = "NoSuchOpInOnnxRuntime", Domain = "com.microsoft", Name = "missing" };
        bad.Input.Add("b"); bad.Output.Add("c");
        builder.Graph.Node.Add(bad);
        builder.Graph.Output.Clear();
        builder.Graph.Output.Add(ModelBuilder.Value("c", null));
        builder.Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        using var engine = new IntegerEngine(builder.Model, "bad");
        Assert.Equal(1, engine.OnnxRuntimeRegions.Regions);
        var feed = new Dictionary<string, EngineTensor> { ["x"] = EngineTensor.Float(new float[6], 2, 3) };
        var e = Assert.Throws<PtqException>(() => engine.Run(feed));
        Assert.Equal("EngineNodeFailed", e.ErrorId);
        Assert.Contains("NoSuchOpInOnnxRuntime", e.Message);
        var perNode = Assert.Throws<PtqException>(() => engine.RunAll(feed));
        Assert.Equal("EngineNodeFailed", perNode.ErrorId);
    }
}
