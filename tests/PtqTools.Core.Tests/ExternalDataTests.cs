using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Onnx;
using Xunit;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Tests;

public class ExternalDataTests
{
    static (ModelProto Model, float[] Input, Dictionary<string, float[]> Expected) Residual()
    {
        var model = TinyModels.ResidualCnn(5).Model;
        var input = TinyModels.RandomInput(new Random(5));
        return (model, input, Ort.Run(model, TinyModels.Input, input, TinyModels.InputShape));
    }

    static Dictionary<string, float[]> RunFile(string path, float[] input)
    {
        // ONNX Runtime reads the side file itself when given the model's path.
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(path, options);
        using var value = OrtValue.CreateTensorValueFromMemory(input, TinyModels.InputShape);
        using var results = session.Run(new RunOptions(), new[] { TinyModels.Input }, new[] { value }, session.OutputNames.ToArray());
        return session.OutputNames.Select((n, i) => (n, results[i].GetTensorDataAsSpan<float>().ToArray())).ToDictionary(p => p.n, p => p.Item2);
    }

    static TensorProto Initializer(ModelProto m, string name) => m.Graph.Initializer.Single(t => t.Name == name);

    [Fact]
    public void SavedWithExternalData_OnnxRuntimeAndTheEngineReadItBack()
    {
        var (model, input, expected) = Residual();
        var original = model.Clone();
        using var dir = new TempDir();
        var path = dir.File("ext.onnx");
        ExternalData.Save(model, path, threshold: 256);
        // The model object is left as it was; the weights went to the side file.
        Assert.Equal(original, model);
        Assert.True(File.Exists(path + ".data"));
        var stored = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var w2 = Initializer(stored, "w2");
        Assert.Equal(TensorProto.Types.DataLocation.External, w2.DataLocation);
        Assert.True(w2.RawData.IsEmpty);
        Assert.Equal("ext.onnx.data", w2.ExternalData.Single(e => e.Key == "location").Value);
        Assert.Equal(0, long.Parse(w2.ExternalData.Single(e => e.Key == "offset").Value) % 4096);
        Assert.Equal(TensorProto.Types.DataLocation.Default, Initializer(stored, "b1").DataLocation); // small: inline
        Assert.True(new FileInfo(path).Length < 2048);

        Assert.Equal(expected["y"], RunFile(path, input)["y"]);
        var loaded = OnnxModelIO.Load(path);
        Assert.Equal(original, loaded);
    }

    [Fact]
    public void ModelWithExternalData_IsPreparedAndListed()
    {
        TestPaths.UseTempCache();
        var (model, _, _) = Residual();
        using var dir = new TempDir();
        var path = dir.File("ext.onnx");
        ExternalData.Save(model, path, threshold: 256);
        var layers = ModelInspector.Layers(ModelPreparer.Prepare(path));
        var conv2 = layers.Single(l => l.Name == "conv2");
        Assert.True(conv2.Quantizable);
        Assert.Equal(new long[] { 8, 8, 3, 3 }, conv2.WeightShape);
    }

    static string WithLocation(TempDir dir, string location, Action<TensorProto>? edit = null)
    {
        var (model, _, _) = Residual();
        var w2 = Initializer(model, "w2");
        File.WriteAllBytes(dir.File("w2.bin"), w2.RawData.ToByteArray());
        w2.RawData = ByteString.Empty;
        w2.DataLocation = TensorProto.Types.DataLocation.External;
        w2.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        edit?.Invoke(w2);
        return new ModelBuilderFile(model).Save(dir.File("m.onnx"));
    }

    sealed class ModelBuilderFile(ModelProto model)
    {
        public string Save(string path) { File.WriteAllBytes(path, model.ToByteArray()); return path; }
    }

