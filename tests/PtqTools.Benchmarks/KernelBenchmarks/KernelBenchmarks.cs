using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length > 1 && args[0] == "engine") { EngineProfile.Run(args[1..]); return; }
        if (args.Length > 6 && args[0] == "satconv") { SaturatingConvProbe.Run(args[1..]); return; }
        if (args.Length > 3 && args[0] == "satgemm") { SaturatingGemmProbe.Run(args[1..]); return; }
        if (args.Length > 1 && args[0] == "emulation") { EmulationCost.Run(args[1..]); return; }
        if (args.Length > 0 && args[0] == "interleaved") { Interleaved.Run(args[1..]); return; }
        if (args.Length > 0 && args[0] == "threads") { Probe.Run(args[1..]); return; }
        if (args.Length > 1 && args[0] == "memory") { EngineMemory.Run(args[1..]); return; }
        if (args.Length > 0 && args[0] == "hardware") { HostBench.Run(args[1..]); return; }
        if (args.Length > 0 && args[0] == "convdepth") { ConvDepth.Run(args[1..]); return; }
        Console.WriteLine($"PtqTools kernel path: {KernelDispatch.Best} (native library: {NativeKernels.LoadedFrom ?? "absent: " + NativeKernels.LoadError})");
        var config = DefaultConfig.Instance
            .AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(7))
            .AddColumn(StatisticColumn.Min)
            .AddColumn(new GopsColumn())
            .AddColumn(new GopsColumn(fromMinimum: true))
            .WithOptions(ConfigOptions.JoinSummary);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
    }
}

/// <summary>Giga integer operations per second (2 x M x N x K per run), from the mean.</summary>
public sealed class GopsColumn(bool fromMinimum = false) : IColumn
{
    // From the minimum as well as the mean: on a shared machine the minimum is the run least disturbed by others.
    public string Id => fromMinimum ? "GOPSmin" : "GOPS";
    public string ColumnName => fromMinimum ? "GOPS (min)" : "GOPS";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"2*M*N*K (or 2*OC*OH*OW*C*kh*kw) / {(fromMinimum ? "minimum" : "mean")} time, 1e9 per second";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase c) => GetValue(summary, c, SummaryStyle.Default);
    public string GetValue(Summary summary, BenchmarkCase c, SummaryStyle style)
    {
        var report = summary[c];
        if (report?.ResultStatistics is null) return "-";
        var shape = (string)c.Parameters["Shape"];
        double ops = shape == "conv64x56x56" ? 2.0 * 64 * 56 * 56 * 64 * 9 : shape.Split('x').Select(double.Parse).Aggregate(2.0, (a, b) => a * b);
        double ns = fromMinimum ? report.ResultStatistics.Min : report.ResultStatistics.Mean;
        return (ops / (ns * 1e-9) / 1e9).ToString("F1");
    }
}

internal static class Models
{
    public static ModelProto Single(NodeProto node, IEnumerable<ValueInfoProto> inputs, ValueInfoProto output, IEnumerable<TensorProto> initializers)
    {
        var m = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "bench" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        m.Graph.Node.Add(node);
        m.Graph.Input.AddRange(inputs);
        m.Graph.Output.Add(output);
        m.Graph.Initializer.AddRange(initializers);
        return m;
    }

    public static ValueInfoProto Value(string name, int elemType, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } } };
    }

    /// <summary>ONNX Runtime's MatMulInteger of u8 A [m, k] (zero point 128) by the constant s8 B [k, n] (zero point 0):
    /// the int8 GEMM the kernel benchmarks hold the engine's against.</summary>
    public static ModelProto MatMulInteger(sbyte[] b, int m, int k, int n)
    {
        var node = new NodeProto { OpType = "MatMulInteger", Name = "mm" };
        node.Input.AddRange(new[] { "A", "B", "az", "bz" }); node.Output.Add("C");
        return Single(node, new[] { Value("A", (int)OnnxDataType.UInt8, m, k) }, Value("C", (int)OnnxDataType.Int32, m, n),
            new[] { TensorData.FromInt8("B", b, k, n), TensorData.FromUInt8("az", new byte[] { 128 }), TensorData.FromInt8("bz", new sbyte[] { 0 }) });
    }

    public static InferenceSession Session(ModelProto m, int threads)
    {
        var o = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        return new InferenceSession(m.ToByteArray(), o);
    }
}

