using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;
using PtqTools.TestModels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Padded tokens (attention_mask 0) are left out of the figures of per-token outputs: in the fidelity guard,
/// in ModelComparer (Compare-Model / Test-QuantizedModel) and in what a metric receives (TokenMask).</summary>
public class TokenMaskTests
{
    const int Seq = 6, Width = 4;

    static ValueInfoProto Symbolic(string name, int type, params string[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(long.TryParse(d, out var v) ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = type, Shape = shape } } };
    }

    /// <summary>x[batch,seq,4], attention_mask int64[batch,seq] -> y[batch,seq,4] = x W + m * noise, where m is the mask
    /// (<paramref name="where"/> "real": the noise lands on the real tokens), one minus it ("padded": on the padded
    /// tokens), or zero ("none": the float model).</summary>
    static string Model(string path, string where)
    {
        var r = new Random(3);
        var b = new ModelBuilder(13, 7, "masked")
            .RandomInit(r, "w", 0.5f, Width, Width)
            .Init("one", new[] { 1f }, 1)
            .Init("noise", where == "none" ? new float[Width] : new[] { 900f, -700f, 500f, -300f }, Width)
            .Node("MatMul", new[] { "x", "w" }, new[] { "xw" }, "matmul")
            .Node("Cast", new[] { "attention_mask" }, new[] { "m" }, "cast", ("to", (long)OnnxDataType.Float))
            .Node("Unsqueeze", new[] { "m", "axis2" }, new[] { "mu" }, "unsqueeze");
        b.Graph.Initializer.Add(new TensorProto { Name = "axis2", DataType = (int)OnnxDataType.Int64, Dims = { 1 }, Int64Data = { 2 } });
        var gate = "mu";
        if (where == "padded") { b.Node("Sub", new[] { "one", "mu" }, new[] { "pad" }, "sub"); gate = "pad"; }
        b.Node("Mul", new[] { gate, "noise" }, new[] { "shift" }, "mul")
            .Node("Add", new[] { "xw", "shift" }, new[] { "y" }, "add");
        b.Graph.Input.Add(Symbolic("x", (int)OnnxDataType.Float, "batch", "seq", Width.ToString()));
        b.Graph.Input.Add(Symbolic("attention_mask", (int)OnnxDataType.Int64, "batch", "seq"));
        b.Graph.Output.Add(Symbolic("y", (int)OnnxDataType.Float, "batch", "seq", Width.ToString()));
        return b.Save(path);
    }

    /// <summary>Samples of x and a mask with 2 to 5 real tokens of 6, the rest padding.</summary>
    static PtqDataSet Data(string folder, int count = 20)
    {
        var r = new Random(9);
        for (int i = 0; i < count; i++)
        {
            int real = 2 + i % 4;
            var mask = Enumerable.Range(0, Seq).Select(t => t < real ? 1L : 0L).ToArray();
            SampleFiles.Write(folder, i, SampleFiles.Floats("x", Check.RandomFloats(r, Seq * Width, 1f), 1, Seq, Width),
                SampleFiles.Int64s("attention_mask", mask, 1, Seq));
        }
        return DataSetReader.FromTensorProto(new[] { folder }, new PtqDataSet());
    }

    static TokenMask.Tensor T(string name, bool integer, params string[] dims) => new(name, integer, dims);

    [Fact]
    public void Find_TakesAnIntegerMaskInput_AndTheOutputsWithItsLeadingDims()
    {
        var mask = TokenMask.Find(new[] { T("input_ids", true, "batch", "seq"), T("attention_mask", true, "batch", "seq") },
            new[] { T("last_hidden_state", false, "batch", "seq", "384"), T("pooler", false, "batch", "384"), T("logits", false, "batch", "seq") });
        Assert.NotNull(mask);
        Assert.Equal("attention_mask", mask!.Input);
        Assert.Equal(1, mask.InputIndex);
        Assert.Equal(new[] { true, false, true }, mask.PerToken);
        Assert.Contains("attention_mask", mask.Text);
        Assert.Contains("last_hidden_state, logits", mask.Text);
        // Fixed sizes match too; unknown dims, a float mask, a name without "mask", a mask of rank 3 do not.
        Assert.NotNull(TokenMask.Find(new[] { T("mask", true, "1", "64") }, new[] { T("y", false, "1", "64", "8") }));
        Assert.Null(TokenMask.Find(new[] { T("mask", true, "?", "?") }, new[] { T("y", false, "?", "?", "8") }));
        Assert.Null(TokenMask.Find(new[] { T("attention_mask", false, "batch", "seq") }, new[] { T("y", false, "batch", "seq", "8") }));
        Assert.Null(TokenMask.Find(new[] { T("token_type_ids", true, "batch", "seq") }, new[] { T("y", false, "batch", "seq", "8") }));
        Assert.Null(TokenMask.Find(new[] { T("attention_mask", true, "batch", "seq", "seq") }, new[] { T("y", false, "batch", "seq", "8") }));
        Assert.Null(TokenMask.Find(new[] { T("attention_mask", true, "batch", "seq") }, new[] { T("y", false, "batch", "8") }));
    }

    [Fact]
    public void Keep_TakesTheValuesOfTheTokensThatCount()
    {
        var output = new float[] { 1, 2, 3, 4, 5, 6 };   // 3 tokens of 2
        Assert.Equal(new float[] { 1, 2, 5, 6 }, TokenMask.Keep(output, new long[] { 1, 0, 1 }));
        Assert.Empty(TokenMask.Keep(output, new long[] { 0, 0, 0 }));
        Assert.Same(output, TokenMask.Keep(output, new long[] { 1, 1, 1 }));
        var mask = TokenMask.Find(new[] { T("attention_mask", true, "b", "s") }, new[] { T("y", false, "b", "s", "2"), T("p", false, "b", "2") })!;
        var kept = mask.Keep(new[] { output, new float[] { 7, 8 } }, new long[] { 0, 1, 1 });
        Assert.Equal(new float[] { 3, 4, 5, 6 }, kept[0]);
        Assert.Equal(new float[] { 7, 8 }, kept[1]);                                   // not per token: whole
        Assert.Same(output, mask.Keep(output, 0, null));                               // no mask in the sample
        Assert.Same(output, mask.Keep(output, 0, new long[] { 1, 0, 1, 1 }));          // 6 values are not 4 tokens
    }

    [Fact]
    public void ModelComparer_LeavesPaddedTokensOut_OfTheFiguresAndOfTheMetric()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var reference = Model(dir.File("float.onnx"), "none");
        var padded = Model(dir.File("padded.onnx"), "padded");
        var real = Model(dir.File("real.onnx"), "real");
        var data = Data(dir.File("data"));
        // The test can fail: over every position, the padded-noise model is far from float.
        using (var f = OrtRunner.FromFile(reference))
        using (var p = OrtRunner.FromFile(padded))
        using (var reader = new SampleReader(data))
        {
            var s = reader.Read(default).First();
            Assert.True(Check.Cosine(f.Run(s)[0], p.Run(s)[0]) < 0.5);
        }
        int[] lengths = Array.Empty<int>();
        TaskMetric metric = (outputs, _) =>
        {
            lengths = outputs.Select(o => o.Length).ToArray();
            return TaskMetrics.MeanPooled(outputs, Width).Select(e => (double)e.Sum()).ToArray();
        };
        // Padded tokens differ wildly, real ones agree: the figures are float's.
        var a = ModelComparer.Compare(reference, padded, data, 1, 0, null, null, default, metric, "PooledSum");
        Assert.True(a.Outputs[0].Cosine > 0.99999, a.Outputs[0].ToString());
        Assert.True(a.Outputs[0].MaxAbsError < 1e-4, $"{a.Outputs[0].MaxAbsError}");
        Assert.Contains("attention_mask", a.PaddingExcluded);
        Assert.Contains("y", a.PaddingExcluded);
        // The metric saw the real tokens only (2 to 5 of 6, 4 values each): its mean pooling is masked pooling.
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (2 + i % 4) * Width).Order(), lengths.Order());
        Assert.Equal(0, a.MetricDrop!.Drop, 5);
        // Real tokens differ, padded ones agree: the figures show it.
        var b = ModelComparer.Compare(reference, real, data, 1, 0, null, null, default);
        Assert.True(b.Outputs[0].Cosine < 0.5, b.Outputs[0].ToString());
        // A model without a mask input: nothing is left out.
        var plain = dir.File("plain.onnx");
        new ModelBuilder().Input("x", 1, 4).RandomInit(new Random(1), "w", 0.5f, 4, 4).Node("MatMul", new[] { "x", "w" }, new[] { "y" }, "mm").Output("y", 1, 4).Save(plain);
        var plainData = DataSetReader.FromArrays(Enumerable.Range(0, 3).Select(i => new float[] { i, 1, 2, 3 }).ToArray(), new[] { 4 }, null, new PtqDataSet());
        Assert.Equal("", ModelComparer.Compare(plain, plain, plainData, 1, 0, null, null, default).PaddingExcluded);
    }

    [Fact]
    public void FidelityGuard_LeavesPaddedTokensOut_AndSaysSo()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var reference = Model(dir.File("float.onnx"), "none");
        var data = Data(dir.File("data"));
        var options = TinyModel.Options();
        var prepared = ModelPreparer.Prepare(reference);
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null, options.FloatReason);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, FidelityGuard.CalibrationPart(data), 1, null, CancellationToken.None);
        QuantizationResult Check(string where)
        {
            // The "written model" is the model with noise: the guard measures it against float.
            var path = Model(dir.File(where + ".onnx"), where);
            var written = new QuantizationResult { OutputPath = path, SizeRatio = 1 };
            return FidelityGuard.Run(prepared, stats, options, written, FidelityGuard.HeldOutPart(data), data, FidelityGuard.DefaultMinCosine,
                TimeSpan.FromSeconds(30), 1, null, CancellationToken.None);
        }
        var padded = Check("padded").Fidelity!;
        Assert.Equal("Passed", padded.Status);
        Assert.True(padded.Cosine > 0.99999, padded.Summary);
        Assert.Contains("attention_mask", padded.PaddingExcluded);
        Assert.Contains("Padding excluded", padded.Summary);
        var real = Check("real").Fidelity!;
        Assert.NotEqual("Passed", real.Status);
        Assert.True(real.Cosine < 0.5, real.Summary);
        Assert.Contains("Padding excluded", real.Summary);
    }
}
