using System.Diagnostics;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>ResNet18 (opset 8, BatchNorm unfused) prepared, calibrated on 32 Fashion-MNIST training images made the way
/// the model expects (224x224, 0..255, minus its mean image through ResNetPreprocess.onnx), quantized, and compared
/// with the float model on 32 test images. Run once for the class: it is the slow part of the suite.</summary>
public sealed class ResNet18Fixture : IDisposable
{
    public ResNet18Fixture()
    {
        var clock = Stopwatch.StartNew();
        TestPaths.UseTempCache();
        FloatPath = TestPaths.ResNet18;
        var data = TestPaths.FashionMnist;
        var preprocess = TestPaths.ResNetPreprocess;
        Dir = new TempDir();
        try
        {
            Original = OnnxModelIO.Load(FloatPath);
            Prepared = ModelPreparer.Prepare(FloatPath);
            Plan = QuantizationPlan.Create(new GraphView(Prepared.Model.Graph), null);
            Calibration = DataSetReader.FromIdx(Path.Combine(data, "train-images-idx3-ubyte.gz"), null,
                new PtqDataSet { Resize = 224, Scale = 1, PreprocessModel = preprocess, Count = 32 });
            Evaluation = DataSetReader.FromIdx(Path.Combine(data, "t10k-images-idx3-ubyte.gz"), null,
                new PtqDataSet { Resize = 224, Scale = 1, PreprocessModel = preprocess, Skip = 100, Count = 32 });
            Statistics = ActivationCalibrator.Run(Prepared, Plan.Activations, Calibration, 2, null, CancellationToken.None);
            QuantizedPath = Dir.File("resnet18.int8.onnx");
            Result = QuantizationPipeline.Run(Prepared, Statistics, new QuantizationOptions(), QuantizedPath, CancellationToken.None);
            Quantized = OnnxModelIO.Load(QuantizedPath);
            Report = ModelComparer.Compare(FloatPath, QuantizedPath, Evaluation, 2, 0, null, null, CancellationToken.None);
        }
        catch
        {
            Dir.Dispose();   // xunit does not dispose a fixture whose constructor throws
            throw;
        }
        Elapsed = clock.Elapsed;
    }

    public TempDir Dir { get; }
    public string FloatPath { get; }
    public ModelProto Original { get; }
    public PreparedModel Prepared { get; }
    public QuantizationPlan Plan { get; }
    public PtqDataSet Calibration { get; }
    public PtqDataSet Evaluation { get; }
    public List<TensorStatistics> Statistics { get; }
    public string QuantizedPath { get; }
    public QuantizationResult Result { get; }
    public ModelProto Quantized { get; }
    public AccuracyReport Report { get; }
    public TimeSpan Elapsed { get; }

    public void Dispose() => Dir.Dispose();
}

public class ResNet18Tests : IClassFixture<ResNet18Fixture>
{
    readonly ResNet18Fixture _f;
    readonly ITestOutputHelper _out;

    public ResNet18Tests(ResNet18Fixture fixture, ITestOutputHelper output)
    {
        _f = fixture;
        _out = output;
    }

    [Fact]
    public void Preparation_FoldsBatchNorm_AndOnlyQuantizationRaisesTheOpsetTo13()
    {
        Assert.Equal(8, OpsetUpgrader.DefaultOpset(_f.Original));
        Assert.Contains(_f.Original.Graph.Node, n => n.OpType == "BatchNormalization");
        Assert.DoesNotContain(_f.Prepared.Model.Graph.Node, n => n.OpType == "BatchNormalization");
        // Listing and calibrating run at the model's own opset; per-channel QDQ needs 13.
        Assert.Equal(8, OpsetUpgrader.DefaultOpset(_f.Prepared.Model));
        Assert.Equal(13, OpsetUpgrader.DefaultOpset(_f.Quantized));
        Assert.Equal(_f.Original.Graph.Node.Count(n => n.OpType == "Conv"), _f.Prepared.Model.Graph.Node.Count(n => n.OpType == "Conv"));
        Assert.All(_f.Prepared.Model.Graph.Node.Where(n => n.OpType == "Conv"), n => Assert.Equal(3, n.Input.Count));   // BN became the bias
    }