/// <summary>u8 x s8 -> s32 GEMM: ONNX Runtime MatMulInteger (weights a constant initializer, which it pre-packs)
/// vs QGemm with pre-packed weights, 1 and 2 threads.</summary>
[MemoryDiagnoser(false)]
public class GemmBenchmarks : GemmAgainstOnnxRuntime
{
    [Params("1x768x768", "128x768x768", "128x3072x768", "512x1024x1024")] public string Shape = "";
    [Params(1, 2)] public int Threads;

    KernelContext _kernels;

    [GlobalSetup]
    public void Setup()
    {
        Setup(Shape, Threads, -128, 128);
        _kernels = KernelContext.Default.WithThreads(Threads);
    }

    [Benchmark]
    public void PtqTools() => QGemm.Multiply(_kernels, A, 128, M, Packed, C);
}

/// <summary>The shared part of the GEMM benchmarks: A (u8) and B (s8, in [low, high)) of an M x N x K shape, B packed,
/// and ONNX Runtime's MatMulInteger on the same weights (a constant initializer, which it pre-packs) as the baseline.</summary>
public abstract class GemmAgainstOnnxRuntime
{
    protected int M, N, K;
    protected byte[] A = null!;
    protected int[] C = null!;
    protected PackedWeights Packed = null!;
    InferenceSession _session = null!;
    OrtValue _input = null!;
    RunOptions _run = null!;

    protected void Setup(string shape, int threads, int low, int high)
    {
        var d = shape.Split('x').Select(int.Parse).ToArray();
        (M, N, K) = (d[0], d[1], d[2]);
        var r = new Random(1);
        A = new byte[M * K]; r.NextBytes(A);
        var b = new sbyte[K * N]; for (int i = 0; i < b.Length; i++) b[i] = (sbyte)r.Next(low, high);
        Packed = PackedWeights.Pack(b, K, N, new[] { 0 });
        C = new int[M * N];
        _session = Models.Session(Models.MatMulInteger(b, M, K, N), threads);
        _input = OrtValue.CreateTensorValueFromMemory(A, new long[] { M, K });
        _run = new RunOptions();
    }

    [Benchmark(Baseline = true)]
    public void OnnxRuntime()
    {
        using var results = _session.Run(_run, new[] { "A" }, new[] { _input }, new[] { "C" });
    }

    [GlobalCleanup]
    public void Cleanup() { _session.Dispose(); _input.Dispose(); _run.Dispose(); }
}

/// <summary>3x3 convolution 64 -> 64 on 1x64x56x56 (pad 1), requantized per channel: ONNX Runtime QLinearConv vs
/// QConv.RunRequantized (convolution and requantization in one pass).</summary>
[MemoryDiagnoser(false)]
public class ConvBenchmarks
{
    [Params("conv64x56x56")] public string Shape = "";
    [Params(1, 2)] public int Threads;

    byte[] _x = null!, _y = null!;
    float[] _mult = null!;
    KernelContext _kernels;
    PackedConvWeights _packed = null!;
    InferenceSession _session = null!;
    OrtValue _input = null!;
    RunOptions _run = null!;
    readonly ConvGeometry _g = new(1, 64, 56, 56, 64, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);

