using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>LSTM and GRU (<see cref="RecurrentQuantizer"/>): LSTM in Dynamic mode as com.microsoft
/// DynamicQuantizeLSTM, LSTM and GRU in WeightOnly mode as 8-bit weights turned to float by Cast and Mul (folded by
/// ONNX Runtime at load), GRU kept float in
/// Dynamic mode and both kept float in Static mode, each with its reason; synthetic models and the recurrent models
/// of the conformance corpus, run in ONNX Runtime against the float model.</summary>
public sealed class RecurrentQuantizerTests
{
    readonly ITestOutputHelper _out;
    public RecurrentQuantizerTests(ITestOutputHelper output) => _out = output;

    const int Batch = 2, InputSize = 5, Hidden = 4;

    /// <summary>x[seq, 2, 5] -> op (hidden 4) -> Y [seq, D, 2, 4], Y_h [D, 2, 4] (and Y_c for LSTM).</summary>
    static ModelBuilder Recurrent(string op, string direction, int seq, bool bias, bool initialStates, int seed)
    {
        int d = direction == "bidirectional" ? 2 : 1, gates = op == "LSTM" ? 4 : 3;
        var r = new Random(seed);
        var b = new ModelBuilder(13, 7, op.ToLowerInvariant()).Input("x", seq, Batch, InputSize)
            .RandomInit(r, "W", 0.5f, d, gates * Hidden, InputSize).RandomInit(r, "R", 0.5f, d, gates * Hidden, Hidden);
        var inputs = new List<string> { "x", "W", "R", bias ? "B" : "", "" };
        if (bias) b.RandomInit(r, "B", 0.3f, d, 2 * gates * Hidden);
        if (initialStates)
        {
            b.RandomInit(r, "h0", 0.5f, d, Batch, Hidden);
            inputs.Add("h0");
            if (op == "LSTM")
            {
                b.RandomInit(r, "c0", 0.5f, d, Batch, Hidden);
                inputs.Add("c0");
            }
        }
        while (inputs[^1].Length == 0) inputs.RemoveAt(inputs.Count - 1);
        var outputs = op == "LSTM" ? new[] { "y", "y_h", "y_c" } : new[] { "y", "y_h" };
        b.Node(op, inputs.ToArray(), outputs, "rnn", ("hidden_size", Hidden), ("direction", direction));
        foreach (var o in outputs) b.Output(o);
        return b;
    }

    static ModelProto Quantize(ModelProto model, QuantizationOptions options, out QuantizationPlan plan)
    {
        plan = WeightQuantizer.Plan(new GraphView(model.Graph), null, options);
        return WeightQuantizer.Quantize(model, plan, options);
    }

    /// <summary>Every output of both models on one input: the worst cosine and the largest absolute error.</summary>
    static (double Cosine, double MaxError) Compare(ModelProto reference, ModelProto quantized, string input, float[] x, long[] shape)
    {
        var expected = Ort.Run(reference, input, x, shape);
        var actual = Ort.Run(quantized, input, x, shape, GraphOptimizationLevel.ORT_ENABLE_ALL);
        double cos = 1, max = 0;
        foreach (var (name, e) in expected)
        {
            var a = actual[name];
            Assert.Equal(e.Length, a.Length);
            cos = Math.Min(cos, Check.Cosine(e, a));
            for (int i = 0; i < e.Length; i++) max = Math.Max(max, Math.Abs(e[i] - a[i]));
        }
        return (cos, max);
    }

