using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The QOperator format: ResNet18 from the same statistics as its QDQ model, and the tiny residual CNN.</summary>
public sealed class QOperatorTests : IClassFixture<ResNet18Fixture>
{
    readonly ResNet18Fixture _f;
    readonly ITestOutputHelper _out;

    public QOperatorTests(ResNet18Fixture fixture, ITestOutputHelper output)
    {
        _f = fixture;
        _out = output;
    }

    [Fact]
    public void ResNet18_BecomesQLinearOperators_AndAgreesWithFloatAndQdq()
    {
        var path = _f.Dir.File("resnet18.qop.onnx");
        var result = QuantizationPipeline.Run(_f.Prepared, _f.Statistics, new QuantizationOptions { Format = QuantFormat.QOperator }, path, default);
        Assert.Equal("QOperator", result.Format);
        var model = OnnxModelIO.Load(path);
        var ops = model.Graph.Node.GroupBy(n => n.OpType).ToDictionary(g => g.Key, g => g.Count());
        _out.WriteLine(string.Join(", ", ops.Select(kv => $"{kv.Key}:{kv.Value}")));
        Assert.Equal(_f.Prepared.Model.Graph.Node.Count(n => n.OpType == "Conv"), ops.GetValueOrDefault("QLinearConv"));
        Assert.Equal(_f.Prepared.Model.Graph.Node.Count(n => n.OpType == "Add"), ops.GetValueOrDefault("QLinearAdd"));
        Assert.False(ops.ContainsKey("Conv") || ops.ContainsKey("Relu") || ops.ContainsKey("Add"), "float Conv/Relu/Add left");
        Assert.Equal(1, ops.GetValueOrDefault("QuantizeLinear"));   // the graph input only
        Assert.True(new FileInfo(path).Length <= 0.255 * new FileInfo(_f.FloatPath).Length);
        var vsFloat = ModelComparer.Compare(_f.FloatPath, path, _f.Evaluation, 2, 0, null, null, default);
        var vsQdq = ModelComparer.Compare(_f.QuantizedPath, path, _f.Evaluation, 2, 0, null, null, default);
        _out.WriteLine($"QOperator vs float cosine {vsFloat.Cosine:F4}; vs QDQ {vsQdq.Cosine:F5}");
        Assert.True(vsFloat.Cosine >= 0.99, $"cosine vs float {vsFloat.Cosine}");
        Assert.True(vsQdq.Cosine >= 0.999, $"cosine vs QDQ {vsQdq.Cosine}");
    }

    [Theory]
    [InlineData(QuantType.UInt8, false)]
    [InlineData(QuantType.Int8, true)]
    public void TinyCnn_QOperatorComputesWhatTheQdqModelComputes(QuantType type, bool symmetric)
    {
        var model = TinyModels.ResidualCnn().Model;
        var view = new GraphView(model.Graph);
        var plan = QuantizationPlan.Create(view, null);
        var r = new Random(3);
        var ranges = plan.Activations.Keys.ToDictionary(k => k, k => new TensorRange(k == "x" ? -2f : 0f, 3f + (float)r.NextDouble()));
        var options = new QuantizationOptions { ActivationType = type, ActivationSymmetric = symmetric };
        var qdq = QdqQuantizer.Quantize(model, plan, ranges, options);
        var qop = QOperatorConverter.Convert(qdq);
        Assert.Contains(qop.Graph.Node, n => n.OpType == "QLinearConv");
        Assert.Contains(qop.Graph.Node, n => n.OpType == "QLinearGlobalAveragePool");
        var x = TinyModels.RandomInput(new Random(5));
        var a = Ort.Run(qdq, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_DISABLE_ALL)["y"];
        var b = Ort.Run(qop, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_DISABLE_ALL)["y"];
        double cos = Check.Cosine(a, b);
        _out.WriteLine($"{type}: QOperator vs QDQ cosine {cos:F6}");
        Assert.True(cos >= 0.999, $"QOperator vs QDQ cosine {cos}");
    }

    [Fact]
    public void QOperatorIsRefusedOutsideStaticMode() =>
        Check.Throws("InvalidOptionCombination", new QuantizationOptions { Mode = QuantMode.Dynamic, Format = QuantFormat.QOperator }.Validate);
}