    [Fact]
    public void CalibrationData_IsPreparedTheWayTheModelExpects()
    {
        Assert.Equal(32, _f.Calibration.Count);
        Assert.Equal(new[] { 3, 224, 224 }, _f.Calibration.SampleShape);
        Assert.Equal(32, _f.Evaluation.Count);
        Assert.Equal(100, _f.Evaluation.Skip);
        // Pixels in 0..255 minus a mean image: the input range is far wider than 0..1 and reaches below zero.
        var input = _f.Statistics.Single(s => s.Tensor == _f.Prepared.Model.Graph.Input[0].Name);
        Assert.True(input.RangeMin < -50 && input.RangeMax > 100, $"input range [{input.RangeMin}, {input.RangeMax}]");
        Assert.Equal(32, input.SampleCount);
    }

    [Fact]
    public void QuantizedModel_StaysCloseToFloat_AndIsAQuarterOfTheSize()
    {
        var r = _f.Report;
        _out.WriteLine($"cosine {r.Cosine} (min {r.Outputs[0].MinCosine}), SQNR {r.SqnrDb} dB, size {_f.Result.OutputSizeBytes}/{_f.Result.SourceSizeBytes} = {_f.Result.SizeRatio}, fixture {_f.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(32, r.SampleCount);
        Assert.True(r.Cosine >= 0.99, $"cosine {r.Cosine} < 0.99 (SQNR {r.SqnrDb} dB)");
        long floatSize = new FileInfo(_f.FloatPath).Length, quantSize = new FileInfo(_f.QuantizedPath).Length;
        Assert.True(quantSize <= 0.26 * floatSize, $"{quantSize} bytes is {(double)quantSize / floatSize:P1} of {floatSize}");
        Assert.Equal(quantSize, _f.Result.OutputSizeBytes);
    }

    [Fact]
    public void DefaultModel_IsWrittenPortable_WithNoPairThatCanSaturate()
    {
        Assert.Equal("Portable", _f.Result.Target);
        Assert.Empty(WeightPairs.AtRiskLayers(_f.Quantized));
        Assert.Empty(_f.Result.OverflowLayers);
        // Full-range weights would put pairs at risk in most layers; the fix touched some channels, not whole layers.
        Assert.NotEmpty(_f.Result.PairSafeLayers);
        Assert.Contains(_f.Result.Decisions, d => d.Reason.Contains("output channels rescaled so that no u8 x s8 pair sum can leave int16"));
        Assert.Contains(_f.Result.Decisions, d => d.Reason.Contains("no u8 x s8 pair sum can leave int16"));
        _out.WriteLine($"pair-safe layers: {_f.Result.PairSafeLayers.Length} of {_f.Result.QuantizedLayerCount}");
        foreach (var d in _f.Result.Decisions.Where(d => d.Reason.Contains("rescaled"))) _out.WriteLine(d.ToString());
    }

    [Fact]
    public void EveryConv_HasInt8PerChannelWeightsAndInt32Bias()
    {
        var view = new GraphView(_f.Quantized.Graph);
        var convs = _f.Quantized.Graph.Node.Where(n => n.OpType == "Conv").ToList();
        Assert.Equal(_f.Prepared.Model.Graph.Node.Count(n => n.OpType == "Conv"), convs.Count);
        Assert.Subset(_f.Result.QuantizedLayers.ToHashSet(), convs.Select(c => c.Name).ToHashSet());
        foreach (var conv in convs)
        {
            var wdq = view.Producers[conv.Input[1]];
            Assert.Equal("DequantizeLinear", wdq.OpType);
            var w = view.Initializers[wdq.Input[0]];
            Assert.Equal((int)OnnxDataType.Int8, w.DataType);
            Assert.Equal(w.Dims[0], view.Initializers[wdq.Input[1]].Dims.Single());
            var bdq = view.Producers[conv.Input[2]];
            Assert.Equal((int)OnnxDataType.Int32, view.Initializers[bdq.Input[0]].DataType);
            Assert.Equal("DequantizeLinear", view.Producers[conv.Input[0]].OpType);
        }
        Assert.DoesNotContain(_f.Quantized.Graph.Initializer, t => t.DataType == (int)OnnxDataType.Float && t.Dims.Count == 4);
    }
}