    [Theory]
    [InlineData("forward", 1, false, false, true)]
    [InlineData("forward", 7, true, true, true)]
    [InlineData("reverse", 5, true, false, false)]
    [InlineData("bidirectional", 16, true, true, true)]
    [InlineData("bidirectional", 3, false, true, false)]
    public void Lstm_Dynamic_IsDynamicQuantizeLstm_CloseToFloat(string direction, int seq, bool bias, bool initialStates, bool perChannel)
    {
        var model = Recurrent("LSTM", direction, seq, bias, initialStates, seq * 7 + direction.Length).Model;
        var options = new QuantizationOptions { Mode = QuantMode.Dynamic, PerChannel = perChannel };
        var q = Quantize(model, options, out var plan);
        var reason = plan.Decisions.Single(d => d.Layer == "rnn").Reason;
        _out.WriteLine(reason);
        Assert.StartsWith("dynamic: com.microsoft DynamicQuantizeLSTM", reason);
        var node = q.Graph.Node.Single(n => n.Name == "rnn");
        Assert.Equal(("DynamicQuantizeLSTM", "com.microsoft"), (node.OpType, node.Domain));
        Assert.Contains(q.OpsetImport, o => o.Domain == "com.microsoft");
        Assert.Equal(12, node.Input.Count);
        Assert.DoesNotContain(q.Graph.Initializer, t => t.Name is "W" or "R");
        Assert.Equal(q.ToByteArray(), Quantize(model, options, out _).ToByteArray());   // deterministic

        // The stored weights, transposed back, are the float ones rounded to their row's (or direction's) step.
        int d = direction == "bidirectional" ? 2 : 1;
        var init = q.Graph.Initializer.ToDictionary(t => t.Name);
        foreach (var (input, cols) in new[] { (1, InputSize), (2, Hidden) })
        {
            var original = TensorData.ReadFloats(model.Graph.Initializer.Single(t => t.Name == (input == 1 ? "W" : "R")));
            var stored = init[node.Input[input]];
            Assert.Equal(new long[] { d, cols, 4 * Hidden }, stored.Dims.ToArray());
            Assert.Equal((int)OnnxDataType.Int8, stored.DataType);
            var codes = stored.RawData.ToByteArray().Select(v => (sbyte)v).ToArray();
            var scales = TensorData.ReadFloats(init[node.Input[input == 1 ? 8 : 10]]);
            Assert.Equal(perChannel ? new long[] { d, 4 * Hidden } : new long[] { d }, init[node.Input[input == 1 ? 8 : 10]].Dims.ToArray());
            Assert.All(init[node.Input[input == 1 ? 9 : 11]].RawData.ToByteArray(), z => Assert.Equal(0, (int)z));
            for (int dir = 0; dir < d; dir++)
                for (int row = 0; row < 4 * Hidden; row++)
                    for (int c = 0; c < cols; c++)
                    {
                        float scale = scales[perChannel ? dir * 4 * Hidden + row : dir];
                        float w = original[(dir * 4 * Hidden + row) * cols + c];
                        float back = codes[(dir * cols + c) * 4 * Hidden + row] * scale;
                        Assert.True(Math.Abs(back - w) <= scale / 2 + 1e-6f, $"dir {dir} row {row} col {c}: {w} stored as {back}");
                        // Written for every CPU (Portable): no pair of K (the columns) can saturate vpmaddubsw.
                        if (c % 2 == 1)
                            Assert.False(PairSaturation.CanOverflow(codes[(dir * cols + c - 1) * 4 * Hidden + row], codes[(dir * cols + c) * 4 * Hidden + row]),
                                $"dir {dir} row {row} cols {c - 1},{c}");
                    }
        }
        Assert.Contains("u8 x s8 pair", reason);

        var x = Check.RandomFloats(new Random(seq), seq * Batch * InputSize, 2f);
        var (cos, max) = Compare(model, q, "x", x, new long[] { seq, Batch, InputSize });
        _out.WriteLine($"{direction} seq {seq}: cosine {cos:F5}, max error {max:E2}");
        Assert.True(cos > 0.999, $"cosine {cos}");
        Assert.True(max < 0.05, $"max error {max}");
    }

