using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>-OutlierThreshold: the outlier input channels of dynamic MatMuls computed in float beside the int8 part.</summary>
public sealed class OutlierSplitTests
{
    readonly ITestOutputHelper _out;
    public OutlierSplitTests(ITestOutputHelper output) => _out = output;

    [Fact]
    public void Outliers_AreTheChannelsAboveThresholdTimesTheMedian_AtMostASixteenth()
    {
        var maxima = Enumerable.Repeat(1f, 64).ToArray();
        maxima[3] = 40; maxima[50] = 9; maxima[7] = 7.9f;
        Assert.Equal(new[] { 3, 50 }, OutlierSplit.Outliers(maxima, 8));
        Assert.Equal(new[] { 3 }, OutlierSplit.Outliers(maxima, 16));
        Assert.Empty(OutlierSplit.Outliers(maxima, 64));
        for (int i = 10; i < 20; i++) maxima[i] = 100 + i;   // 13 candidates, at most 64 / 16 = 4: the largest
        Assert.Equal(new[] { 16, 17, 18, 19 }, OutlierSplit.Outliers(maxima, 8));
        Assert.Empty(OutlierSplit.Outliers(new float[8], 8));   // a median of 0 gives no ratio
    }

    /// <summary>x[1,16,64] -> MatMul(W[64,32]) -> Add(bias) -> y, with channel 5 of x two hundred times wider.</summary>
    static (ModelProto Model, float[][] Samples) WideChannelModel()
    {
        var r = new Random(8);
        // The input has no fixed shape, as in exported transformers: ONNX Runtime's basic optimizer would otherwise
        // turn MatMul + Add on a known 3-D shape into Reshape + Gemm + Reshape before anything sees the MatMul.
        var builder = new ModelBuilder(13, 7, "wide");
        var x = ModelBuilder.Value("x", new long[] { 1, 16, 64 });
        x.Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimParam = "batch" };
        x.Type.TensorType.Shape.Dim[1] = new TensorShapeProto.Types.Dimension { DimParam = "sequence" };
        builder.Graph.Input.Add(x);
        var model = builder
            .RandomInit(r, "w", 0.3f, 64, 32).RandomInit(r, "b", 0.2f, 32)
            .Node("MatMul", new[] { "x", "w" }, new[] { "m" }, "matmul")
            .Node("Add", new[] { "m", "b" }, new[] { "y" }, "bias")
            .Output("y").Model;
        var samples = Enumerable.Range(0, 6).Select(_ =>
        {
            var s = Check.RandomFloats(r, 16 * 64, 1f);
            for (int t = 0; t < 16; t++) s[t * 64 + 5] *= 200;
            return s;
        }).ToArray();
        return (model, samples);
    }

    [Fact]
    public void Split_KeepsTheFloatFunction_AndRaisesDynamicFidelity()
    {
        var (model, samples) = WideChannelModel();
        using var dir = new TempDir();
        var path = dir.File("wide.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(model));
        var prepared = ModelPreparer.Prepare(path);
        var data = DataSetReader.FromArrays(samples, new[] { 16, 64 }, null, new PtqDataSet());
        var maxima = SmoothQuant.ChannelMaxima(prepared, new[] { "matmul" }, data, 1, CancellationToken.None);
        var (split, channels) = OutlierSplit.Apply(prepared.Model, new[] { "matmul" }, maxima, 8);
        Assert.Equal(new[] { 5 }, channels["matmul"]);
        // The float part is added after the bias Add, which still reads the int8 MatMul directly (ONNX Runtime fuses them).
        var bias = split.Graph.Node.Single(n => n.Name == "bias");
        Assert.Equal("m", bias.Input[0]);
        Assert.Contains(split.Graph.Node, n => n.OpType == "Add" && n.Output[0] == "y" && n.Input.Contains(bias.Output[0]));
        var x = samples[0];
        var shape = new long[] { 1, 16, 64 };
        var reference = Ort.Run(model, "x", x, shape)["y"];
        Check.Close(reference, Ort.Run(split, "x", x, shape)["y"], 1e-4, "split float model");

        double Cosine(QuantizationOptions options)
        {
            var result = QuantizationPipeline.RunWithoutCalibration(prepared, null, options, dir.File($"q{options.OutlierThreshold}.onnx"), default, null, data, 1);
            if (options.OutlierThreshold is not null)
                Assert.Contains(result.Decisions, d => d.Layer == "matmul" && d.OpType == "MatMul" && d.Reason.Contains("1 outlier input channel (5)", StringComparison.Ordinal));
            Assert.Equal(result.OutputSha256, QuantizationPipeline.RunWithoutCalibration(prepared, null, options, dir.File("again.onnx"), default, null, data, 1).OutputSha256);
            return Check.Cosine(reference, Ort.Run(File.ReadAllBytes(result.OutputPath), "x", x, shape)["y"]);
        }
        double plain = Cosine(new QuantizationOptions { Mode = QuantMode.Dynamic });
        double withSplit = Cosine(new QuantizationOptions { Mode = QuantMode.Dynamic, OutlierThreshold = 8 });
        _out.WriteLine($"dynamic int8 cosine: plain {plain:F5}, split {withSplit:F5}");
        Assert.True(1 - withSplit < (1 - plain) / 4, $"split {withSplit}, plain {plain}");

        Check.Throws("DataSetRequired", () => QuantizationPipeline.RunWithoutCalibration(prepared, null, new QuantizationOptions { Mode = QuantMode.Dynamic, OutlierThreshold = 8 }, dir.File("x.onnx"), default));
        Check.Throws("InvalidOptionCombination", new QuantizationOptions { OutlierThreshold = 8 }.Validate);
        Check.Throws("InvalidOption", new QuantizationOptions { Mode = QuantMode.Dynamic, OutlierThreshold = 0.5f }.Validate);
    }

    [Fact]
    public void MiniLm_DynamicWithOutlierSplit_KeepsLastHiddenStateAbove099()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var prepared = ModelPreparer.Prepare(MiniLm.ModelPath);
        var calibFile = dir.File("calibration.txt");
        File.WriteAllLines(calibFile, MiniLm.Sentences(32));
        var calib = TextDataSet.FromText(new[] { calibFile }, MiniLm.VocabPath, new PtqDataSet());
        var inputs = new[] { MiniLm.TokenIds(128), MiniLm.TokenIds(16, 5) };
        using var fp32 = MiniLm.Session(MiniLm.ModelPath);
        double Worst(QuantizationOptions o, string name)
        {
            var path = dir.File(name + ".onnx");
            QuantizationPipeline.RunWithoutCalibration(prepared, null, o, path, default, null, calib, 2);
            using var q = MiniLm.Session(path);
            return inputs.Min(ids => Check.Cosine(MiniLm.Run(fp32, ids), MiniLm.Run(q, ids)));
        }
        double plain = Worst(new QuantizationOptions { Mode = QuantMode.Dynamic }, "plain");
        double split = Worst(new QuantizationOptions { Mode = QuantMode.Dynamic, OutlierThreshold = 16 }, "split16");
        _out.WriteLine($"MiniLM dynamic int8 last_hidden_state cosine (worst of 2 inputs): plain {plain:F4}, -OutlierThreshold 16 {split:F4}");
        Assert.True(split > plain, $"split {split} vs plain {plain}");
        Assert.True(split >= 0.99, $"split {split}");
    }
}
