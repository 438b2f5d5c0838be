using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Kernels;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Tests;

/// <summary>Runs models in ONNX Runtime on engine tensors of any element type (the reference for the engine).</summary>
public static class OrtReference
{
    public static InferenceSession Session(byte[] model, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level, IntraOpNumThreads = 1, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        return new InferenceSession(model, options);
    }

    public static Dictionary<string, EngineTensor> Run(InferenceSession session, IReadOnlyDictionary<string, EngineTensor> inputs)
    {
        var names = session.InputNames.ToArray();
        var values = names.Select(n => OrtTensors.FromTensorProto(inputs[n].ToProto(n))).ToArray();
        try
        {
            using var runOptions = new RunOptions();
            var outputs = session.OutputNames.ToArray();
            using var results = session.Run(runOptions, names, values, outputs);
            var map = new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
            for (int i = 0; i < outputs.Length; i++)
            {
                var info = results[i].GetTensorTypeAndShape();
                map[outputs[i]] = EngineTensor.FromBytes((OnnxDataType)(int)info.ElementDataType, info.Shape, results[i].GetTensorMutableRawData());
            }
            return map;
        }
        finally { foreach (var v in values) v.Dispose(); }
    }
}

/// <summary>The engine's fallback to ONNX Runtime for the ops it does not implement (<see cref="OrtNodeFallback"/>):
/// whole transformer models run, with the quantized ops in the engine's own kernels.</summary>
public class EngineFallbackTests(ITestOutputHelper output)
{
    const int Vocab = 50, Tokens = 12, Dim = 16;