    [Fact]
    public void LocationsInsideTheFolder_AreRead()
    {
        using var dir = new TempDir();
        Assert.Equal(8 * 8 * 3 * 3, TensorData.ReadFloats(Initializer(OnnxModelIO.Load(WithLocation(dir, "w2.bin")), "w2")).Length);
        Directory.CreateDirectory(dir.File("sub"));
        File.Copy(dir.File("w2.bin"), dir.File("sub/w2.bin"));
        Assert.NotNull(OnnxModelIO.Load(WithLocation(dir, "sub/w2.bin")));
        // A link that stays inside the folder is fine.
        File.CreateSymbolicLink(dir.File("inner-link.bin"), dir.File("w2.bin"));
        Assert.NotNull(OnnxModelIO.Load(WithLocation(dir, "inner-link.bin")));
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("../w2.bin")]
    [InlineData("sub/../../w2.bin")]
    public void LocationsEscapingTheFolder_AreSecurityErrors(string location)
    {
        using var dir = new TempDir();
        var path = WithLocation(dir, location);
        var ex = Check.Throws("ExternalDataOutsideModelFolder", () => OnnxModelIO.Load(path));
        Assert.Equal(PtqErrorKind.SecurityError, ex.Kind);
        Assert.Contains(location, ex.Message);
    }

    [Fact]
    public void SymbolicLinksOutOfTheFolder_AreSecurityErrors()
    {
        using var outside = new TempDir();
        File.WriteAllBytes(outside.File("secret.bin"), new byte[8 * 8 * 3 * 3 * 4]);
        using var dir = new TempDir();
        File.CreateSymbolicLink(dir.File("link.bin"), outside.File("secret.bin"));
        var ex = Check.Throws("ExternalDataOutsideModelFolder", () => OnnxModelIO.Load(WithLocation(dir, "link.bin")));
        Assert.Equal(PtqErrorKind.SecurityError, ex.Kind);
        // A linked folder that leads out is refused the same way.
        Directory.CreateSymbolicLink(dir.File("linkdir"), outside.Path);
        Check.Throws("ExternalDataOutsideModelFolder", () => OnnxModelIO.Load(WithLocation(dir, "linkdir/secret.bin")));
    }

