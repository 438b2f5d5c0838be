using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>libonnx-testdata's quantization node tests (Debian package libonnx-testdata) on the engine: every
/// output must equal the expected tensor bit for bit, on every kernel path this CPU has.</summary>
public class EngineNodeTests
{
    public const string NodeData = "/usr/share/libonnx-testdata/data/node";

    public static TheoryData<string> Cases() => new()
    {
        "test_quantizelinear", "test_quantizelinear_axis", "test_dequantizelinear", "test_dequantizelinear_axis",
        "test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted", "test_dynamicquantizelinear_min_adjusted",
        "test_qlinearconv", "test_qlinearmatmul_2D", "test_qlinearmatmul_3D", "test_matmulinteger",
        "test_basic_convinteger", "test_convinteger_with_padding", "test_convinteger_without_padding",
    };

    internal static (ModelProto Model, List<TensorProto> Inputs, List<TensorProto> Outputs) Load(string name)
    {
        var dir = Path.Combine(NodeData, name);
        if (!Directory.Exists(dir))
            throw new InvalidOperationException($"'{dir}' does not exist: install the Debian package libonnx-testdata.");
        var model = OnnxModelIO.Load(Path.Combine(dir, "model.onnx"));
        var set = Path.Combine(dir, "test_data_set_0");
        List<TensorProto> Read(string prefix) => Enumerable.Range(0, 32)
            .Select(i => Path.Combine(set, $"{prefix}_{i}.pb")).TakeWhile(File.Exists)
            .Select(f => TensorProto.Parser.ParseFrom(File.ReadAllBytes(f))).ToList();
        return (model, Read("input"), Read("output"));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NodeTest_IsBitExact_OnEveryPath(string name)
    {
        var (model, inputs, outputs) = Load(name);
        foreach (var path in KernelDispatch.Supported())
        {
            using var engine = new IntegerEngine(model, EngineOptions.Default with { Kernels = KernelPaths.Context(path) }, name);
            Assert.Equal(inputs.Count, engine.Inputs.Count);
            var feed = engine.Inputs.Select((n, i) => (n, t: EngineTensor.FromProto(inputs[i]))).ToDictionary(p => p.n, p => p.t);
            var result = engine.Run(feed);
            for (int i = 0; i < outputs.Count; i++)
            {
                var expected = EngineTensor.FromProto(outputs[i]);
                var actual = result[engine.Outputs[i]];
                Assert.Equal(expected.Type, actual.Type);
                Assert.Equal(expected.Dims, actual.Dims);
                var e = expected.ToFloats(); var a = actual.ToFloats();
                for (int k = 0; k < e.Length; k++)
                    Assert.True(BitConverter.SingleToInt32Bits(e[k]) == BitConverter.SingleToInt32Bits(a[k]),
                        $"{name} on {path}: output {i} element {k} is {a[k]}, expected {e[k]}");
            }
        }
    }

    [Fact]
    public void UnsupportedOp_IsNamed()
    {
        // Ops outside the engine's table run in ONNX Runtime (OrtNodeFallback); an op that ONNX Runtime does not
        // know either is refused up front, by name.
        var (model, _, _) = Load("test_qlinearmatmul_2D");
        model.Graph.Node[0].OpType = "NoSuchOp";
        var ex = Check.Throws("EngineOpNotSupported", () => new IntegerEngine(model, "m"));
        Assert.Contains("NoSuchOp", ex.Message);
    }

    [Fact]
    public void UnsupportedQuantizedOp_IsNamed_NotHandedToOnnxRuntime()
    {
        // Quantized ops are the engine's own to compute; one it does not implement is refused, never run in ONNX Runtime.
        var (model, _, _) = Load("test_qlinearmatmul_2D");
        model.Graph.Node[0].OpType = "QLinearSigmoid";
        model.Graph.Node[0].Domain = "com.microsoft";
        var ex = Check.Throws("EngineOpNotSupported", () => new IntegerEngine(model, "m"));
        Assert.Contains("QLinearSigmoid", ex.Message);
    }
}
