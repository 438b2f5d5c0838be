using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Tests;

/// <summary>Samples of whole model inputs read from ONNX TensorProto files (the conformance corpus layout).</summary>
public class TensorProtoDataSetTests
{
    static string Corpus(string suiteAndTest) => Path.Combine(CorpusWalk.Root, suiteAndTest);

    [OnnxTestDataFact]
    public void MultiInputSampleWithInt64Indices_RunsAndMatchesTheReferenceOutput()
    {
        // Gather: float data and int64 indices, two inputs.
        var test = Corpus("node/test_gather_0");
        var ds = DataSetReader.FromTensorProto(new[] { test }, new PtqDataSet());
        Assert.Equal("TensorProto", ds.Kind);
        Assert.Equal(1, ds.Count);
        using var reader = new SampleReader(ds);
        var sample = Assert.Single(reader.Read(CancellationToken.None));
        Assert.Equal(2, sample.Inputs!.Count);
        Assert.Equal((int)OnnxDataType.Int64, sample.Inputs[1].DataType);
        using var runner = OrtRunner.FromFile(Path.Combine(test, "model.onnx"));
        var output = runner.Run(sample)[0];
        var expected = TensorData.ReadFloats(TensorProtoFile.Read(Path.Combine(test, "test_data_set_0", "output_0.pb")));
        Assert.Equal(expected, output);
        Assert.Contains(output, v => v != 0);
    }

    [OnnxTestDataFact]
    public void SamplesThatDoNotFitTheModel_AreRefusedNamingTheProblem()
    {
        var gather = Corpus("node/test_gather_0");
        using var runner = OrtRunner.FromFile(Path.Combine(gather, "model.onnx"));
        // One input of two.
        var one = DataSetReader.FromTensorProto(new[] { Path.Combine(gather, "test_data_set_0", "input_0.pb") }, new PtqDataSet());
        using (var reader = new SampleReader(one))
            Check.Throws("DataInputCountMismatch", () => runner.Run(reader.Read(CancellationToken.None).Single()));
        // Tensors named like the model's inputs feed them by name, whatever their order.
        var data = TensorProtoFile.Read(Path.Combine(gather, "test_data_set_0", "input_0.pb"));
        var indices = TensorProtoFile.Read(Path.Combine(gather, "test_data_set_0", "input_1.pb"));
        Assert.Equal(new[] { "data", "indices" }, new[] { data.Name, indices.Name });
        var byName = new Sample(0, "by-name", Array.Empty<float>(), Array.Empty<int>(), -1) { Inputs = new[] { indices, data } };
        var expected = TensorData.ReadFloats(TensorProtoFile.Read(Path.Combine(gather, "test_data_set_0", "output_0.pb")));
        Assert.Equal(expected, runner.Run(byName)[0]);
        // Unnamed tensors feed the inputs in order: int64 where float is expected is refused.
        var (d2, i2) = (data.Clone(), indices.Clone());
        d2.Name = ""; i2.Name = "";
        var swapped = new Sample(0, "swapped", Array.Empty<float>(), Array.Empty<int>(), -1) { Inputs = new[] { i2, d2 } };
        Check.Throws("DataTypeMismatch", () => runner.Run(swapped));
        // A float array sample for a two-input model.
        Check.Throws("MultipleInputsNotSupported", () => runner.Run(new Sample(0, "flat", new float[4], new[] { 4 }, -1)));
        // A file that is not a TensorProto, and one whose data disagrees with its shape.
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("junk.pb"), new byte[] { 0xff, 0xff, 0xff });
        Check.Throws("TensorFileNotReadable", () => DataSetReader.FromTensorProto(new[] { dir.File("junk.pb") }, new PtqDataSet()));
        var bad = TensorData.FromFloats("t", new float[3], 2, 2);
        File.WriteAllBytes(dir.File("short.pb"), bad.ToByteArray());
        Check.Throws("TensorDataSizeMismatch", () => DataSetReader.FromTensorProto(new[] { dir.File("short.pb") }, new PtqDataSet()));
        Check.Throws("DataSetEmpty", () => DataSetReader.FromTensorProto(new[] { dir.Path }, new PtqDataSet()));
    }

    [OnnxTestDataFact]
    public void ConvModelFromTheCorpus_CalibratesAndQuantizesOnItsOwnPbData()
    {
        TestPaths.UseTempCache();
        var test = Corpus("pytorch-converted/test_Conv2d");
        var ds = DataSetReader.FromTensorProto(new[] { test }, new PtqDataSet());
        var prepared = ModelPreparer.Prepare(Path.Combine(test, "model.onnx"));
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        Assert.NotEmpty(plan.QuantizedLayers);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, ds, 1, null, CancellationToken.None);
        Assert.All(stats, s => Assert.True(s.RangeMax > s.RangeMin));
        using var dir = new TempDir();
        var output = dir.File("conv.int8.onnx");
        QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), output, CancellationToken.None);
        using var reader = new SampleReader(ds);
        var sample = reader.Read(CancellationToken.None).Single();
        using var f = OrtRunner.FromFile(Path.Combine(test, "model.onnx"));
        using var q = OrtRunner.FromFile(output);
        var (fo, qo) = (f.Run(sample)[0], q.Run(sample)[0]);
        Assert.True(Check.Cosine(fo, qo) > 0.99, $"cosine {Check.Cosine(fo, qo)}");
        Assert.NotEqual(fo, qo);
    }
}
