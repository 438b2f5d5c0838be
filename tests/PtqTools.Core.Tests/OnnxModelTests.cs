using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

public class TensorDataTests
{
    [Fact]
    public void Floats_RoundTripThroughRawData()
    {
        var values = new[] { 0f, -1.5f, 3.25e-8f, float.MaxValue, -float.Epsilon, 42f };
        var t = TensorData.FromFloats("f", values, 2, 3);
        Assert.Equal((int)OnnxDataType.Float, t.DataType);
        Assert.Equal(new long[] { 2, 3 }, t.Dims);
        Assert.Equal(values.Length * 4, t.RawData.Length);
        Assert.Equal(values, TensorData.ReadFloats(t));
        // It survives serialization.
        Assert.Equal(values, TensorData.ReadFloats(TensorProto.Parser.ParseFrom(t.ToByteArray())));
    }

    [Fact]
    public void Int8_AndInt32_RoundTrip()
    {
        var i8 = new sbyte[] { -128, -1, 0, 1, 127, -127 };
        var t8 = TensorData.FromInt8("q", i8, 3, 2);
        Assert.Equal((int)OnnxDataType.Int8, t8.DataType);
        Assert.Equal(i8.Select(v => (float)v).ToArray(), TensorData.ReadFloats(t8));

        var i32 = new[] { int.MinValue + 128, -70000, 0, 65537, 1 << 23 };
        var t32 = TensorData.FromInt32("b", i32, 5);
        Assert.Equal((int)OnnxDataType.Int32, t32.DataType);
        Assert.Equal(i32.Select(v => (float)v).ToArray(), TensorData.ReadFloats(t32));

        var u8 = new byte[] { 0, 128, 255 };
        Assert.Equal(new[] { 0f, 128f, 255f }, TensorData.ReadFloats(TensorData.FromUInt8("u", u8, 3)));
    }

    [Fact]
    public void ReadFloats_ReadsTypedFields()
    {
        var t = new TensorProto { Name = "typed", DataType = (int)OnnxDataType.Float };
        t.Dims.Add(2); t.Dims.Add(2);
        t.FloatData.AddRange(new[] { 1f, -2f, 3.5f, 0f });
        Assert.Equal(new[] { 1f, -2f, 3.5f, 0f }, TensorData.ReadFloats(t));

        var i64 = new TensorProto { Name = "i64", DataType = (int)OnnxDataType.Int64 };
        i64.Dims.Add(3);
        i64.Int64Data.AddRange(new[] { -5L, 0L, 7L });
        Assert.Equal(new[] { -5f, 0f, 7f }, TensorData.ReadFloats(i64));
    }

    [Fact]
    public void ReadFloats_RefusesDataThatDoesNotFitTheShape()
    {
        // raw_data holds 5 floats for a [2,3] shape.
        var raw = TensorData.FromFloats("short", new float[5], 2, 3);
        var ex = Check.Throws("TensorDataSizeMismatch", () => TensorData.ReadFloats(raw));
        Assert.Equal("short", ex.Target);
        // A partial element.
        var partial = new TensorProto { Name = "partial", DataType = (int)OnnxDataType.Float, RawData = ByteString.CopyFrom(new byte[7]) };
        partial.Dims.Add(2);
        Check.Throws("TensorDataSizeMismatch", () => TensorData.ReadFloats(partial));
        // float_data with too many values.
        var typed = new TensorProto { Name = "typed", DataType = (int)OnnxDataType.Float };
        typed.Dims.Add(2);
        typed.FloatData.AddRange(new[] { 1f, 2f, 3f });
        Check.Throws("TensorDataSizeMismatch", () => TensorData.ReadFloats(typed));
    }
}

public class ModelValidatorTests
{
    static ModelBuilder Valid() => new ModelBuilder()
        .Input("x", 1, 4)
        .Init("w", new float[] { 1, 2, 3, 4 }, 1, 4)
        .Node("Add", new[] { "x", "w" }, new[] { "a" }, "add")
        .Node("Relu", new[] { "a" }, new[] { "y" }, "relu")
        .Output("y", 1, 4);

    static PtqTools.Core.PtqException Rejects(string errorId, ModelBuilder b) =>
        Check.Throws(errorId, () => OnnxModelIO.Parse(b.Bytes(), "test.onnx"));

    [Fact]
    public void ValidModel_Parses()
    {
        var model = OnnxModelIO.Parse(Valid().Bytes(), "test.onnx");
        Assert.Equal(2, model.Graph.Node.Count);
        // And the same bytes through a file.
        using var dir = new TempDir();
        Assert.Equal(2, OnnxModelIO.Load(Valid().Save(dir.File("m.onnx"))).Graph.Node.Count);
    }

    [Fact]
    public void RandomBytes_AreNotOnnx()
    {
        var random = new Random(5);
        for (int i = 0; i < 20; i++)
        {
            var bytes = new byte[random.Next(1, 4096)];
            random.NextBytes(bytes);
            Check.Throws("ModelNotOnnx", () => OnnxModelIO.Parse(bytes, "random.bin"));
        }
        Check.Throws("ModelNotOnnx", () => OnnxModelIO.Parse(Array.Empty<byte>(), "empty.onnx"));
        Check.Throws("ModelNotOnnx", () => OnnxModelIO.Parse("not a model at all"u8.ToArray(), "text.onnx"));
    }