    /// <summary>ids int64 [1,T] -> Gather(embeddings) -> LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div -> dynamic int8
    /// MatMul (DynamicQuantizeLinear, MatMulInteger, Cast, Mul) -> Transpose -> MatMul scores -> mask from
    /// Equal(ids, 0) through Where -> Softmax -> MatMul -> Erf GELU -> Reshape to [T, D] by Shape/Slice.</summary>
    internal static ModelProto TransformerBlock()
    {
        var r = new Random(7);
        var w = new sbyte[Dim * Dim];
        for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-127, 128);
        var b = new ModelBuilder(13, 7, "block");
        b.Graph.Input.Add(ModelBuilder.Value("ids", new long[] { 1, Tokens }, (int)OnnxDataType.Int64));
        b.RandomInit(r, "emb", 2f, Vocab, Dim).RandomInit(r, "gamma", 1f, Dim).RandomInit(r, "beta", 0.5f, Dim).RandomInit(r, "bias", 0.3f, Dim)
            .Init("two", new[] { 2f }).Init("eps", new[] { 1e-5f }).Init("wscale", new[] { 0.01f }).Init("sqrtd", new[] { MathF.Sqrt(Dim) })
            .Init("neg", new[] { -10000f }).Init("zero", new[] { 0f }).Init("half", new[] { 0.5f }).Init("one", new[] { 1f }).Init("rsqrt2", new[] { 1f / MathF.Sqrt(2) });
        b.Graph.Initializer.Add(TensorData.FromInt8("w", w, Dim, Dim));
        b.Graph.Initializer.Add(TensorData.FromInt8("wzero", new sbyte[] { 0 }));
        b.Graph.Initializer.Add(Int64s("pad", new long[] { 0 }));
        b.Graph.Initializer.Add(Int64s("axes01", new long[] { 0, 1 }));
        b.Graph.Initializer.Add(Int64s("s1", new long[] { 1 }));
        b.Graph.Initializer.Add(Int64s("s3", new long[] { 3 }));
        b.Node("Gather", new[] { "emb", "ids" }, new[] { "e" }, "embed")
            .Node("ReduceMean", new[] { "e" }, new[] { "mu" }, "ln_mean", ("axes", new long[] { -1 }))
            .Node("Sub", new[] { "e", "mu" }, new[] { "d" }, "ln_sub")
            .Node("Pow", new[] { "d", "two" }, new[] { "d2" }, "ln_pow")
            .Node("ReduceMean", new[] { "d2" }, new[] { "var" }, "ln_var", ("axes", new long[] { -1 }))
            .Node("Add", new[] { "var", "eps" }, new[] { "vare" }, "ln_add")
            .Node("Sqrt", new[] { "vare" }, new[] { "std" }, "ln_sqrt")
            .Node("Div", new[] { "d", "std" }, new[] { "n" }, "ln_div")
            .Node("Mul", new[] { "n", "gamma" }, new[] { "ng" }, "ln_gamma")
            .Node("Add", new[] { "ng", "beta" }, new[] { "h" }, "ln_beta")
            .Node("DynamicQuantizeLinear", new[] { "h" }, new[] { "hq", "hs", "hz" }, "dql")
            .Node("MatMulInteger", new[] { "hq", "w", "hz", "wzero" }, new[] { "acc" }, "mmi")
            .Node("Cast", new[] { "acc" }, new[] { "accf" }, "cast", ("to", (int)OnnxDataType.Float))
            .Node("Mul", new[] { "hs", "wscale" }, new[] { "sc" }, "scale")
            .Node("Mul", new[] { "accf", "sc" }, new[] { "mmf" }, "rescale")
            .Node("Add", new[] { "mmf", "bias" }, new[] { "q" }, "add_bias")
            .Node("Transpose", new[] { "q" }, new[] { "qt" }, "transpose", ("perm", new long[] { 0, 2, 1 }))
            .Node("MatMul", new[] { "q", "qt" }, new[] { "scores" }, "scores")
            .Node("Div", new[] { "scores", "sqrtd" }, new[] { "scaled" }, "scale_scores")
            .Node("Equal", new[] { "ids", "pad" }, new[] { "isPad" }, "equal")
            .Node("Unsqueeze", new[] { "isPad", "s1" }, new[] { "mask" }, "unsqueeze")
            .Node("Where", new[] { "mask", "neg", "zero" }, new[] { "maskAdd" }, "where")
            .Node("Add", new[] { "scaled", "maskAdd" }, new[] { "masked" }, "mask_add")
            .Node("Softmax", new[] { "masked" }, new[] { "p" }, "softmax", ("axis", -1))
            .Node("MatMul", new[] { "p", "h" }, new[] { "ctx" }, "context")
            .Node("Mul", new[] { "ctx", "rsqrt2" }, new[] { "g0" }, "gelu_div")
            .Node("Erf", new[] { "g0" }, new[] { "g1" }, "gelu_erf")
            .Node("Add", new[] { "g1", "one" }, new[] { "g2" }, "gelu_add")
            .Node("Mul", new[] { "ctx", "g2" }, new[] { "g3" }, "gelu_mul")
            .Node("Mul", new[] { "g3", "half" }, new[] { "g" }, "gelu_half")
            .Node("Shape", new[] { "g" }, new[] { "shape" }, "shape")
            .Node("Slice", new[] { "shape", "s1", "s3" }, new[] { "tail" }, "slice")
            .Node("Reshape", new[] { "g", "tail" }, new[] { "y" }, "reshape");
        b.Graph.Output.Add(ModelBuilder.Value("y", new long[] { Tokens, Dim }));
        b.Graph.Output.Add(ModelBuilder.Value("isPad", new long[] { 1, Tokens }, (int)OnnxDataType.Bool));
        return b.Model;
    }

    static TensorProto Int64s(string name, long[] values, params long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)OnnxDataType.Int64, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())) };
        t.Dims.AddRange(dims.Length == 0 ? new long[] { values.Length } : dims);
        return t;
    }

    static (float MaxAbs, int Differing) Compare(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        float max = 0; int diff = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) diff++;
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        }
        return (max, diff);
    }

    [Fact]
    public void SyntheticTransformerBlock_RunsWithFallback_AndMatchesOnnxRuntime()
    {
        var model = TransformerBlock();
        var bytes = model.ToByteArray();
        using var engine = new IntegerEngine(model, "block");
        Assert.Contains("Softmax", engine.OpsInOnnxRuntime);
        Assert.Contains("Gather", engine.OpsInOnnxRuntime);
        Assert.DoesNotContain("MatMulInteger", engine.OpsInOnnxRuntime);
        Assert.DoesNotContain("DynamicQuantizeLinear", engine.OpsInOnnxRuntime);
        Assert.DoesNotContain("Reshape", engine.OpsInOnnxRuntime);
        using var asWritten = OrtReference.Session(bytes, GraphOptimizationLevel.ORT_DISABLE_ALL);
        using var optimized = OrtReference.Session(bytes);
        var r = new Random(3);
        for (int run = 0; run < 4; run++)
        {
            var ids = Enumerable.Range(0, Tokens).Select(i => i >= Tokens - run ? 0L : r.Next(1, Vocab)).ToArray();
            var feed = new Dictionary<string, EngineTensor> { ["ids"] = new(OnnxDataType.Int64, new long[] { 1, Tokens }, ids) };
            var mine = engine.Run(feed);
            var exact = OrtReference.Run(asWritten, feed);
            var fused = OrtReference.Run(optimized, feed);
            Assert.Equal(new long[] { Tokens, Dim }, mine["y"].Dims);
            Assert.Equal(OnnxDataType.Bool, mine["isPad"].Type);
            Assert.Equal(exact["isPad"].Bools, mine["isPad"].Bools);
            // Node for node as ONNX Runtime computes the graph as written: bit for bit.
            var (maxExact, diffExact) = Compare(exact["y"].Floats, mine["y"].Floats);
            var (maxFused, diffFused) = Compare(fused["y"].Floats, mine["y"].Floats);
            output.WriteLine($"run {run}: against ORT (no optimizations) {diffExact} of {mine["y"].Length} differ, max {maxExact:G3}; against ORT (all optimizations) {diffFused} differ, max {maxFused:G3}");
            Assert.Equal(0, diffExact);
            Assert.True(maxFused <= 1e-4f, $"max difference {maxFused} from ONNX Runtime with its fusions");
        }
    }

    static GraphProto Branch(string name, string op, string[] inputs, string output)
    {
        var g = new GraphProto { Name = name };
        var n = new NodeProto { OpType = op, Name = name + "_" + op };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        g.Node.Add(n);
        g.Output.Add(ModelBuilder.Value(output, null));
        return g;
    }

    /// <summary>x [2,3] -> cond = ReduceSum(x) > 0 -> If(then: x * two, else: -x), both reading x and the constant
    /// two from the outer graph -> Relu (in the engine).</summary>
    static ModelProto IfModel(GraphProto thenBranch, GraphProto elseBranch)
    {
        var b = new ModelBuilder(13, 7, "if").Input("x", 2, 3).Init("two", new[] { 2f }).Init("zero", new[] { 0f })
            .Node("ReduceSum", new[] { "x" }, new[] { "s" }, "sum", ("keepdims", 0))
            .Node("Greater", new[] { "s", "zero" }, new[] { "cond" }, "greater")
            .Node("If", new[] { "cond" }, new[] { "branch" }, "if")
            .Node("Relu", new[] { "branch" }, new[] { "y" }, "relu")
            .Output("y", 2, 3);
        var node = b.Graph.Node.Single(n => n.OpType == "If");
        node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = thenBranch });
        node.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = elseBranch });
        return b.Model;
    }

    [Fact]
    public void If_RunsWhole_WithOuterValues_AndMatchesOnnxRuntime()
    {
        var model = IfModel(Branch("then", "Mul", new[] { "x", "two" }, "t"), Branch("else", "Neg", new[] { "x" }, "e"));
        Assert.Equal(new[] { "x", "two" }, OrtNodeFallback.OuterScopeInputs(model.Graph.Node.Single(n => n.OpType == "If")));
        using var engine = new IntegerEngine(model, "if");
        using var ort = OrtReference.Session(model.ToByteArray(), GraphOptimizationLevel.ORT_DISABLE_ALL);
        foreach (var x in new[] { new[] { 1f, -2f, 3f, 4f, -0.5f, 0.25f }, new[] { -1f, 2f, -3f, -4f, 0.5f, -0.25f } })
        {
            var feed = new Dictionary<string, EngineTensor> { ["x"] = EngineTensor.Float(x, 2, 3) };
            var mine = engine.Run(feed)["y"].Floats;
            Assert.Equal(OrtReference.Run(ort, feed)["y"].Floats, mine);
            var expected = x.Sum() > 0 ? x.Select(v => Math.Max(0f, v * 2)) : x.Select(v => Math.Max(0f, -v));
            Assert.Equal(expected.ToArray(), mine);
        }
    }

    [Fact]
    public void LoopsAndQuantizedOpsInBranches_AreRefusedByName()
    {
        var quantizedInBranch = IfModel(Branch("then", "DynamicQuantizeLinear", new[] { "x" }, "t"), Branch("else", "Neg", new[] { "x" }, "e"));
        var ex = Check.Throws("EngineOpNotSupported", () => new IntegerEngine(quantizedInBranch, "m"));
        Assert.Contains("If", ex.Message);
        Assert.Contains("DynamicQuantizeLinear", ex.Message);
        var loop = IfModel(Branch("then", "Neg", new[] { "x" }, "t"), Branch("else", "Neg", new[] { "x" }, "e"));
        var node = loop.Graph.Node.Single(n => n.OpType == "If");
        node.OpType = "Loop";
        node.Attribute.Clear();
        node.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("body", "Neg", new[] { "x" }, "b") });
        ex = Check.Throws("EngineOpNotSupported", () => new IntegerEngine(loop, "m"));
        Assert.Contains("Loop", ex.Message);
        Assert.Contains("subgraph", ex.Message);
    }

    [Fact]
    public void ConstantScalarAndListForms_FeedOpsInOnnxRuntime()
    {
        // Constants of value_ints and value_float (opset 12) feed a Reshape (the engine's) and a Mul (ONNX Runtime's).
        var b = new ModelBuilder(13, 7, "consts").Input("x", 2, 3)
            .Node("Constant", Array.Empty<string>(), new[] { "shape" }, "c1", ("value_ints", new long[] { 3, 2 }))
            .Node("Constant", Array.Empty<string>(), new[] { "k" }, "c2", ("value_float", 1.5f))
            .Node("Reshape", new[] { "x", "shape" }, new[] { "r" }, "reshape")
            .Node("Mul", new[] { "r", "k" }, new[] { "y" }, "mul")
            .Output("y", 3, 2);
        using var engine = new IntegerEngine(b.Model, "consts");
        var x = new[] { 1f, 2f, 3f, 4f, 5f, 6f };
        var y = engine.Run(new Dictionary<string, EngineTensor> { ["x"] = EngineTensor.Float(x, 2, 3) })["y"];
        Assert.Equal(new long[] { 3, 2 }, y.Dims);
        Assert.Equal(x.Select(v => v * 1.5f).ToArray(), y.Floats);
    }

    [Fact]
    public void EngineTensor_HoldsBoolAndDouble_ThroughProtos()
    {
        var b = new EngineTensor(OnnxDataType.Bool, new long[] { 3 }, new[] { true, false, true });
        var back = EngineTensor.FromProto(b.ToProto("b"));
        Assert.Equal(b.Bools, back.Bools);
        var d = new EngineTensor(OnnxDataType.Double, new long[] { 2 }, new[] { 1.5, -2.25 });
        Assert.Equal(d.Doubles, EngineTensor.FromProto(d.ToProto("d")).Doubles);
        Assert.Equal(new[] { 1f, 0f, 1f }, b.ToFloats());
        // The CLR lets a uint[] pass as int[]: the element type is checked exactly.
        Assert.Throws<ArgumentException>(() => new EngineTensor(OnnxDataType.Int32, new long[] { 1 }, new uint[] { 1 }));
        Check.Throws("EngineTensorType", () => d.Floats);
    }

    // ---- MiniLM ----

    /// <summary>Tokenized sentences as the model's named int64 inputs.</summary>
    static List<Dictionary<string, EngineTensor>> Sentences(int count)
    {
        using var dir = new TempDir();
        var file = dir.File("sentences.txt");
        File.WriteAllLines(file, MiniLm.Sentences(count));
        var data = TextDataSet.FromText(new[] { file }, MiniLm.VocabPath, new PtqDataSet());
        using var reader = new SampleReader(data);
        return reader.Read(CancellationToken.None)
            .Select(s => s.Inputs!.ToDictionary(t => t.Name, EngineTensor.FromProto, StringComparer.Ordinal)).ToList();
    }

    static Dictionary<string, EngineTensor> Only(Dictionary<string, EngineTensor> feed, IEnumerable<string> names) =>
        names.ToDictionary(n => n, n => feed[n], StringComparer.Ordinal);

    static string DynamicMiniLm(TempDir dir)
    {
        TestPaths.UseTempCache();
        var path = dir.File("minilm.dynamic.onnx");
        QuantizationPipeline.RunWithoutCalibration(ModelPreparer.Prepare(MiniLm.ModelPath), null, new QuantizationOptions { Mode = QuantMode.Dynamic }, path, default);
        return path;
    }

    /// <summary>Per output and sample: the cosine and the largest absolute difference.</summary>
    static (double MinCosine, float MaxAbs) Agreement(IEnumerable<(float[] A, float[] B)> pairs)
    {
        double min = 1; float max = 0;
        foreach (var (a, b) in pairs)
        {
            min = Math.Min(min, Check.Cosine(a, b));
            max = Math.Max(max, Compare(a, b).MaxAbs);
        }
        return (min, max);
    }

    [Fact]
    public void MiniLmDynamic_RunsInEngine_AndMatchesOnnxRuntime()
    {
        using var dir = new TempDir();
        var path = DynamicMiniLm(dir);
        var model = OnnxModelIO.Load(path);
        using var engine = new IntegerEngine(model, "minilm.dynamic");
        output.WriteLine($"engine: {engine.Nodes.Count} nodes; in ONNX Runtime: {string.Join(", ", engine.OpsInOnnxRuntime)}");
        Assert.Contains("MatMulInteger", engine.Nodes.Select(n => n.OpType));
        var bytes = File.ReadAllBytes(path);
        using var ort = OrtReference.Session(bytes);
        using var asWritten = OrtReference.Session(bytes, GraphOptimizationLevel.ORT_DISABLE_ALL);
        var pairs = new List<(float[], float[])>();
        var pairsExact = new List<(float[], float[])>();
        var bitIdentical = engine.Outputs.ToDictionary(o => o, _ => 0L);
        var elements = engine.Outputs.ToDictionary(o => o, _ => 0L);
        foreach (var feed in Sentences(6))
        {
            var inputs = Only(feed, engine.Inputs);
            var mine = engine.Run(inputs);
            var theirs = OrtReference.Run(ort, inputs);
            var exact = OrtReference.Run(asWritten, inputs);
            foreach (var o in engine.Outputs)
            {
                var m = mine[o].ToFloats();
                pairs.Add((theirs[o].ToFloats(), m));
                pairsExact.Add((exact[o].ToFloats(), m));
                elements[o] += m.Length;
                bitIdentical[o] += m.Length - Compare(exact[o].ToFloats(), m).Differing;
            }
        }
        var (cos, max) = Agreement(pairs);
        var (cosExact, maxExact) = Agreement(pairsExact);
        output.WriteLine($"MiniLM dynamic, {pairs.Count / engine.Outputs.Count} sentences x {engine.Outputs.Count} outputs: engine vs ORT (no optimizations, the graph as written) min cosine {cosExact:F7}, " +
                         $"max |diff| {maxExact:G4}, bit-identical elements {string.Join(", ", engine.Outputs.Select(o => $"{o}: {bitIdentical[o]} of {elements[o]}"))}; vs ORT (all optimizations, 1 thread) min cosine {cos:F7}, max |diff| {max:G4}");
        // The graph as written, node for node: the same int8 sums on this VNNI host, float ops in ONNX Runtime's own
        // kernels (the differences left are the engine's own float Gemm of the pooler).
        Assert.True(cosExact >= 0.9999, $"min cosine {cosExact} against ONNX Runtime computing the graph as written");
        Assert.True(maxExact <= 1e-4, $"max difference {maxExact} against ONNX Runtime computing the graph as written");
        // ONNX Runtime's fused LayerNormalization, Gelu and MatMulIntegerToFloat round differently in the last bit;
        // where that moves a tensor's min or max, the next DynamicQuantizeLinear takes another scale and every later
        // layer another rounding of its codes: a different realization of the int8 noise, not an error.
        Assert.True(cos >= 0.98, $"min cosine {cos} against ONNX Runtime with its fusions");
    }

    [Fact]
    public void MiniLmDynamic_GroundTruth_ExactArithmetic_AgainstAvx2AndThisHost()
    {
        var folder = Path.Combine(TestPaths.GroundTruth, "minilm_dynamic");
        if (!File.Exists(Path.Combine(folder, "model.onnx")))
            throw new InvalidOperationException($"'{folder}' holds no model.onnx (see ../shared/ground-truth/README.md).");
        var model = OnnxModelIO.Load(Path.Combine(folder, "model.onnx"));
        // Exact sums; this host's class (what its ONNX Runtime computes: full-range weights saturate on AVX2 hosts);
        // and the AVX2 class the outputs were saved on.
        using var engine = new IntegerEngine(model, "minilm_dynamic");
        using var hostEngine = new IntegerEngine(model, EngineOptions.Emulating(QuantTarget.Host), "minilm_dynamic");
        using var avx2Engine = new IntegerEngine(model, EngineOptions.Emulating(QuantTarget.Avx2), "minilm_dynamic");
        var avx2VsSaved = new List<(float[], float[])>();
        using var ort = OrtReference.Session(File.ReadAllBytes(Path.Combine(folder, "model.onnx")));
        var sets = Directory.GetDirectories(folder, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        Assert.NotEmpty(sets);
        using var asWritten = OrtReference.Session(File.ReadAllBytes(Path.Combine(folder, "model.onnx")), GraphOptimizationLevel.ORT_DISABLE_ALL);
        var vsSaved = new List<(float[], float[])>();
        var vsHost = new List<(float[], float[])>();
        var vsHostAsWritten = new List<(float[], float[])>();
        var hostVsSaved = new List<(float[], float[])>();
        var asWrittenVsSaved = new List<(float[], float[])>();
        foreach (var set in sets)
        {
            var inputs = Directory.GetFiles(set, "input_*.pb").OrderBy(f => f, StringComparer.Ordinal).Select(TensorProtoFile.Read).ToList();
            var outputs = Directory.GetFiles(set, "output_*.pb").OrderBy(f => f, StringComparer.Ordinal).Select(TensorProtoFile.Read).ToList();
            var feed = inputs.All(t => engine.Inputs.Contains(t.Name))
                ? inputs.ToDictionary(t => t.Name, EngineTensor.FromProto, StringComparer.Ordinal)
                : engine.Inputs.Select((n, k) => (n, EngineTensor.FromProto(inputs[k]))).ToDictionary(p => p.n, p => p.Item2, StringComparer.Ordinal);
            var mine = engine.Run(feed);
            var asHost = hostEngine.Run(feed);
            var asAvx2 = avx2Engine.Run(feed);
            var host = OrtReference.Run(ort, feed);
            var plain = OrtReference.Run(asWritten, feed);
            for (int k = 0; k < engine.Outputs.Count; k++)
            {
                var name = engine.Outputs[k];
                var saved = EngineTensor.FromProto(outputs.FirstOrDefault(t => t.Name == name) ?? outputs[k]).ToFloats();
                var m = mine[name].ToFloats();
                vsSaved.Add((saved, m));
                vsHost.Add((host[name].ToFloats(), asHost[name].ToFloats()));
                hostVsSaved.Add((saved, host[name].ToFloats()));
                vsHostAsWritten.Add((plain[name].ToFloats(), asHost[name].ToFloats()));
                avx2VsSaved.Add((saved, asAvx2[name].ToFloats()));
                asWrittenVsSaved.Add((saved, plain[name].ToFloats()));
            }
        }
        void Line(string what, List<(float[], float[])> pairs)
        {
            var (min, max) = Agreement(pairs);
            double mean = pairs.Average(p => Check.Cosine(p.Item1, p.Item2));
            output.WriteLine($"  {what,-52} min cosine {min:F7}, mean {mean:F7}, max |diff| {max:G4}");
        }
        output.WriteLine($"ground truth minilm_dynamic, {sets.Count} sets x {engine.Outputs.Count} outputs (this host: {QuantTargets.HostClass}):");
        Line("engine, exact sums, vs saved AVX2 outputs", vsSaved);
        Line("engine emulating AVX2 vs saved AVX2 outputs", avx2VsSaved);
        Line("engine as this host vs its ORT, graph as written", vsHostAsWritten);
        Line("engine as this host vs its ORT, all optimizations", vsHost);
        Line("this host's ORT (as written) vs saved AVX2", asWrittenVsSaved);
        Line("this host's ORT (all optimizations) vs saved AVX2", hostVsSaved);
        var (ch, _) = Agreement(vsHostAsWritten);
        Assert.True(ch >= 0.9999, $"min cosine {ch} against this host's ONNX Runtime (graph as written)");
        var (cho, _) = Agreement(vsHost);
        Assert.True(cho >= 0.98, $"min cosine {cho} against this host's ONNX Runtime (all optimizations)");
        // Exact sums are far from the saturating AVX2 outputs; emulating AVX2 closes that gap up to the float noise
        // of ONNX Runtime's fused LayerNormalization (which can move a DynamicQuantizeLinear's scale by a step:
        // docs/architecture.md), so it is not bit for bit.
        var (cs, _) = Agreement(vsSaved);
        var (ca, _) = Agreement(avx2VsSaved);
        Assert.True(ca >= 0.999, $"engine emulating AVX2 vs saved AVX2: min cosine {ca}");
        Assert.True(cs < ca - 0.01, $"exact sums vs saved AVX2 {cs}, emulated AVX2 {ca}");
        double meanExact = vsSaved.Average(p => Check.Cosine(p.Item1, p.Item2)), meanAvx2 = avx2VsSaved.Average(p => Check.Cosine(p.Item1, p.Item2));
        Assert.True(meanAvx2 > meanExact, $"mean cosine to the saved AVX2 outputs: emulated {meanAvx2}, exact {meanExact}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MiniLmDynamic_EngineTime_AgainstOnnxRuntime_OneThread(bool long128)
    {
        using var dir = new TempDir();
        var path = DynamicMiniLm(dir);
        var sentences = Sentences(6);
        using var engine = new IntegerEngine(OnnxModelIO.Load(path), EngineOptions.Default with { FallbackThreads = 1, Kernels = KernelContext.Default.WithThreads(1) }, "minilm.dynamic");
        using var ort = OrtReference.Session(File.ReadAllBytes(path));
        using var asWritten = OrtReference.Session(File.ReadAllBytes(path), GraphOptimizationLevel.ORT_DISABLE_ALL);
        var feeds = sentences.Select(f => Only(f, engine.Inputs)).ToList();
        if (long128)
        {
            var ids = MiniLm.TokenIds(128);
            feeds = Enumerable.Range(0, 6).Select(k => engine.Inputs.ToDictionary(n => n, n => new EngineTensor(OnnxDataType.Int64, new long[] { 1, 128 },
                n == "input_ids" ? MiniLm.TokenIds(128, k) : n == "attention_mask" ? Enumerable.Repeat(1L, 128).ToArray() : new long[128]), StringComparer.Ordinal)).ToList();
        }
        foreach (var f in feeds) { engine.Run(f); OrtReference.Run(ort, f); OrtReference.Run(asWritten, f); }   // warm-up: node sessions, packing
        var own = new List<double>(); var theirs = new List<double>(); var plain = new List<double>();
        engine.Profile = new();
        for (int rep = 0; rep < 3; rep++)
            foreach (var f in feeds)
            {
                long t0 = Stopwatch.GetTimestamp();
                engine.Run(f);
                own.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                t0 = Stopwatch.GetTimestamp();
                OrtReference.Run(ort, f);
                theirs.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                t0 = Stopwatch.GetTimestamp();
                OrtReference.Run(asWritten, f);
                plain.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        static double Median(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        int tokens = (int)feeds.Average(f => f[engine.Inputs[0]].Dims[^1]);
        output.WriteLine($"MiniLM dynamic, 1 thread, {feeds.Count} sentences (~{tokens} tokens) x 3, interleaved: engine median {Median(own):F2} ms (min {own.Min():F2}), " +
                         $"ONNX Runtime median {Median(theirs):F2} ms (min {theirs.Min():F2}), ONNX Runtime without graph optimizations median {Median(plain):F2} ms (min {plain.Min():F2}); " +
                         $"engine / ORT {Median(own) / Median(theirs):F2}x (medians), {own.Min() / theirs.Min():F2}x (minima)");
        foreach (var kv in engine.Profile.OrderByDescending(k => k.Value.Milliseconds).Take(12))
            output.WriteLine($"    {kv.Key,-24} {kv.Value.Count,5} calls {kv.Value.Milliseconds / own.Count,8:F3} ms per run");
    }
}
