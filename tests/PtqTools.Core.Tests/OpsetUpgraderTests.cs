using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

public class OpsetUpgraderTests
{
    /// <summary>IR 3 lists initializers as graph inputs, as old exporters did.</summary>
    static void ListInitializersAsInputs(ModelBuilder b)
    {
        foreach (var t in b.Graph.Initializer)
            b.Graph.Input.Add(ModelBuilder.Value(t.Name, t.Dims.ToArray(), t.DataType));
    }

    static ModelBuilder Opset8Cnn()
    {
        var r = new Random(11);
        var b = new ModelBuilder(8, 3, "cnn8")
            .Input("x", 1, 3, 16, 16)
            .RandomInit(r, "w1", 0.4f, 8, 3, 3, 3).RandomInit(r, "b1", 0.2f, 8)
            .RandomInit(r, "w2", 0.2f, 8, 8, 3, 3)
            .RandomInit(r, "wg", 0.1f, 512, 10).RandomInit(r, "bg", 0.2f, 10)
            .Node("Conv", new[] { "x", "w1", "b1" }, new[] { "c1" }, "conv1", ("pads", new long[] { 1, 1, 1, 1 }), ("kernel_shape", new long[] { 3, 3 }))
            .Node("Relu", new[] { "c1" }, new[] { "r1" }, "relu1")
            .Node("MaxPool", new[] { "r1" }, new[] { "p" }, "pool", ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 }))
            .Node("Conv", new[] { "p", "w2" }, new[] { "c2" }, "conv2", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Add", new[] { "c2", "p" }, new[] { "a" }, "add")
            .Node("Flatten", new[] { "a" }, new[] { "f" }, "flatten", ("axis", 1))
            .Node("Gemm", new[] { "f", "wg", "bg" }, new[] { "y" }, "gemm", ("alpha", 1f), ("beta", 1f))
            .Output("y", 1, 10);
        ListInitializersAsInputs(b);
        return b;
    }

    static (Dictionary<string, float[]> Before, Dictionary<string, float[]> After, ModelProto Upgraded) RunBeforeAndAfter(
        ModelBuilder b, long[] shape, int seed)
    {
        var input = Check.RandomFloats(new Random(seed), (int)TensorData.ElementCount(shape), 3f);
        var before = Ort.Run(b.Model, "x", input, shape);
        var upgraded = b.Model.Clone();
        Assert.True(OpsetUpgrader.UpgradeTo13(upgraded));
        Assert.Equal(13, OpsetUpgrader.DefaultOpset(upgraded));
        Assert.True(upgraded.IrVersion >= 7);
        // The upgraded model is still valid, and ONNX Runtime runs it at opset 13.
        var reparsed = OnnxModelIO.Parse(upgraded.ToByteArray(), "upgraded.onnx");
        var after = Ort.Run(reparsed, "x", input, shape);
        Assert.Equal(before.Keys.OrderBy(k => k), after.Keys.OrderBy(k => k));
        return (before, after, upgraded);
    }

    [Fact]
    public void Opset8Cnn_UpgradesTo13_WithTheSameOutputs()
    {
        var b = Opset8Cnn();
        Assert.Empty(OpsetUpgrader.Blockers(b.Model));
        var (before, after, upgraded) = RunBeforeAndAfter(b, new long[] { 1, 3, 16, 16 }, 21);
        // ORT picks other kernels at opset 13 (Gemm-13, Conv-11), so the sums may round differently: float noise only.
        Check.Close(before["y"], after["y"], 1e-5 * before["y"].Max(Math.Abs), "opset 8 vs opset 13");
        Assert.Contains(before["y"], v => v != 0);
        Assert.Equal(b.Graph.Node.Select(n => n.OpType), upgraded.Graph.Node.Select(n => n.OpType));
        // Upgrading again does nothing.
        Assert.False(OpsetUpgrader.UpgradeTo13(upgraded));
    }

    [Fact]
    public void Opset7SliceMaxMaxPool_AreRaised_WithTheSameOutputs()
    {
        var b = new ModelBuilder(7, 3, "slice7")
            .Input("x", 1, 2, 4, 6)
            .Node("Slice", new[] { "x" }, new[] { "s" }, "slice", ("starts", new long[] { 1, 0 }), ("ends", new long[] { 4, 1000 }), ("axes", new long[] { 2, 3 }))
            .Node("Max", new[] { "s", "s" }, new[] { "m" }, "max")
            .Node("MaxPool", new[] { "m" }, new[] { "y" }, "pool", ("kernel_shape", new long[] { 1, 2 }), ("strides", new long[] { 1, 2 }))
            .Output("y", 1, 2, 3, 3);
        Assert.Empty(OpsetUpgrader.Blockers(b.Model));
        var (before, after, upgraded) = RunBeforeAndAfter(b, new long[] { 1, 2, 4, 6 }, 24);
        Assert.Equal(18, before["y"].Length);
        Assert.Equal(before["y"], after["y"]);
        var slice = upgraded.Graph.Node.Single(n => n.OpType == "Slice");
        Assert.Empty(slice.Attribute);
        Assert.Equal(4, slice.Input.Count);
    }

    [Fact]
    public void Opset10Scatter_BecomesScatterElements_WithTheSameOutputs()
    {
        var b = new ModelBuilder(10, 5, "scatter10").Input("x", 2, 3);
        b.Graph.Initializer.Add(new TensorProto { Name = "idx", DataType = (int)OnnxDataType.Int64, Dims = { 1, 2 }, Int64Data = { 2, 0 } });
        b.Init("upd", new[] { 5f, 7f }, 1, 2)
            .Node("Scatter", new[] { "x", "idx", "upd" }, new[] { "y" }, "scatter", ("axis", 1))
            .Output("y", 2, 3);
        var (before, after, upgraded) = RunBeforeAndAfter(b, new long[] { 2, 3 }, 25);
        Assert.Equal(before["y"], after["y"]);
        Assert.Equal(5f, after["y"][2]);
        Assert.Equal(7f, after["y"][0]);
        Assert.Equal("ScatterElements", upgraded.Graph.Node.Single().OpType);
    }

    [Fact]
    public void Opset8ClipPadDropout_AreRewritten_WithTheSameOutputs()
    {
        var b = new ModelBuilder(8, 3, "rewrites")
            .Input("x", 1, 2, 3, 3)
            .Node("Pad", new[] { "x" }, new[] { "p" }, "pad", ("pads", new long[] { 0, 0, 1, 2, 0, 0, 2, 1 }), ("value", 0.75f))
            .Node("Clip", new[] { "p" }, new[] { "c" }, "clip", ("min", -0.5f), ("max", 1.25f))
            .Node("Dropout", new[] { "c" }, new[] { "y" }, "dropout", ("ratio", 0.3f))
            .Output("y", 1, 2, 6, 6);
        var (before, after, upgraded) = RunBeforeAndAfter(b, new long[] { 1, 2, 3, 3 }, 22);
        Assert.Equal(before["y"], after["y"]);
        Assert.Contains(before["y"], v => v == 0.75f);   // padding value kept
        Assert.Contains(before["y"], v => v == 1.25f);   // clipped
        Assert.Contains(before["y"], v => v == -0.5f);
        Assert.DoesNotContain(upgraded.Graph.Node.SelectMany(n => n.Attribute), a => a.Name is "pads" or "min" or "max" or "ratio" or "value");
    }

    static ModelBuilder SqueezeSoftmaxUnsqueeze(int opset) => new ModelBuilder(opset, opset >= 11 ? 6 : 3, "squeeze")
        .Input("x", 1, 3, 1, 4)
        .Node("Squeeze", new[] { "x" }, new[] { "s" }, "squeeze", ("axes", new long[] { 2 }))
        .Node("Softmax", new[] { "s" }, new[] { "sm" }, "softmax", ("axis", 1))
        .Node("Unsqueeze", new[] { "sm" }, new[] { "y" }, "unsqueeze", ("axes", new long[] { 1 }))
        .Output("y", 1, 1, 3, 4);

    [Theory]
    [InlineData(8)]
    [InlineData(11)]
    public void SqueezeUnsqueezeAndCoercedSoftmax_KeepTheirMeaning(int opset)
    {
        var (before, after, upgraded) = RunBeforeAndAfter(SqueezeSoftmaxUnsqueeze(opset), new long[] { 1, 3, 1, 4 }, 23);
        Assert.Equal(before["y"], after["y"]);
        // The old Softmax flattened [1,3,4] to [1,12] at axis 1: all twelve values sum to one, not each column of three.
        Assert.Equal(1.0, after["y"].Sum(v => (double)v), 5);
        var columnSums = Enumerable.Range(0, 4).Select(col => Enumerable.Range(0, 3).Sum(row => (double)after["y"][row * 4 + col])).ToArray();
        Assert.Contains(columnSums, s => Math.Abs(s - 1) > 0.05);
        foreach (var node in upgraded.Graph.Node.Where(n => n.OpType is "Squeeze" or "Unsqueeze"))
        {
            Assert.DoesNotContain(node.Attribute, a => a.Name == "axes");
            Assert.Equal(2, node.Input.Count);
        }
        Assert.Contains(upgraded.Graph.Node, n => n.OpType == "Softmax" && n.Attribute.Single(a => a.Name == "axis").I == -1);
    }

    [Theory]
    [InlineData("Upsample")]
    public void OpWithoutAMeaningKeepingRewrite_BlocksTheUpgrade(string op)
    {
        var b = new ModelBuilder(8, 3, "blocked").Input("x", 1, 1, 2, 2);
        b.Node("Upsample", new[] { "x" }, new[] { "u" }, "up", ("scales", new[] { 1f, 1f, 2f, 2f }), ("mode", "nearest"));
        b.Node("Relu", new[] { "u" }, new[] { "y" }, "relu").Output("y");
        var original = b.Model.Clone();

        Assert.Contains(OpsetUpgrader.Blockers(b.Model), s => s.StartsWith(op, StringComparison.Ordinal));
        var ex = Check.Throws("OpsetUpgradeBlocked", () => OpsetUpgrader.UpgradeTo13(b.Model));
        Assert.Contains(op, ex.Message);
        Assert.StartsWith(op, (string)ex.Target!);
        // Nothing was changed on the way to the error.
        Assert.Equal(original, b.Model);
        // Preparation keeps the model at its opset, so its layers are still listed, each with the reason; planning
        // a quantization refuses the same way.
        using var dir = new TempDir();
        TestPaths.UseTempCache();
        var prepared = ModelPreparer.Prepare(b.Save(dir.File("blocked.onnx")));
        Assert.Equal(8, OpsetUpgrader.DefaultOpset(prepared.Model));
        var layers = ModelInspector.Layers(prepared);
        Assert.Contains(layers, l => l.OpType == op);
        Assert.All(layers, l => Assert.False(l.Quantizable));
        Assert.Contains(op, Check.Throws("OpsetUpgradeBlocked", () => Quantizer.Plan(prepared, Array.Empty<PtqTools.Core.Model.TensorStatistics>())).Message);
    }
}
