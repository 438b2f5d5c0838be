using PtqTools.Core.Evaluation;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Layers inside If branches and Loop bodies: listed with their scope, calibrated and quantized in place.</summary>
public class SubgraphTests
{
    static AttributeProto Graph(string name, GraphProto g) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Graph, G = g };

    static NodeProto Constant(string output, TensorProto value)
    {
        var node = new NodeProto { OpType = "Constant", Name = "const_" + output };
        node.Output.Add(output);
        var copy = value.Clone();
        copy.Name = "";
        node.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = copy });
        return node;
    }

    /// <summary>x[1,3,8,8]; cond = mean(x) > 0; If: then = Conv(x, Constant w1, outer b) -> Relu -> Conv(Constant w2)
    /// (weights in Constant nodes inside the branch), else = Conv(x, outer initializer we, outer b) -> Relu;
    /// then GlobalAveragePool -> Flatten -> Gemm -> y[1,10].</summary>
    internal static ModelProto IfModel(int seed = 11)
    {
        var r = new Random(seed);
        var then = new ModelBuilder(13, 7, "then").Output("t_out", 1, 4, 8, 8);
        then.Graph.Node.Add(Constant("w1", TensorData.FromFloats("w1", Check.RandomFloats(r, 4 * 3 * 3 * 3, 0.4f), 4, 3, 3, 3)));
        then.Graph.Node.Add(Constant("w2", TensorData.FromFloats("w2", Check.RandomFloats(r, 4 * 4, 0.5f), 4, 4, 1, 1)));
        then.Node("Conv", new[] { "x", "w1", "b" }, new[] { "t_c1" }, "conv_t1", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "t_c1" }, new[] { "t_r1" }, "relu_t1")
            .Node("Conv", new[] { "t_r1", "w2" }, new[] { "t_out" }, "conv_t2");
        var els = new ModelBuilder(13, 7, "else").Output("e_out", 1, 4, 8, 8)
            .Node("Conv", new[] { "x", "we", "b" }, new[] { "e_c" }, "conv_e", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "e_c" }, new[] { "e_out" }, "relu_e");
        var main = new ModelBuilder(13, 7, "ifmodel")
            .Input("x", 1, 3, 8, 8)
            .RandomInit(r, "we", 0.4f, 4, 3, 3, 3).RandomInit(r, "b", 0.2f, 4)
            .RandomInit(r, "wg", 0.5f, 4, 10).RandomInit(r, "bg", 0.2f, 10).Init("zero", new[] { 0f })
            .Node("ReduceMean", new[] { "x" }, new[] { "m" }, "mean", ("keepdims", 0))
            .Node("Greater", new[] { "m", "zero" }, new[] { "cond" }, "greater");
        var ifNode = new NodeProto { OpType = "If", Name = "if" };
        ifNode.Input.Add("cond");
        ifNode.Output.Add("h");
        ifNode.Attribute.Add(Graph("then_branch", then.Graph));
        ifNode.Attribute.Add(Graph("else_branch", els.Graph));
        main.Graph.Node.Add(ifNode);
        main.Node("GlobalAveragePool", new[] { "h" }, new[] { "g" }, "gap")
            .Node("Flatten", new[] { "g" }, new[] { "f" }, "flatten")
            .Node("Gemm", new[] { "f", "wg", "bg" }, new[] { "y" }, "gemm")
            .Output("y", 1, 10);
        return main.Model;
    }

    static float[][] Inputs(int count, int seed) { var r = new Random(seed); return Enumerable.Range(0, count).Select(_ => TinyModels.RandomInput(r)).ToArray(); }

    static bool TakesThen(float[] x) => x.Average() > 0;

    [Fact]
    public void ExcludeCheck_MatchesWhatExcludeReasonMatches_SubgraphNodesIncluded()
    {
        var model = IfModel();
        // A branch node by its name, a pattern over branch nodes, an op type: all match, nothing to warn about.
        Assert.Empty(new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Exclude = new[] { "conv_t1", "conv_e*", "Gemm" } }.CheckExclude(model));
        // An op type the quantizer knows but this model lacks: allowed, returned for a warning.
        Assert.Equal(new[] { "MatMul" }, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Exclude = new[] { "MatMul", "gemm" } }.CheckExclude(model));
        // The scoped layer name is not what ExcludeReason matches, so it is refused too.
        foreach (var (entry, hint) in new[] { ("CONV_T2", "did you mean 'conv_t2'?"), ("GEMM", "did you mean 'Gemm'?"), ("Conv_*", "matches 'conv_t1'"),
                     ("if/then_branch/conv_t1", null), ("nosuch", null) })
        {
            var ex = Assert.Throws<PtqException>(() => new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Exclude = new[] { "gemm", entry } }.CheckExclude(model, "m.onnx"));
            Assert.Equal("ExcludeMatchesNothing", ex.ErrorId);
            Assert.Equal(PtqErrorKind.InvalidArgument, ex.Kind);
            Assert.Equal(entry, ex.Target);
            Assert.Contains($"'{entry}'", ex.Message);
            Assert.Contains("'m.onnx'", ex.Message);
            if (hint is null) Assert.DoesNotContain("did you mean", ex.Message);
            else Assert.Contains(hint, ex.Message);
        }
    }

    [Fact]
    public void IfBranchLayers_AreListedWithTheirScope()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var path = dir.File("if.onnx");
        File.WriteAllBytes(path, IfModel().ToByteArray());
        var layers = ModelInspector.Layers(ModelPreparer.Prepare(path));
        foreach (var (name, weight) in new[] { ("if/then_branch/conv_t1", 4L), ("if/then_branch/conv_t2", 4L), ("if/else_branch/conv_e", 4L) })
        {
            var layer = layers.Single(l => l.Name == name);
            Assert.True(layer.Quantizable, $"{name}: {layer.Reason}");
            Assert.Equal(name[..(name.LastIndexOf('/') + 1)], layer.Scope);
            Assert.Equal(weight, layer.WeightShape[0]);
        }
        // The layers of a branch follow the If node that owns them.
        var ifIndex = layers.FindIndex(l => l.Name == "if");
        Assert.True(layers.FindIndex(l => l.Name == "if/then_branch/conv_t1") > ifIndex);
        Assert.True(layers.FindIndex(l => l.Name == "gap") > layers.FindIndex(l => l.Name == "if/else_branch/conv_e"));
    }

    [Fact]
    public void LayerAnalysis_RanksTheLayersInsideBranches()
    {
        // Before: a LayersInSubgraphs error (the layer analysis exposed main-graph tensors only), so the accuracy-aware
        // search and the fidelity guard could not rank, nor keep in float, any layer of a model such as a VAD.
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var path = dir.File("if.onnx");
        File.WriteAllBytes(path, IfModel().ToByteArray());
        var prepared = ModelPreparer.Prepare(path);
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Exclude = new[] { "gemm", "gap", "flatten" } };
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null, options.FloatReason);
        var inputs = Inputs(8, 5);
        Assert.Contains(inputs, TakesThen);
        Assert.Contains(inputs, x => !TakesThen(x));
        var data = DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        var errors = LayerErrorAnalyzer.Run(prepared, stats, options, data, 1, null, CancellationToken.None);
        Assert.Equal(new[] { "if/else_branch/conv_e", "if/then_branch/conv_t1", "if/then_branch/conv_t2" }, errors.Select(e => e.Layer).Order());
        Assert.Equal(new[] { 1, 2, 3 }, errors.Select(e => e.Rank));
        foreach (var e in errors)
        {
            // Quantization error at the layer's own output (a tensor of the branch) and at the model's output: finite,
            // neither perfect nor nothing (a layer of the branch not taken gives no values on that sample).
            Assert.StartsWith(e.Layer[..(e.Layer.LastIndexOf('/') + 1)], e.Tensor);
            Assert.InRange(e.IsolatedSqnrDb, 10, 150);
            Assert.InRange(e.IsolatedOutputSqnrDb, 10, 150);
            Assert.InRange(e.AccumulatedSqnrDb, 5, 150);
            Assert.NotNull(e.WeightSqnrDb);
            Assert.True(e.ElementCount > 0);
        }
        // The then branch's conv_t1 reads x of the main graph: its input quantization error is measured on x.
        Assert.NotNull(errors.Single(e => e.Layer == "if/then_branch/conv_t1").ActivationSqnrDb);
    }

    /// <summary>The If model with one outlier weight in the then branch's conv_t2 (a Constant in the branch), so that
    /// per-tensor int8 weights round its other weights away, in an output channel the head ignores: the layer that
    /// hurts most sits inside a branch.</summary>
    static ModelProto IfModelWithOutlier()
    {
        var model = IfModel();
        var then = model.Graph.Node.Single(n => n.OpType == "If").Attribute.Single(a => a.Name == "then_branch").G;
        var w2 = then.Node.Single(n => n.Output[0] == "w2").Attribute.Single(a => a.Name == "value");
        var values = TensorData.ReadFloats(w2.T);
        values[0] = 400;   // output channel 0, input channel 0
        w2.T = TensorData.FromFloats("", values, w2.T.Dims.ToArray());
        // The head ignores channel 0: what counts is channels 1 to 3, which per-tensor int8 rounds away in conv_t2.
        var wg = model.Graph.Initializer.Single(t => t.Name == "wg");
        var head = TensorData.ReadFloats(wg);
        for (int j = 0; j < 10; j++) head[j] = 0;
        model.Graph.Initializer[model.Graph.Initializer.IndexOf(wg)] = TensorData.FromFloats("wg", head, 4, 10);
        return model;
    }

    [Fact]
    public void AccuracyAwareSearch_KeepsABranchLayerInFloat_AndTheWrittenModelHasIt()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var path = dir.File("if.onnx");
        var model = IfModelWithOutlier();
        File.WriteAllBytes(path, model.ToByteArray());
        var prepared = ModelPreparer.Prepare(path);
        // Only the branch layers are quantized, their weights per tensor: conv_t2's outlier ruins its int8 copy.
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, PerChannel = false, Exclude = new[] { "gemm", "gap", "flatten" } };
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null, options.FloatReason);
        var calibration = Inputs(24, 5);
        var evaluation = Inputs(16, 6);
        Assert.True(evaluation.Count(TakesThen) >= 4 && evaluation.Count(x => !TakesThen(x)) >= 4);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, DataSetReader.FromArrays(calibration, new[] { 3, 8, 8 }, null, new PtqDataSet()), 1, null, CancellationToken.None);
        var data = DataSetReader.FromArrays(evaluation, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var reference = evaluation.Select(x => Ort.Run(model, "x", x, TinyModels.InputShape)["y"]).ToArray();
        TaskMetric metric = (outputs, _) => TaskMetrics.CosineToReference(outputs, reference);
        var output = dir.File("if.int8.onnx");
        var result = AccuracyAwareSearch.Run(prepared, stats, options, output, data, metric, 0.002, TimeSpan.FromMinutes(2), 1, null, CancellationToken.None,
            timeCandidates: false);
        Assert.True(result.GoalMet, result.SearchSummary);
        Assert.Contains("ranked by the metric's drop", result.SearchSummary);
        // The fully quantized model misses the goal: the search had to keep a layer in float, the branch's conv_t2.
        Assert.True(result.Candidates[0].Drop > 0.002, result.SearchSummary);
        Assert.Equal(new[] { "if/then_branch/conv_t2" }, result.KeptInFloat);
        Assert.Contains("if/then_branch/conv_t1", result.QuantizedLayers);
        Assert.Contains("if/else_branch/conv_e", result.QuantizedLayers);
        Assert.DoesNotContain("if/then_branch/conv_t2", result.QuantizedLayers);

        // The written model: conv_t2 reads its float weight, the other branch convs their int8 ones.
        var written = OnnxModelIO.Load(output);
        var ifNode = written.Graph.Node.Single(n => n.OpType == "If");
        var thenGraph = ifNode.Attribute.Single(a => a.Name == "then_branch").G;
        var producers = thenGraph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var t2 = thenGraph.Node.Single(n => n.Name == "conv_t2");
        Assert.False(producers.TryGetValue(t2.Input[1], out var p2) && p2.OpType == "DequantizeLinear");
        Assert.Contains(thenGraph.Initializer, t => t.Name == t2.Input[1] && t.DataType == (int)OnnxDataType.Float);
        Assert.Equal("DequantizeLinear", producers[thenGraph.Node.Single(n => n.Name == "conv_t1").Input[1]].OpType);
        foreach (var (x, expected) in evaluation.Zip(reference))
        {
            var actual = Ort.Run(written, "x", x, TinyModels.InputShape)["y"];
            Assert.True(Check.Cosine(expected, actual) > 0.99, $"cosine {Check.Cosine(expected, actual)}");
        }
    }

    [Fact]
    public void IfBranchWithConstantWeights_IsCalibratedAndQuantizedInPlace()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var model = IfModel();
        var path = dir.File("if.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var calibration = Inputs(24, 5);
        var evaluation = Inputs(16, 6);
        Assert.Contains(calibration, TakesThen);
        Assert.Contains(calibration, x => !TakesThen(x));
        Assert.Contains(evaluation, TakesThen);
        Assert.Contains(evaluation, x => !TakesThen(x));

        var prepared = ModelPreparer.Prepare(path);
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        Assert.Contains("if/then_branch/conv_t1", plan.QuantizedLayers);
        Assert.Contains("if/else_branch/conv_e", plan.QuantizedLayers);
        // The branch reads x from the main graph: its range is x's; the branch's own tensors are named by scope.
        Assert.Contains("if/then_branch/conv_t1", plan.Activations["x"]);
        Assert.Contains("if/then_branch/t_r1", plan.Activations.Keys);
        Assert.Contains("if/else_branch/e_out", plan.Activations.Keys);

        var data = DataSetReader.FromArrays(calibration, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        // Each branch tensor is observed on exactly the samples that take its branch, with the values ORT computes there.
        int thenCount = calibration.Count(TakesThen);
        var tr1 = stats.Single(s => s.Tensor == "if/then_branch/t_r1");
        var eOut = stats.Single(s => s.Tensor == "if/else_branch/e_out");
        Assert.Equal(thenCount, tr1.SampleCount);
        Assert.Equal(calibration.Length - thenCount, eOut.SampleCount);
        Assert.True(tr1.Min >= 0 && tr1.Max > 0, $"relu output range [{tr1.Min}, {tr1.Max}]");
        var referenceMax = calibration.Where(TakesThen).Max(x => ThenReluMax(model, x));
        Assert.Equal(referenceMax, tr1.Max, 4);

        var output = dir.File("if.int8.onnx");
        var result = QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), output, CancellationToken.None);
        foreach (var layer in new[] { "if/then_branch/conv_t1", "if/then_branch/conv_t2", "if/else_branch/conv_e", "gemm" })
            Assert.Contains(layer, result.QuantizedLayers);

        var quantized = OnnxModelIO.Load(output);
        var ifNode = quantized.Graph.Node.Single(n => n.OpType == "If");
        foreach (var branch in new[] { "then_branch", "else_branch" })
        {
            var g = ifNode.Attribute.Single(a => a.Name == branch).G;
            var producers = g.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
            foreach (var conv in g.Node.Where(n => n.OpType == "Conv"))
            {
                // Weight and activation come through DequantizeLinear from int8 data held in the branch.
                Assert.Equal("DequantizeLinear", producers[conv.Input[1]].OpType);
                Assert.Equal("DequantizeLinear", producers[conv.Input[0]].OpType);
                var q = producers[conv.Input[1]].Input[0];
                Assert.Contains(g.Initializer, t => t.Name == q && t.DataType == (int)OnnxDataType.Int8 && t.Dims.Count == 4);
            }
            Assert.DoesNotContain(g.Node, n => n.OpType == "Constant" && n.Attribute.Any(a => a.T?.DataType == (int)OnnxDataType.Float && a.T.Dims.Count == 4));
        }
        // The float weight of the else branch (an outer-scope initializer) is gone, replaced by the branch's int8 copy.
        Assert.DoesNotContain(quantized.Graph.Initializer, t => t.Name == "we");

        // ONNX Runtime fuses the branch's Q/DQ around Conv into QLinearConv: the layers run in int8.
        var optimizedPath = dir.File("if.int8.ort.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (new InferenceSession(output, options)) { }
        var optimized = OnnxModelIO.Load(optimizedPath, validate: false);
        var fused = OpsetUpgrader.AllNodes(optimized.Graph).Count(n => n.OpType == "QLinearConv");
        Assert.True(fused >= 3, $"{fused} QLinearConv nodes after ONNX Runtime's optimization");

        foreach (var x in evaluation)
        {
            var expected = Ort.Run(model, "x", x, TinyModels.InputShape)["y"];
            var actual = Ort.Run(quantized, "x", x, TinyModels.InputShape)["y"];
            var error = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
            var scale = expected.Max(Math.Abs);
            Assert.True(Check.Cosine(expected, actual) > 0.995 && error < 0.05 * scale,
                $"branch {(TakesThen(x) ? "then" : "else")}: cosine {Check.Cosine(expected, actual):F5}, max error {error} of {scale}");
        }
    }

    /// <summary>The then branch's Relu output, computed by ONNX Runtime on the then branch run as a model of its own.</summary>
    static float ThenReluMax(ModelProto model, float[] x)
    {
        var ifNode = model.Graph.Node.Single(n => n.OpType == "If");
        var branch = ifNode.Attribute.Single(a => a.Name == "then_branch").G.Clone();
        var standalone = new ModelBuilder(13, 7, "then_alone").Input("x", 1, 3, 8, 8).Output("t_r1");
        standalone.Graph.Initializer.Add(model.Graph.Initializer.Single(t => t.Name == "b"));
        standalone.Graph.Node.AddRange(branch.Node.Where(n => n.Name != "conv_t2"));
        return Ort.Run(standalone.Model, "x", x, TinyModels.InputShape)["t_r1"].Max();
    }

    [Fact]
    public void LoopBodyTensor_IsObservedOverEveryIteration()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var r = new Random(3);
        // Loop 3 times: s = Conv(s, w) with w an outer initializer; the body's Conv output is a scan output too.
        var body = new ModelBuilder(13, 7, "body");
        body.Graph.Input.Add(ModelBuilder.Value("iter", Array.Empty<long>(), (int)OnnxDataType.Int64));
        body.Graph.Input.Add(ModelBuilder.Value("cond_in", Array.Empty<long>(), (int)OnnxDataType.Bool));
        body.Graph.Input.Add(ModelBuilder.Value("s", new long[] { 1, 3, 8, 8 }));
        body.Node("Identity", new[] { "cond_in" }, new[] { "cond_out" }, "cond_copy")
            .Node("Conv", new[] { "s", "w", "bw" }, new[] { "s_conv" }, "conv_body", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Tanh", new[] { "s_conv" }, new[] { "s_next" }, "tanh");
        body.Graph.Output.Add(ModelBuilder.Value("cond_out", Array.Empty<long>(), (int)OnnxDataType.Bool));
        body.Graph.Output.Add(ModelBuilder.Value("s_next", new long[] { 1, 3, 8, 8 }));
        var main = new ModelBuilder(13, 7, "loop").Input("x", 1, 3, 8, 8)
            .RandomInit(r, "w", 0.3f, 3, 3, 3, 3).RandomInit(r, "bw", 0.1f, 3);
        main.Graph.Initializer.Add(new TensorProto { Name = "trip", DataType = (int)OnnxDataType.Int64, Int64Data = { 3 } });
        main.Graph.Initializer.Add(new TensorProto { Name = "go", DataType = (int)OnnxDataType.Bool, Int32Data = { 1 } });
        var loop = new NodeProto { OpType = "Loop", Name = "loop" };
        loop.Input.Add("trip"); loop.Input.Add("go"); loop.Input.Add("x");
        loop.Output.Add("y");
        loop.Attribute.Add(Graph("body", body.Graph));
        main.Graph.Node.Add(loop);
        main.Output("y", 1, 3, 8, 8);
        var path = dir.File("loop.onnx");
        File.WriteAllBytes(path, main.Model.ToByteArray());

        var prepared = ModelPreparer.Prepare(path);
        var layer = ModelInspector.Layers(prepared).Single(l => l.Name == "loop/body/conv_body");
        Assert.True(layer.Quantizable, layer.Reason);
        Assert.Equal("w", layer.WeightName);
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var inputs = Inputs(4, 8);
        var data = DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        // The Conv's input s is the loop state: x on the first iteration, tanh outputs after, so its range covers x.
        var s = stats.Single(t => t.Tensor == "loop/body/s");
        Assert.Equal(inputs.Min(x => x.Min()), s.Min, 5);
        var conv = stats.Single(t => t.Tensor == "loop/body/s_conv");
        Assert.True(conv.SampleCount == inputs.Length && conv.ElementCount == inputs.Length * 3L * 3 * 8 * 8, $"{conv.SampleCount} samples, {conv.ElementCount} values");

        // The layer analysis measures the body's Conv over every iteration (3 of [1,3,8,8] per sample).
        var error = LayerErrorAnalyzer.Run(prepared, stats, new QuantizationOptions(), data, 1, null, CancellationToken.None).Single();
        Assert.Equal("loop/body/conv_body", error.Layer);
        Assert.Equal(3L * 3 * 8 * 8, error.ElementCount);
        Assert.InRange(error.IsolatedSqnrDb, 10, 150);
        Assert.InRange(error.IsolatedOutputSqnrDb, 10, 150);

        var output = dir.File("loop.int8.onnx");
        var result = QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), output, CancellationToken.None);
        Assert.Contains("loop/body/conv_body", result.QuantizedLayers);
        var quantized = OnnxModelIO.Load(output);
        foreach (var x in inputs)
        {
            var expected = Ort.Run(main.Model, "x", x, TinyModels.InputShape)["y"];
            var actual = Ort.Run(quantized, "x", x, TinyModels.InputShape)["y"];
            Assert.True(Check.Cosine(expected, actual) > 0.99, $"cosine {Check.Cosine(expected, actual)}");
        }
    }
}
