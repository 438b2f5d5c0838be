using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// `interleaved [RUNS] [THREADS]`: ResNet18's convolution shapes (QLinearConv, per-channel symmetric weights) and the
/// issue's GEMM shapes (MatMulInteger), ONNX Runtime and PtqTools call for call in turn, best time of each. On a
/// machine other processes share, the interleaved minimum compares the two under the same conditions, which
/// BenchmarkDotNet's one-process-per-case runs cannot.
/// </summary>
internal static class Interleaved
{
    static readonly (string Name, ConvGeometry G)[] Convs =
    {
        ("conv1 7x7/2 3->64 @224", new(1, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 3, 3)),
        ("layer1 3x3 64->64 @56", new(1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1)),
        ("layer2 3x3/2 64->128 @56", new(1, 64, 56, 56, 128, 3, 3, 2, 2, 1, 1, 1, 1)),
        ("layer2 1x1/2 64->128 @56", new(1, 64, 56, 56, 128, 1, 1, 2, 2)),
        ("layer2 3x3 128->128 @28", new(1, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, 1, 1)),
        ("layer3 3x3 256->256 @14", new(1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, 1, 1)),
        ("layer4 3x3/2 256->512 @14", new(1, 256, 14, 14, 512, 3, 3, 2, 2, 1, 1, 1, 1)),
        ("layer4 3x3 512->512 @7", new(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1)),
    };

    public static void Run(string[] args)
    {
        int runs = args.Length > 0 ? int.Parse(args[0]) : 40, threads = args.Length > 1 ? int.Parse(args[1]) : 1;
        Console.WriteLine($"{threads} thread(s), best of {runs} interleaved calls; {KernelContext.Default.WithThreads(threads)}, AMX GEMM {NativeKernels.HasAmx}, AMX conv {NativeKernels.HasAmxConv}");
        Console.WriteLine("| case | ONNX Runtime (µs) | PtqTools (µs) | PtqTools / ORT time | ORT GOPS | PtqTools GOPS |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var (name, g) in Convs) Conv(name, g, runs, threads);
        foreach (var (m, n, k) in new[] { (1, 768, 768), (128, 768, 768), (128, 3072, 768), (512, 1024, 1024) }) Gemm(m, n, k, runs, threads);
    }

    static InferenceSession Session(ModelProto m, int threads)
    {
        var o = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        o.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        return new InferenceSession(m.ToByteArray(), o);
    }

    static void Report(string name, double ops, Action ort, Action own, int runs)
    {
        for (int i = 0; i < 3; i++) { ort(); own(); }
        double bo = double.MaxValue, bp = double.MaxValue;
        for (int i = 0; i < runs; i++)
        {
            long t = Stopwatch.GetTimestamp(); ort(); bo = Math.Min(bo, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp(); own(); bp = Math.Min(bp, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
        }
        Console.WriteLine($"| {name} | {bo:F1} | {bp:F1} | {bp / bo:F2} | {ops / bo / 1e3:F0} | {ops / bp / 1e3:F0} |");
    }

    static void Conv(string name, ConvGeometry g, int runs, int threads)
    {
        var r = new Random(2);
        var x = new byte[g.Channels * g.Height * g.Width]; r.NextBytes(x);
        var w = new sbyte[g.OutChannels * g.PatchSize]; for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-127, 128);
        var ws = Enumerable.Range(0, g.OutChannels).Select(i => 0.001f + i * 1e-6f).ToArray();
        var packed = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, g);
        var mult = ws.Select(s => 0.02f * s / 0.05f).ToArray();
        var y = new byte[g.OutChannels * g.OutH * g.OutW];
        var node = new NodeProto { OpType = "QLinearConv", Name = "conv" };
        node.Input.AddRange(new[] { "x", "xs", "xz", "w", "ws", "wz", "ys", "yz" }); node.Output.Add("y");
        void Ints(string a, params long[] v) { var at = new AttributeProto { Name = a, Type = AttributeProto.Types.AttributeType.Ints }; at.Ints.AddRange(v); node.Attribute.Add(at); }
        Ints("pads", g.PadTop, g.PadLeft, g.PadBottom, g.PadRight); Ints("strides", g.StrideH, g.StrideW); Ints("kernel_shape", g.KernelH, g.KernelW);
        var model = Models.Single(node, new[] { Models.Value("x", (int)OnnxDataType.UInt8, 1, g.Channels, g.Height, g.Width) },
            Models.Value("y", (int)OnnxDataType.UInt8, 1, g.OutChannels, g.OutH, g.OutW),
            new[]
            {
                TensorData.FromFloats("xs", new[] { 0.02f }), TensorData.FromUInt8("xz", new byte[] { 128 }),
                TensorData.FromInt8("w", w, g.OutChannels, g.Channels, g.KernelH, g.KernelW), TensorData.FromFloats("ws", ws, g.OutChannels),
                TensorData.FromInt8("wz", new sbyte[g.OutChannels], g.OutChannels), TensorData.FromFloats("ys", new[] { 0.05f }), TensorData.FromUInt8("yz", new byte[] { 128 }),
            });
        using var session = Session(model, threads);
        using var input = OrtValue.CreateTensorValueFromMemory(x, new long[] { 1, g.Channels, g.Height, g.Width });
        using var run = new RunOptions();
        Report("QLinearConv " + name, 2.0 * g.OutChannels * g.OutH * g.OutW * g.PatchSize,
            () => { using var _ = session.Run(run, new[] { "x" }, new[] { input }, new[] { "y" }); },
            () => QConv.RunRequantized<byte, byte>(KernelContext.Default.WithThreads(threads), x, 128, packed, default, mult, 128, false, y), runs);
    }

    static void Gemm(int m, int n, int k, int runs, int threads)
    {
        var r = new Random(1);
        var a = new byte[m * k]; r.NextBytes(a);
        var b = new sbyte[k * n]; for (int i = 0; i < b.Length; i++) b[i] = (sbyte)r.Next(-128, 128);
        var packed = PackedWeights.Pack(b, k, n, new[] { 0 });
        var c = new int[m * n];
        var model = Models.MatMulInteger(b, m, k, n);
        using var session = Session(model, threads);
        using var input = OrtValue.CreateTensorValueFromMemory(a, new long[] { m, k });
        using var run = new RunOptions();
        Report($"MatMulInteger {m}x{n}x{k}", 2.0 * m * n * k,
            () => { using var _ = session.Run(run, new[] { "A" }, new[] { input }, new[] { "C" }); },
            () => QGemm.Multiply(KernelContext.Default.WithThreads(threads), a, 128, m, packed, c), runs);
    }
}