    [GlobalSetup]
    public void Setup()
    {
        var r = new Random(2);
        _x = new byte[64 * 56 * 56]; r.NextBytes(_x);
        var w = new sbyte[64 * 64 * 9]; for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-127, 128);
        var ws = Enumerable.Range(0, 64).Select(i => 0.001f + i * 1e-5f).ToArray();
        _packed = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, _g);
        _y = new byte[64 * 56 * 56];
        _mult = ws.Select(s => 0.02f * s / 0.05f).ToArray();
        _kernels = KernelContext.Default.WithThreads(Threads);
        var node = new NodeProto { OpType = "QLinearConv", Name = "conv" };
        node.Input.AddRange(new[] { "x", "xs", "xz", "w", "ws", "wz", "ys", "yz" }); node.Output.Add("y");
        node.Attribute.Add(new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 1, 1, 1 } });
        node.Attribute.Add(new AttributeProto { Name = "kernel_shape", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 3, 3 } });
        var model = Models.Single(node, new[] { Models.Value("x", (int)OnnxDataType.UInt8, 1, 64, 56, 56) }, Models.Value("y", (int)OnnxDataType.UInt8, 1, 64, 56, 56),
            new[]
            {
                TensorData.FromFloats("xs", new[] { 0.02f }), TensorData.FromUInt8("xz", new byte[] { 128 }),
                TensorData.FromInt8("w", w, 64, 64, 3, 3), TensorData.FromFloats("ws", ws, 64), TensorData.FromInt8("wz", new sbyte[64], 64),
                TensorData.FromFloats("ys", new[] { 0.05f }), TensorData.FromUInt8("yz", new byte[] { 128 }),
            });
        _session = Models.Session(model, Threads);
        _input = OrtValue.CreateTensorValueFromMemory(_x, new long[] { 1, 64, 56, 56 });
        _run = new RunOptions();
    }

    [Benchmark(Baseline = true)]
    public void OnnxRuntime()
    {
        using var results = _session.Run(_run, new[] { "x" }, new[] { _input }, new[] { "y" });
    }

    [Benchmark]
    public void PtqTools() => QConv.RunRequantized<byte, byte>(_kernels, _x, 128, _packed, default, _mult, 128, false, _y);

    [GlobalCleanup]
    public void Cleanup() { _session.Dispose(); _input.Dispose(); _run.Dispose(); }
}

/// <summary>The native AVX2 GEMM (KernelPath.NativeAvx2, forced: runs on any x64 host) on the GEMM shapes of MiniLM
/// (M x N x K: the attention projections and the feed-forward layers at 128 tokens) and ResNet18 (its convolutions as
/// im2col GEMMs: layer1, layer3 and layer4 3x3, the classifier), in both forms: weights within 7 bits ("7-bit pairs",
/// vpmaddubsw) and full-range int8 ("widened", vpmaddwd). Peers: the managed Avx2 path and ONNX Runtime's
/// MatMulInteger on the same weights.</summary>
[MemoryDiagnoser(false)]
public class Avx2GemmBenchmarks : GemmAgainstOnnxRuntime
{
    [Params("128x384x384", "128x1536x384", "128x384x1536", "3136x64x576", "196x256x2304", "49x512x4608", "1x1000x512")] public string Shape = "";
    [Params("7-bit", "widened")] public string Form = "";
    [Params(1)] public int Threads;

    [GlobalSetup]
    public void Setup()
    {
        int limit = Form == "7-bit" ? 64 : 127;
        Setup(Shape, Threads, -limit, limit + 1);
        if (Packed.SevenBitPairs != (Form == "7-bit")) throw new InvalidOperationException($"The {Form} weights packed as SevenBitPairs = {Packed.SevenBitPairs}.");
    }

    [Benchmark]
    public void ManagedAvx2() => QGemm.Multiply(On(KernelPath.Avx2, Threads), A, 128, M, Packed, C);

    [Benchmark]
    public void NativeAvx2() => QGemm.Multiply(On(KernelPath.NativeAvx2, Threads), A, 128, M, Packed, C);