    [Fact]
    public void TruncatedRealModel_IsNotOnnx()
    {
        var bytes = File.ReadAllBytes(TestPaths.ResNet18);
        Assert.NotNull(OnnxModelIO.Parse(bytes, "ResNet18.onnx", validate: false).Graph);
        foreach (var fraction in new[] { 0.001, 0.1, 0.5, 0.9, 0.999 })
        {
            var cut = bytes.AsSpan(0, (int)(bytes.Length * fraction)).ToArray();
            Check.Throws("ModelNotOnnx", () => OnnxModelIO.Parse(cut, "truncated.onnx"));
        }
    }

    [Fact]
    public void DanglingNodeInput_IsRefused()
    {
        var b = Valid().Node("Add", new[] { "y", "nowhere" }, new[] { "z" }, "bad");
        var ex = Rejects("DanglingNodeInput", b);
        Assert.Equal("nowhere", ex.Target);
    }

    [Fact]
    public void Cycle_IsRefused()
    {
        var b = new ModelBuilder()
            .Input("x", 1, 4)
            .Node("Add", new[] { "x", "t2" }, new[] { "t1" }, "first")
            .Node("Relu", new[] { "t1" }, new[] { "t2" }, "second")
            .Output("t2", 1, 4);
        Rejects("GraphCycle", b);
        // A node reading its own output is a cycle too.
        Rejects("GraphCycle", new ModelBuilder().Input("x", 1).Node("Add", new[] { "x", "s" }, new[] { "s" }, "self").Output("s", 1));
    }

    [Fact]
    public void DuplicateOutput_IsRefused()
    {
        var b = Valid().Node("Relu", new[] { "x" }, new[] { "a" }, "again");
        var ex = Rejects("DuplicateTensorName", b);
        Assert.Equal("a", ex.Target);
        // A node overwriting an initializer.
        Rejects("DuplicateTensorName", Valid().Node("Relu", new[] { "x" }, new[] { "w" }, "shadow"));
    }

    [Fact]
    public void NegativeDimension_IsRefused()
    {
        var b = new ModelBuilder().Input("x", 1, -3).Node("Relu", new[] { "x" }, new[] { "y" }).Output("y");
        Assert.Equal("x", Rejects("InvalidDimension", b).Target);
        var init = Valid();
        init.Graph.Initializer[0].Dims[0] = -1;
        Rejects("InvalidDimension", init);
    }

    [Fact]
    public void InitializerWithWrongDataSize_IsRefused()
    {
        var b = Valid();
        b.Graph.Initializer.Clear();
        b.Init("w", new float[] { 1, 2, 3 }, 1, 4);
        Assert.Equal("w", Rejects("TensorDataSizeMismatch", b).Target);
    }

    [Fact]
    public void ConstantTensorWithWrongDataSize_OrRepeatedGraphOutput_IsRefused()
    {
        var b = new ModelBuilder().Input("x", 1, 4);
        var constant = new NodeProto { OpType = "Constant", Name = "c" };
        constant.Output.Add("k");
        constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorData.FromFloats("", new float[] { 1, 2, 3 }, 1, 4) });
        b.Graph.Node.Add(constant);
        b.Node("Add", new[] { "x", "k" }, new[] { "y" }, "add").Output("y", 1, 4);
        Assert.Equal("c.value", Rejects("TensorDataSizeMismatch", b).Target);

        var twice = Valid().Output("y", 1, 4);
        Assert.Equal("y", Rejects("DuplicateTensorName", twice).Target);
    }

    [Fact]
    public void MissingFile_IsModelNotFound()
    {
        using var dir = new TempDir();
        Check.Throws("ModelNotFound", () => OnnxModelIO.Load(dir.File("absent.onnx")));
        Check.Throws("ModelNotFound", () => ModelPreparer.Prepare(dir.File("absent.onnx")));
    }
}

public class WriteAtomicallyTests
{
    static string[] TempFiles(string folder) =>
        Directory.EnumerateFileSystemEntries(folder, "*", SearchOption.AllDirectories).Where(f => f.EndsWith(".tmp", StringComparison.Ordinal)).ToArray();

    [Fact]
    public void Writes_AndReplaces_WithoutLeavingTempFiles()
    {
        using var dir = new TempDir();
        var path = dir.File("out.onnx");
        OnnxModelIO.WriteAtomically(path, new byte[] { 1, 2, 3 });
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(path));
        OnnxModelIO.WriteAtomically(path, new byte[] { 9 });
        Assert.Equal(new byte[] { 9 }, File.ReadAllBytes(path));
        Assert.Empty(TempFiles(dir.Path));
        Assert.Single(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void MissingFolder_IsOutputFolderNotFound_AndCreatesNothing()
    {
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "no-such-folder", "out.onnx");
        Check.Throws("OutputFolderNotFound", () => OnnxModelIO.WriteAtomically(path, new byte[] { 1 }));
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "no-such-folder")));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void PathThatIsAFolder_FailsAndLeavesNoTempFile()
    {
        using var dir = new TempDir();
        var target = Directory.CreateDirectory(dir.File("a-folder")).FullName;
        File.WriteAllText(Path.Combine(target, "keep.txt"), "kept");
        var ex = Assert.Throws<PtqTools.Core.PtqException>(() => OnnxModelIO.WriteAtomically(target, new byte[] { 1, 2 }));
        Assert.Equal("OutputNotWritable", ex.ErrorId);
        Assert.Empty(TempFiles(dir.Path));
        Assert.True(Directory.Exists(target));
        Assert.Equal("kept", File.ReadAllText(Path.Combine(target, "keep.txt")));
        Assert.Equal(new[] { target }, Directory.GetFileSystemEntries(dir.Path));
    }
}