    [Theory]
    [InlineData("LSTM", "bidirectional", true)]
    [InlineData("LSTM", "forward", false)]
    [InlineData("GRU", "forward", true)]
    [InlineData("GRU", "bidirectional", true)]
    [InlineData("GRU", "reverse", false)]
    public void WeightOnly_StoresWeightsIn8Bits_FoldedToFloat_ExactlyAsTheirReference(string op, string direction, bool perChannel)
    {
        const int seq = 6;
        int d = direction == "bidirectional" ? 2 : 1, gates = op == "LSTM" ? 4 : 3;
        var model = Recurrent(op, direction, seq, bias: true, initialStates: true, seed: gates + d).Model;
        var options = new QuantizationOptions { Mode = QuantMode.WeightOnly, PerChannel = perChannel };
        var q = Quantize(model, options, out var plan);
        var reason = plan.Decisions.Single(x => x.Layer == "rnn").Reason;
        _out.WriteLine(reason);
        Assert.Equal($"weight-only: int8 W and R {(perChannel ? "per gate row" : "per tensor")}, dequantized by Cast and Mul that ONNX Runtime folds at load (for size), {op} computes in float", reason);
        var node = q.Graph.Node.Single(n => n.Name == "rnn");
        Assert.Equal(op, node.OpType);
        Assert.DoesNotContain(q.Graph.Initializer, t => t.Name is "W" or "R");
        Assert.Equal(2, q.Graph.Node.Count(n => n.OpType == "Cast"));
        Assert.Equal(2, q.Graph.Node.Count(n => n.OpType == "Mul"));
        Assert.Contains(q.Graph.Initializer, t => t.DataType == (int)OnnxDataType.Int8 && t.Dims.SequenceEqual(new long[] { d, gates * Hidden, InputSize }));
        // ONNX Runtime folds the Cast and Mul at load: the optimized graph holds the recurrent op alone.
        using (var temp = new TempDir())
        {
            var optimized = temp.File("optimized.onnx");
            using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized, IntraOpNumThreads = 1 })
            using (new InferenceSession(q.ToByteArray(), so)) { }
            Assert.Equal(new[] { op }, OnnxModelIO.Load(optimized).Graph.Node.Select(n => n.OpType));
        }

        // The reference: each weight rounded by the scalar QuantMath per row of [D * G * H, K] (or as a whole) and
        // dequantized, in the float op; the results are bit-identical up to summation order.
        var reference = model.Clone();
        foreach (var t in reference.Graph.Initializer.Where(t => t.Name is "W" or "R").ToList())
        {
            var dims = t.Dims.ToArray();
            var (values, scales, zps) = QuantMath.QuantizeWeights(TensorData.ReadFloats(t), new[] { dims[0] * dims[1], dims[2] }, perChannel ? 0 : null, options.Weights);
            long inner = dims[2];
            var back = values.Select((v, i) => QuantMath.Dequantize(v, new QuantParams(scales[perChannel ? i / inner : 0], zps[perChannel ? i / inner : 0]))).ToArray();
            reference.Graph.Initializer.Remove(t);
            reference.Graph.Initializer.Add(TensorData.FromFloats(t.Name, back, dims));
        }
        var x = Check.RandomFloats(new Random(5), seq * Batch * InputSize, 2f);
        var shape = new long[] { seq, Batch, InputSize };
        var expected = Ort.Run(reference, "x", x, shape);
        var actual = Ort.Run(q, "x", x, shape, GraphOptimizationLevel.ORT_ENABLE_ALL);
        foreach (var (name, e) in expected) Check.Close(e, actual[name], 1e-5, $"{op} {name}");
        var (cos, max) = Compare(model, q, "x", x, shape);
        _out.WriteLine($"{op} {direction}: cosine vs float {cos:F5}, max error {max:E2}");
        Assert.True(cos > 0.999, $"cosine {cos}");
    }

    [Fact]
    public void Gru_Dynamic_And_BatchFirst_StayFloat_WithTheReason()
    {
        var gru = Recurrent("GRU", "forward", 4, true, false, 3).Model;
        var plan = WeightQuantizer.Plan(new GraphView(gru.Graph), null, new QuantizationOptions { Mode = QuantMode.Dynamic });
        Assert.Empty(plan.QuantizedLayers);
        Assert.StartsWith("kept in float: ONNX Runtime has no quantized GRU kernel", plan.Decisions.Single().Reason);

        var lstm = Recurrent("LSTM", "forward", 4, true, false, 3).Model;
        lstm.Graph.Node[0].Attribute.Add(new AttributeProto { Name = "layout", I = 1, Type = AttributeProto.Types.AttributeType.Int });
        plan = WeightQuantizer.Plan(new GraphView(lstm.Graph), null, new QuantizationOptions { Mode = QuantMode.Dynamic });
        Assert.Contains("layout = 1", plan.Decisions.Single().Reason);

        // DynamicQuantizeLSTM refuses per-row zero points other than 0: asymmetric per-row weights stay float.
        lstm = Recurrent("LSTM", "forward", 4, true, false, 3).Model;
        plan = WeightQuantizer.Plan(new GraphView(lstm.Graph), null, new QuantizationOptions { Mode = QuantMode.Dynamic, WeightSymmetric = false });
        Assert.Contains("zero point 0", plan.Decisions.Single().Reason);
        var perTensor = new QuantizationOptions { Mode = QuantMode.Dynamic, WeightSymmetric = false, PerChannel = false };
        var q = Quantize(lstm, perTensor, out plan);
        Assert.StartsWith("dynamic: com.microsoft DynamicQuantizeLSTM, int8 W and R per direction", plan.Decisions.Single().Reason);
        var x = Check.RandomFloats(new Random(9), 4 * Batch * InputSize, 2f);
        var (cos, _) = Compare(lstm, q, "x", x, new long[] { 4, Batch, InputSize });
        Assert.True(cos > 0.999, $"asymmetric per-direction cosine {cos}");
    }

    /// <summary>The conformance models, with every input but X frozen as an initializer (their W, R, B, P and
    /// states are test data), quantized in both weight modes and run against the float model on the test's X.</summary>
    [OnnxTestDataTheory]
    [InlineData("test_lstm_defaults")]
    [InlineData("test_lstm_with_initial_bias")]
    [InlineData("test_lstm_with_peepholes")]
    [InlineData("test_lstm_batchwise")]
    [InlineData("test_gru_defaults")]
    [InlineData("test_gru_seq_length")]
    [InlineData("test_gru_with_initial_bias")]
    [InlineData("test_gru_batchwise")]
    public void ConformanceModels_QuantizeAndRunCloseToFloat(string test)
    {
        var dir = Path.Combine(CorpusWalk.Root, "node", test);
        var model = OnnxModelIO.Load(Path.Combine(dir, "model.onnx"));
        var inputs = Directory.GetFiles(Path.Combine(dir, "test_data_set_0"), "input_*.pb")
            .OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[6..])).Select(TensorProtoFile.Read).ToList();
        var graphInputs = model.Graph.Input.ToList();
        for (int i = 1; i < graphInputs.Count; i++)
        {
            var t = inputs[i].Clone();
            t.Name = graphInputs[i].Name;
            model.Graph.Initializer.Add(t);
            model.Graph.Input.Remove(graphInputs[i]);
        }
        string xName = graphInputs[0].Name;
        var x = TensorData.ReadFloats(inputs[0]);
        var shape = inputs[0].Dims.ToArray();
        bool batchFirst = test.EndsWith("batchwise", StringComparison.Ordinal);
        bool lstm = test.Contains("lstm", StringComparison.Ordinal);
        foreach (var options in new[] { new QuantizationOptions { Mode = QuantMode.Dynamic }, new QuantizationOptions { Mode = QuantMode.WeightOnly } })
        {
            var plan = WeightQuantizer.Plan(new GraphView(model.Graph), null, options);
            var decision = plan.Decisions.Single();
            _out.WriteLine($"{test} {options.Mode}: {decision.Reason}");
            if (batchFirst)
            {
                // ONNX Runtime runs no batch-first recurrent op, float or quantized.
                Assert.Contains("layout = 1", decision.Reason);
                continue;
            }
            if (!lstm && options.Mode == QuantMode.Dynamic)
            {
                Assert.False(decision.Quantized, decision.Reason);
                continue;
            }
            Assert.True(decision.Quantized, decision.Reason);
            var q = WeightQuantizer.Quantize(model, plan, options);
            Assert.Equal(lstm && options.Mode == QuantMode.Dynamic ? "DynamicQuantizeLSTM" : lstm ? "LSTM" : "GRU",
                q.Graph.Node.Single(n => n.Name == model.Graph.Node[0].Name).OpType);
            var (cos, max) = Compare(model, q, xName, x, shape);
            _out.WriteLine($"  cosine {cos:F5}, max error {max:E2}");
            Assert.True(cos > 0.999, $"cosine {cos}");
            Assert.True(max < 0.02, $"max error {max}");
        }
    }

    /// <summary>Static mode: MatMul -> Transpose (to time-major) -> LSTM -> MatMul; the MatMuls are int8, the LSTM float, reading the
    /// dequantized copy of its input, its output quantized for the MatMul after it.</summary>
    [Fact]
    public void Static_KeepsLstmFloat_WithQdqAtItsBoundary()
    {
        const int seq = 6;
        var r = new Random(41);
        var b = new ModelBuilder(13, 7, "static-lstm").Input("x", 1, seq, 8)
            .RandomInit(r, "w1", 0.4f, 8, InputSize)
            .RandomInit(r, "W", 0.5f, 1, 4 * Hidden, InputSize).RandomInit(r, "R", 0.5f, 1, 4 * Hidden, Hidden)
            .RandomInit(r, "w2", 0.5f, Hidden, 3)
            .Node("MatMul", new[] { "x", "w1" }, new[] { "m" }, "proj")
            .Node("Transpose", new[] { "m" }, new[] { "t" }, "time_major", ("perm", new long[] { 1, 0, 2 }))
            .Node("LSTM", new[] { "t", "W", "R" }, new[] { "", "h" }, "lstm", ("hidden_size", Hidden))
            .Node("MatMul", new[] { "h", "w2" }, new[] { "y" }, "head")
            .Output("y", 1, 1, 3);
        TestPaths.UseTempCache();
        using var temp = new TempDir();
        var prepared = ModelPreparer.Prepare(b.Save(temp.File("static-lstm.onnx")));
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        Assert.Equal(new[] { "head", "proj", "time_major" }, plan.QuantizedLayers.OrderBy(n => n, StringComparer.Ordinal));
        Assert.StartsWith("kept in float: static mode: ONNX Runtime has no LSTM kernel", plan.Decisions.Single(d => d.Layer == "lstm").Reason);
        var random = new Random(42);
        var samples = Enumerable.Range(0, 16).Select(_ => Check.RandomFloats(random, seq * 8, 2f)).ToArray();
        var data = DataSetReader.FromArrays(samples, new[] { seq, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        var ranges = stats.ToDictionary(s => s.Tensor, s => new TensorRange(s.RangeMin, s.RangeMax));
        var qdq = QdqQuantizer.Quantize(prepared.Model, plan, ranges, new QuantizationOptions());
        var g = new QdqGraph(qdq);
        var lstmNode = g.Node("lstm");
        Assert.Equal("LSTM", lstmNode.OpType);
        Assert.NotNull(g.Dequantizer(lstmNode.Input[0]));          // reads the dequantized MatMul output
        Assert.Equal("W", lstmNode.Input[1]);                       // float weights
        Assert.NotNull(g.Dequantizer(g.Node("head").Input[0]));    // its output is quantized for the head
        // Over 8 inputs together: y has 3 values per input.
        var expected = new List<float>();
        var actual = new List<float>();
        for (int i = 0; i < 8; i++)
        {
            var x = Check.RandomFloats(new Random(50 + i), seq * 8, 2f);
            expected.AddRange(Ort.Run(prepared.Model, "x", x, new long[] { 1, seq, 8 })["y"]);
            actual.AddRange(Ort.Run(qdq, "x", x, new long[] { 1, seq, 8 }, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"]);
        }
        double cos = Check.Cosine(expected.ToArray(), actual.ToArray());
        _out.WriteLine($"static: cosine vs float {cos:F5}");
        Assert.True(cos > 0.99, $"cosine {cos}");
    }
}
