using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// Where an int8 convolution pays in ONNX Runtime (the figures behind the ShallowConv rule): one Conv + Relu of each
/// shape as a float model and as the QDQ model PtqTools writes for one int8 layer between float neighbours (Q of the
/// input, int8 weight and int32 bias, Q/DQ of the output; ONNX Runtime fuses them into QLinearConv), timed at 1 thread,
/// the two sessions interleaved. `convdepth [--out DIR]`.
/// </summary>
public static class ConvDepth
{
    static readonly (int Cin, int Cout, int K, int Hw, int Group)[] Shapes =
    {
        (3, 32, 3, 112, 1), (3, 16, 3, 96, 1), (1, 16, 3, 96, 1), (3, 64, 7, 112, 1),
        (32, 32, 3, 56, 32), (96, 96, 3, 48, 96), (144, 144, 3, 24, 144), (256, 256, 3, 12, 256), (96, 96, 5, 24, 96),
        (8, 16, 3, 48, 1), (16, 16, 3, 48, 1), (32, 32, 3, 24, 1),
        (8, 32, 1, 48, 1), (16, 96, 1, 48, 1), (32, 32, 1, 24, 1), (64, 64, 1, 24, 1), (128, 128, 1, 12, 1),
    };

    public static void Run(string[] args)
    {
        string? outDir = args.Length > 1 && args[0] == "--out" ? args[1] : null;
        var lines = new List<string>
        {
            $"CPU: {Cpu()}; class {PtqTools.Core.Quantization.QuantTargets.HostClass}; ONNX Runtime {OrtEnv.Instance().GetVersionString()}; 1 thread; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.",
            "Command: `dotnet run -c Release --project tests/PtqTools.Benchmarks/KernelBenchmarks -- convdepth`.",
            "",
            "| Cin | Cout | kernel | output HxW | group | products per output | float us | int8 QDQ us | int8 speed vs float |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        };
        Console.WriteLine(string.Join(Environment.NewLine, lines));
        using var dir = new TempFolder();
        foreach (var (cin, cout, k, hw, group) in Shapes)
        {
            var f = Path.Combine(dir.Path, "f.onnx");
            var q = Path.Combine(dir.Path, "q.onnx");
            File.WriteAllBytes(f, Build(cin, cout, k, hw, group, false).ToByteArray());
            File.WriteAllBytes(q, Build(cin, cout, k, hw, group, true).ToByteArray());
            var (fu, qu) = Interleave(f, q, cin, hw);
            var line = FormattableString.Invariant($"| {cin} | {cout} | {k}x{k} | {hw}x{hw} | {group} | {cin / group * k * k} | {fu:0.0} | {qu:0.0} | {fu / qu:0.00}x |");
            Console.WriteLine(line);
            lines.Add(line);
        }
        if (outDir is not null)
        {
            Directory.CreateDirectory(outDir);
            File.WriteAllLines(Path.Combine(outDir, "conv-depth.md"), lines);
        }
    }

    static string Cpu() => File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?"
        : System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();

    /// <summary>Median over 15 rounds of each session's mean time in a ~10 ms burst, the two alternating.</summary>
    static (double Float, double Int8) Interleave(string floatPath, string int8Path, int cin, int hw)
    {
        using var so = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        using var fs = new InferenceSession(floatPath, so);
        using var qs = new InferenceSession(int8Path, so);
        var t = new DenseTensor<float>(new[] { 1, cin, hw, hw });
        var r = new Random(2);
        for (int i = 0; i < t.Length; i++) t.SetValue(i, (float)(r.NextDouble() * 2 - 1));
        var input = new[] { NamedOnnxValue.CreateFromTensor("x", t) };
        for (int i = 0; i < 10; i++) { fs.Run(input).Dispose(); qs.Run(input).Dispose(); }
        var ft = new List<double>();
        var qt = new List<double>();
        for (int round = 0; round < 15; round++)
        {
            ft.Add(Burst(fs, input));
            qt.Add(Burst(qs, input));
        }
        ft.Sort();
        qt.Sort();
        return (ft[ft.Count / 2], qt[qt.Count / 2]);
    }

    static double Burst(InferenceSession s, IReadOnlyCollection<NamedOnnxValue> input)
    {
        var sw = Stopwatch.StartNew();
        int runs = 0;
        while (sw.Elapsed.TotalMilliseconds < 10) { s.Run(input).Dispose(); runs++; }
        return sw.Elapsed.TotalMicroseconds / runs;
    }

    /// <summary>x -> Conv -> Relu -> y; with <paramref name="int8"/>, as one int8 layer between float neighbours.</summary>
    static ModelProto Build(int cin, int cout, int k, int hw, int group, bool int8)
    {
        var g = new GraphProto { Name = "convdepth" };
        var r = new Random(1);
        g.Input.Add(Models.Value("x", 1, 1, cin, hw, hw));
        g.Output.Add(Models.Value("y", 1, 1, cout, hw, hw));
        int depth = cin / group * k * k;
        long[] wdims = { cout, cin / group, k, k };
        string x = "x", w = "w", b = "b";
        if (int8)
        {
            g.Initializer.Add(Scalar("xs", 0.02f));
            g.Initializer.Add(Zero("xz", TensorProto.Types.DataType.Uint8, 128));
            g.Node.Add(Node("QuantizeLinear", new[] { "x", "xs", "xz" }, "xq"));
            g.Node.Add(Node("DequantizeLinear", new[] { "xq", "xs", "xz" }, "xd"));
            g.Initializer.Add(Tensor("wq", TensorProto.Types.DataType.Int8, Enumerable.Range(0, cout * depth).Select(_ => (byte)(sbyte)r.Next(-60, 60)).ToArray(), wdims));
            g.Initializer.Add(Vector("ws", cout, 0.01f));
            g.Initializer.Add(Tensor("wz", TensorProto.Types.DataType.Int8, new byte[cout], cout));
            g.Node.Add(Node("DequantizeLinear", new[] { "wq", "ws", "wz" }, "wd", ("axis", 0L)));
            g.Initializer.Add(Tensor("bq", TensorProto.Types.DataType.Int32, new byte[4 * cout], cout));
            g.Initializer.Add(Vector("bs", cout, 0.02f * 0.01f));
            g.Node.Add(Node("DequantizeLinear", new[] { "bq", "bs" }, "bd", ("axis", 0L)));
            (x, w, b) = ("xd", "wd", "bd");
        }
        else
        {
            g.Initializer.Add(Tensor("w", TensorProto.Types.DataType.Float,
                Enumerable.Range(0, cout * depth).SelectMany(_ => BitConverter.GetBytes((float)(r.NextDouble() - 0.5) * 0.1f)).ToArray(), wdims));
            g.Initializer.Add(Vector("b", cout, 0));
        }
        g.Node.Add(Node("Conv", new[] { x, w, b }, "c", ("kernel_shape", new long[] { k, k }), ("pads", new long[] { k / 2, k / 2, k / 2, k / 2 }), ("group", (long)group)));
        g.Node.Add(Node("Relu", new[] { "c" }, int8 ? "r" : "y"));
        if (int8)
        {
            g.Initializer.Add(Scalar("ys", 0.05f));
            g.Initializer.Add(Zero("yz", TensorProto.Types.DataType.Uint8, 0));
            g.Node.Add(Node("QuantizeLinear", new[] { "r", "ys", "yz" }, "yq"));
            g.Node.Add(Node("DequantizeLinear", new[] { "yq", "ys", "yz" }, "y"));
        }
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        return m;
    }

    static NodeProto Node(string op, string[] inputs, string output, params (string Name, object Value)[] attributes)
    {
        var n = new NodeProto { OpType = op, Name = output + "_" + op };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        foreach (var (name, value) in attributes)
            n.Attribute.Add(value is long l
                ? new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = l }
                : new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { (long[])value } });
        return n;
    }

    static TensorProto Tensor(string name, TensorProto.Types.DataType type, byte[] raw, params long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(raw) };
        t.Dims.AddRange(dims);
        return t;
    }

    static TensorProto Scalar(string name, float v) => Tensor(name, TensorProto.Types.DataType.Float, BitConverter.GetBytes(v));
    static TensorProto Zero(string name, TensorProto.Types.DataType type, byte v) => Tensor(name, type, new[] { v });
    static TensorProto Vector(string name, int n, float v) =>
        Tensor(name, TensorProto.Types.DataType.Float, Enumerable.Repeat(v, n).SelectMany(BitConverter.GetBytes).ToArray(), n);

    sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("ptq-convdepth-").FullName;
        public void Dispose() => Directory.Delete(Path, true);
    }
}
