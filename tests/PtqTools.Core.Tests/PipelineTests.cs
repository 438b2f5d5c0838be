using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Tests;

/// <summary>The quantization pipeline: validation before any work, the steps each mode runs, the runs over the
/// data its collector makes, and one collector run feeding several consumers the values their own runs give.</summary>
public sealed class PipelineTests
{
    const int K = 16, N = 12;

    /// <summary>x [1, 4, K] -> MatMul w1 -> Relu -> MatMul w2 -> Add b: two MatMuls, the first reading a graph input.</summary>
    static ModelProto TwoMatMuls()
    {
        var r = new Random(5);
        return new ModelBuilder(13, 7, "mm2")
            .Input("x", 1, 4, K)
            .RandomInit(r, "w1", 0.3f, K, K).RandomInit(r, "w2", 0.3f, K, N).RandomInit(r, "b", 0.1f, N)
            .Node("MatMul", new[] { "x", "w1" }, new[] { "h" }, "mm1")
            .Node("Relu", new[] { "h" }, new[] { "hr" }, "relu")
            .Node("MatMul", new[] { "hr", "w2" }, new[] { "m" }, "mm2")
            .Node("Add", new[] { "m", "b" }, new[] { "y" }, "add")
            .Output("y", 1, 4, N).Model;
    }

    static (PreparedModel Prepared, PtqDataSet Data) Setup(TempDir dir, int count = 12)
    {
        var model = TwoMatMuls();
        var source = dir.File("m.onnx");
        OnnxModelIO.Save(model, source);
        var r = new Random(8);
        var samples = Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, 4 * K).Select(_ => (float)(r.NextDouble() * 4 - 2) * (r.Next(8) == 0 ? 6 : 1)).ToArray()).ToArray();
        return (new PreparedModel(source, OnnxModelIO.Sha256(source), source, model, false),
            DataSetReader.FromArrays(samples, new[] { 4, K }, null, new PtqDataSet()));
    }

    [Fact]
    public void OneCollectorRunFeedsEveryConsumerWhatItsOwnRunGives()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var (prepared, data) = Setup(dir);
        var layers = new[] { "mm1", "mm2" };
        var ownMaxima = SmoothQuant.ChannelMaxima(prepared, layers, data, 1, default);
        var ownHessians = Gptq.Hessians(prepared, prepared.Model, layers, data, 1, null, default);

        var maxima = new SmoothQuant.MaximaConsumer(prepared.Model, layers);
        var hessians = new Gptq.HessianConsumer(prepared.Model, layers, 1);
        int samples = TensorTap.Collect(prepared.Model, prepared.SourcePath, data, 1, new ITensorConsumer[] { maxima, hessians }, null, default);
        Assert.Equal(12, samples);
        Assert.Equal(new[] { "hr", "x" }, maxima.Tensors);
        foreach (var (t, m) in maxima.Maxima) Assert.Equal(ownMaxima[t], m);
        var shared = hessians.Finish(data);
        Assert.Equal(ownHessians.Keys.Order(), shared.Keys.Order());
        foreach (var (w, h) in shared)
            Assert.True(h.AsSpan().SequenceEqual(ownHessians[w]), $"The Hessian of '{w}' differs from its own run's.");
        // The graph input is observed (through an Identity): its maxima are those of the samples.
        var direct = new float[K];
        using (var reader = new SampleReader(data))
            foreach (var s in reader.Read(default))
                for (int i = 0; i < s.Data.Length; i++) direct[i % K] = Math.Max(direct[i % K], Math.Abs(s.Data[i]));
        Assert.Equal(direct, maxima.Maxima["x"]);
    }

    [Fact]
    public void GptqRunsTheDataOnceAndTheStepsInOrder()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var (prepared, data) = Setup(dir);
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Mode = QuantMode.WeightOnly, WeightBits = 4, BlockSize = 16, WeightMethod = WeightMethod.Gptq };
        var context = new QuantizationPipeline(new PipelineRequest { Prepared = prepared, Options = options, OutputPath = dir.File("q.onnx"), Data = data }).Run(default);
        Assert.Equal(new[] { "Plan", "GPTQ", "Weights", "Save" }, context.Steps);
        Assert.Equal(1, context.DataPasses);
        // The library entry point is the same pipeline: the same bytes.
        var again = QuantizationPipeline.RunWithoutCalibration(prepared, null, options, dir.File("q2.onnx"), default, data: data);
        Assert.Equal(context.Result!.OutputSha256, again.OutputSha256);
    }

    [Fact]
    public void SmoothQuantThenOutlierSplitRunTheDataTwice()
    {
        // The split needs the maxima of the smoothed model's inputs: the graph rewrite between them needs a second run.
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var (prepared, data) = Setup(dir);
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Mode = QuantMode.Dynamic, SmoothQuantAlpha = 0.5f, OutlierThreshold = 2f };
        var context = new QuantizationPipeline(new PipelineRequest { Prepared = prepared, Options = options, OutputPath = dir.File("q.onnx"), Data = data }).Run(default);
        Assert.Equal(new[] { "Plan", "SmoothQuant", "OutlierSplit", "Weights", "Save" }, context.Steps);
        Assert.Equal(2, context.DataPasses);
        Assert.True(File.Exists(dir.File("q.onnx")));
    }

    [Fact]
    public void StaticEqualizesCalibratesAndWritesWithOneRun()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var (prepared, data) = Setup(dir);
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, Equalize = true, BiasCorrection = true, Format = QuantFormat.QOperator };
        var context = new QuantizationPipeline(new PipelineRequest { Prepared = prepared, Options = options, OutputPath = dir.File("q.onnx"), Data = data }).Run(default);
        Assert.Equal(new[] { "Equalize", "Calibrate", "Plan", "QDQ", "QOperator", "Save" }, context.Steps);
        Assert.Equal(1, context.DataPasses);
    }

    [Theory]
    [InlineData("smooth")]
    [InlineData("outliers")]
    [InlineData("static")]
    [InlineData("equalize-statistics")]
    public void RefusesBeforeAnyWork(string what)
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var (prepared, data) = Setup(dir);
        var request = what switch
        {
            "smooth" => new PipelineRequest { Options = new() { Mode = QuantMode.Dynamic, SmoothQuantAlpha = 0.5f }, OutputPath = dir.File("q.onnx"), ModelPath = prepared.SourcePath },
            "outliers" => new PipelineRequest { Options = new() { Mode = QuantMode.Dynamic, OutlierThreshold = 4f }, OutputPath = dir.File("q.onnx"), ModelPath = prepared.SourcePath },
            "static" => new PipelineRequest { Options = new(), OutputPath = dir.File("q.onnx"), ModelPath = prepared.SourcePath },
            _ => new PipelineRequest { Options = new() { Equalize = true }, OutputPath = dir.File("q.onnx"), ModelPath = prepared.SourcePath, Statistics = new List<Model.TensorStatistics>(), Data = data },
        };
        bool prepareCalled = false;
        request = new PipelineRequest
        {
            Options = request.Options, OutputPath = request.OutputPath, ModelPath = request.ModelPath, Statistics = request.Statistics, Data = request.Data,
            Prepare = () => { prepareCalled = true; return prepared; },
        };
        var ex = Assert.Throws<PtqException>(() => new QuantizationPipeline(request).Run(default));
        Assert.Equal(what == "equalize-statistics" ? "EqualizeNeedsCalibration" : "DataSetRequired", ex.ErrorId);
        Assert.False(prepareCalled);
        Assert.False(File.Exists(dir.File("q.onnx")));
    }
}