    [Fact]
    public void BrokenExternalData_IsRefusedNamingTheProblem()
    {
        using var dir = new TempDir();
        Check.Throws("ExternalDataNotFound", () => OnnxModelIO.Load(WithLocation(dir, "missing.bin")));
        // The file is shorter than the tensor.
        Check.Throws("TensorDataSizeMismatch", () => OnnxModelIO.Load(WithLocation(dir, "w2.bin", t => t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "100" }))));
        Check.Throws("ExternalDataInvalid", () => OnnxModelIO.Load(WithLocation(dir, "w2.bin", t => t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "64" }))));
        Check.Throws("ExternalDataInvalid", () => OnnxModelIO.Load(WithLocation(dir, "w2.bin", t => t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "-1" }))));
        File.WriteAllBytes(dir.File("short.bin"), new byte[10]);
        Check.Throws("ExternalDataInvalid", () => OnnxModelIO.Load(WithLocation(dir, "short.bin")));
        // A model given as bytes has no folder to read side files from.
        var bytes = File.ReadAllBytes(WithLocation(dir, "w2.bin"));
        Check.Throws("ExternalDataNotSupported", () => OnnxModelIO.Parse(bytes, "in-memory"));
    }

    /// <summary>The path a model above 2 GB takes, on a small model: the threshold above which tensors stay in their
    /// side files is lowered for this test only.</summary>
    [Fact]
    public void DeferredTensors_AreCalibratedQuantizedAndWrittenWithExternalData()
    {
        TestPaths.UseTempCache();
        var (model, _, _) = Residual();
        using var dir = new TempDir();
        var path = dir.File("big.onnx");
        ExternalData.Save(model, path, threshold: 256);
        var sourceBytes = File.ReadAllBytes(path + ".data");
        ExternalData.LazyThresholdBytes = 1000;
        try
        {
            var prepared = ModelPreparer.Prepare(path);
            Assert.True(ExternalData.HasDeferred(prepared.Model));
            var w2 = prepared.Model.Graph.Initializer.Single(t => t.Name == "w2");
            Assert.True(w2.RawData.IsEmpty);
            Assert.Equal(TensorData.ReadFloats(Initializer(model, "w2")), TensorData.ReadFloats(w2));
            Assert.True(ModelInspector.Layers(prepared).Single(l => l.Name == "conv2").Quantizable);

            var random = new Random(9);
            var inputs = Enumerable.Range(0, 8).Select(_ => TinyModels.RandomInput(random)).ToArray();
            var plan = Quantization.QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
            var data = Data.DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new Model.PtqDataSet());
            var stats = Calibration.ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
            // The same ranges as calibrating the model held in memory.
            var reference = Calibration.ActivationCalibrator.Run(new PreparedModel(path, prepared.SourceSha256, path, ModelPreparer.PrepareModel(model, path, out _), false),
                plan.Activations, data, 1, null, CancellationToken.None);
            foreach (var s in stats) Assert.Equal(reference.Single(r => r.Tensor == s.Tensor).Max, s.Max, 5);

            var output = dir.File("big.int8.onnx");
            var result = Pipeline.QuantizationPipeline.Run(prepared, stats, new Quantization.QuantizationOptions(), output, CancellationToken.None);
            Assert.True(File.Exists(output + ".data"), "the output is written with external data");
            var stored = ModelProto.Parser.ParseFrom(File.ReadAllBytes(output));
            // Tensors of 1 KiB and more are in the side file (the int8 weights of this small model are smaller).
            Assert.DoesNotContain(ExternalData.Tensors(stored.Graph), t => t.RawData.Length >= ExternalData.DefaultThreshold);
            Assert.DoesNotContain(ExternalData.Tensors(stored.Graph), t => t.ExternalData.Any(e => e.Key.StartsWith("ptq.", StringComparison.Ordinal)));
            Assert.Equal(OnnxModelIO.Sha256(output), result.OutputSha256);
            Assert.Equal(new FileInfo(output).Length + new FileInfo(output + ".data").Length, result.OutputSizeBytes);
            var expected = RunFile(path, inputs[0])["y"];
            var actual = RunFile(output, inputs[0])["y"];
            Assert.True(Check.Cosine(expected, actual) > 0.99, $"cosine {Check.Cosine(expected, actual)}");
            Assert.Equal(sourceBytes, File.ReadAllBytes(path + ".data"));

            // An output whose side file would be the source's is refused before anything is written.
            var alias = dir.File("alias.onnx");
            File.Copy(path, alias);
            var aliasPrepared = ModelPreparer.Prepare(alias);
            Check.Throws("OutputIsSource", () => Pipeline.QuantizationPipeline.Run(aliasPrepared, stats,
                new Quantization.QuantizationOptions(), path, CancellationToken.None));
            Assert.Equal(sourceBytes, File.ReadAllBytes(path + ".data"));
        }
        finally
        {
            ExternalData.LazyThresholdBytes = OnnxModelIO.MaxModelBytes - (64L << 20);
        }
    }

    [Fact]
    public void ModelSha256_CoversSideFiles()
    {
        var (model, _, _) = Residual();
        using var dir = new TempDir();
        var inline = dir.File("inline.onnx");
        File.WriteAllBytes(inline, model.ToByteArray());
        // Without side files it is the file's own hash (what Get-FileHash gives).
        Assert.Equal(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(inline))), OnnxModelIO.Sha256(inline));
        var path = dir.File("ext.onnx");
        ExternalData.Save(model, path, threshold: 256);
        var before = OnnxModelIO.Sha256(path);
        Assert.NotEqual(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path))), before);
        var data = File.ReadAllBytes(path + ".data");
        data[^1] ^= 1;
        File.WriteAllBytes(path + ".data", data);
        Assert.NotEqual(before, OnnxModelIO.Sha256(path));
        // Prepared models, summaries and statistics carry the same hash.
        TestPaths.UseTempCache();
        Assert.Equal(OnnxModelIO.Sha256(path), ModelPreparer.Prepare(path).SourceSha256);
        Assert.Equal(OnnxModelIO.Sha256(path), ModelInspector.Summarize(path).Sha256);
    }
}