    /// <summary>The context of a benchmark on <paramref name="path"/>, which must run here (no silent fallback).</summary>
    internal static KernelContext On(KernelPath path, int threads)
    {
        if (!KernelDispatch.Supported().Contains(path)) throw new InvalidOperationException($"{path} cannot run here: {NativeKernels.LoadError}");
        return KernelContext.Default.WithThreads(threads).WithPath(path);
    }
}

/// <summary>The native AVX2 convolution on ResNet18's 3x3 64 -> 64 layer (1x64x56x56, pad 1, requantized per
/// channel) in both forms, against the managed Avx2 path (im2col + GEMM) and ONNX Runtime's QLinearConv.</summary>
[MemoryDiagnoser(false)]
public class Avx2ConvBenchmarks
{
    [Params("conv64x56x56")] public string Shape = "";   // read by GopsColumn
    [Params("7-bit", "widened")] public string Form = "";

    byte[] _x = null!, _y = null!;
    float[] _mult = null!;
    PackedConvWeights _packed = null!;
    InferenceSession _session = null!;
    OrtValue _input = null!;
    RunOptions _run = null!;
    readonly ConvGeometry _g = new(1, 64, 56, 56, 64, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);

    [GlobalSetup]
    public void Setup()
    {
        var r = new Random(2);
        _x = new byte[64 * 56 * 56]; r.NextBytes(_x);
        int limit = Form == "7-bit" ? 64 : 127;
        var w = new sbyte[64 * 64 * 9]; for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-limit, limit + 1);
        var ws = Enumerable.Range(0, 64).Select(i => 0.001f + i * 1e-5f).ToArray();
        _packed = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, _g);
        _y = new byte[64 * 56 * 56];
        _mult = ws.Select(s => 0.02f * s / 0.05f).ToArray();
        var node = new NodeProto { OpType = "QLinearConv", Name = "conv" };
        node.Input.AddRange(new[] { "x", "xs", "xz", "w", "ws", "wz", "ys", "yz" }); node.Output.Add("y");
        node.Attribute.Add(new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 1, 1, 1 } });
        node.Attribute.Add(new AttributeProto { Name = "kernel_shape", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 3, 3 } });
        var model = Models.Single(node, new[] { Models.Value("x", (int)OnnxDataType.UInt8, 1, 64, 56, 56) }, Models.Value("y", (int)OnnxDataType.UInt8, 1, 64, 56, 56),
            new[]
            {
                TensorData.FromFloats("xs", new[] { 0.02f }), TensorData.FromUInt8("xz", new byte[] { 128 }),
                TensorData.FromInt8("w", w, 64, 64, 3, 3), TensorData.FromFloats("ws", ws, 64), TensorData.FromInt8("wz", new sbyte[64], 64),
                TensorData.FromFloats("ys", new[] { 0.05f }), TensorData.FromUInt8("yz", new byte[] { 128 }),
            });
        _session = Models.Session(model, 1);
        _input = OrtValue.CreateTensorValueFromMemory(_x, new long[] { 1, 64, 56, 56 });
        _run = new RunOptions();
    }

    [Benchmark(Baseline = true)]
    public void OnnxRuntime()
    {
        using var results = _session.Run(_run, new[] { "x" }, new[] { _input }, new[] { "y" });
    }

    [Benchmark]
    public void ManagedAvx2() => QConv.RunRequantized<byte, byte>(Avx2GemmBenchmarks.On(KernelPath.Avx2, 1), _x, 128, _packed, default, _mult, 128, false, _y);

    [Benchmark]
    public void NativeAvx2() => QConv.RunRequantized<byte, byte>(Avx2GemmBenchmarks.On(KernelPath.NativeAvx2, 1), _x, 128, _packed, default, _mult, 128, false, _y);

    [GlobalCleanup]
    public void Cleanup() { _session.Dispose(); _input.Dispose(); _run.Dispose(); }
}
