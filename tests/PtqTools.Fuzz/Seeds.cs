using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Fuzz;

/// <summary>A model the mutators start from: its files (the .onnx and any side file) and where its data comes from.</summary>
public sealed record Seed(string Name, byte[] Model, IReadOnlyDictionary<string, byte[]> SideFiles, string? TensorProtoData);

/// <summary>The seed corpus: small conformance models, synthetic models, and (when asked) the pretrained ResNet18.</summary>
public static class Seeds
{
    /// <summary>Debian's libonnx-testdata, or where PTQTOOLS_TEST_ONNX_DATA points (a missing path shows the tests
    /// that need it skipped).</summary>
    public static string CorpusRoot { get; } = Environment.GetEnvironmentVariable("PTQTOOLS_TEST_ONNX_DATA") is { Length: > 0 } root ? root : "/usr/share/libonnx-testdata/data";

    public static List<Seed> Load(int maxCorpusBytes = 256 << 10)
    {
        var seeds = Synthetic();
        if (Directory.Exists(CorpusRoot))
        {
            foreach (var file in Directory.EnumerateFiles(CorpusRoot, "model.onnx", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var info = new FileInfo(file);
                if (info.Length > maxCorpusBytes) continue;
                var dir = info.DirectoryName!;
                var data = Path.Combine(dir, "test_data_set_0");
                seeds.Add(new Seed(Path.GetRelativePath(CorpusRoot, dir), File.ReadAllBytes(file), new Dictionary<string, byte[]>(),
                    File.Exists(Path.Combine(data, "input_0.pb")) ? data : null));
            }
        }
        return seeds;
    }

    public static string? ResNet18Path()
    {
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var path = Path.Combine(nuget, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        return File.Exists(path) ? path : null;
    }

    public static Seed ResNet18(string path) => new("resnet18", File.ReadAllBytes(path), new Dictionary<string, byte[]>(), null);

    /// <summary>Models built here: a small CNN (Conv, Relu, pooling, Gemm), a MatMul model (dynamic and weight-only
    /// modes), an If with a subgraph, and the CNN with its weights in an external-data side file.</summary>
    static List<Seed> Synthetic()
    {
        var random = new Random(7);
        var cnn = Cnn(random);
        var list = new List<Seed>
        {
            new("synthetic/cnn", cnn.ToByteArray(), new Dictionary<string, byte[]>(), null),
            new("synthetic/matmul", MatMul(random).ToByteArray(), new Dictionary<string, byte[]>(), null),
            new("synthetic/if", IfModel(random).ToByteArray(), new Dictionary<string, byte[]>(), null),
        };
        // The CNN with external data, written the way the engine writes it, then read back as bytes.
        var dir = Path.Combine(Path.GetTempPath(), $"ptq-fuzz-seed-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            ExternalData.Save(cnn.Clone(), path, threshold: 64);
            list.Add(new("synthetic/cnn-external", File.ReadAllBytes(path),
                new Dictionary<string, byte[]> { ["model.onnx.data"] = File.ReadAllBytes(path + ".data") }, null));
        }
        finally { Directory.Delete(dir, true); }
        return list;
    }

    static ModelProto NewModel(int opset = 13)
    {
        var m = new ModelProto { IrVersion = 8, ProducerName = "PtqTools.Fuzz", Graph = new GraphProto { Name = "g" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return m;
    }

    internal static ValueInfoProto Value(string name, int elemType, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(d < 0 ? new TensorShapeProto.Types.Dimension { DimParam = "N" } : new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } } };
    }

    static TensorProto Floats(Random r, string name, params long[] dims)
    {
        long n = dims.Aggregate(1L, (a, d) => a * d);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1) * 0.5f;
        return TensorData.FromFloats(name, v, dims);
    }

    internal static NodeProto Node(string op, string name, string[] inputs, string[] outputs, params AttributeProto[] attrs)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        n.Attribute.AddRange(attrs);
        return n;
    }

    static AttributeProto Ints(string name, params long[] v)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(v);
        return a;
    }

    static ModelProto Cnn(Random r)
    {
        var m = NewModel();
        var g = m.Graph;
        g.Input.Add(Value("x", 1, 1, 3, 8, 8));
        g.Initializer.Add(Floats(r, "w1", 4, 3, 3, 3));
        g.Initializer.Add(Floats(r, "b1", 4));
        g.Initializer.Add(Floats(r, "w2", 10, 4));
        g.Initializer.Add(Floats(r, "b2", 10));
        g.Node.Add(Node("Conv", "conv1", new[] { "x", "w1", "b1" }, new[] { "c1" }, Ints("pads", 1, 1, 1, 1), Ints("kernel_shape", 3, 3)));
        g.Node.Add(Node("Relu", "relu1", new[] { "c1" }, new[] { "r1" }));
        g.Node.Add(Node("MaxPool", "pool1", new[] { "r1" }, new[] { "p1" }, Ints("kernel_shape", 2, 2), Ints("strides", 2, 2)));
        g.Node.Add(Node("GlobalAveragePool", "gap", new[] { "p1" }, new[] { "gp" }));
        g.Node.Add(Node("Flatten", "flat", new[] { "gp" }, new[] { "f" }));
        g.Node.Add(Node("Gemm", "fc", new[] { "f", "w2", "b2" }, new[] { "y" },
            new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 }));
        g.Output.Add(Value("y", 1, 1, 10));
        return m;
    }

    static ModelProto MatMul(Random r)
    {
        var m = NewModel();
        var g = m.Graph;
        g.Input.Add(Value("x", 1, 1, 32));
        g.Initializer.Add(Floats(r, "w", 32, 64));
        g.Initializer.Add(Floats(r, "w2", 64, 16));
        g.Node.Add(Node("MatMul", "mm1", new[] { "x", "w" }, new[] { "h" }));
        g.Node.Add(Node("Relu", "relu", new[] { "h" }, new[] { "hr" }));
        g.Node.Add(Node("MatMul", "mm2", new[] { "hr", "w2" }, new[] { "y" }));
        g.Output.Add(Value("y", 1, 1, 16));
        return m;
    }

    static ModelProto IfModel(Random r)
    {
        var m = NewModel();
        var g = m.Graph;
        g.Input.Add(Value("x", 1, 1, 8));
        g.Initializer.Add(Floats(r, "w", 8, 8));
        var cond = new TensorProto { Name = "cond", DataType = (int)OnnxDataType.Bool, RawData = ByteString.CopyFrom(new byte[] { 1 }) };
        g.Initializer.Add(cond);
        g.Node.Add(Node("MatMul", "mm", new[] { "x", "w" }, new[] { "h" }));
        GraphProto Branch(string op, string name)
        {
            var b = new GraphProto { Name = name };
            b.Node.Add(Node(op, name + "_op", new[] { "h" }, new[] { name + "_out" }));
            b.Output.Add(Value(name + "_out", 1, 1, 8));
            return b;
        }
        g.Node.Add(Node("If", "if", new[] { "cond" }, new[] { "y" },
            new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Relu", "then") },
            new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Sigmoid", "else") }));
        g.Output.Add(Value("y", 1, 1, 8));
        return m;
    }
}
