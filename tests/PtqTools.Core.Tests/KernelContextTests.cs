using System.Collections.Concurrent;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The kernel context is a value: each call and each engine runs on its own, so runs with different settings
/// share a process without seeing each other's.</summary>
public class KernelContextTests
{
    /// <summary>The scalar reference on one thread, and the best path here split over two threads from a small size
    /// (so that the tiny shapes below do split).</summary>
    static readonly KernelContext Scalar = KernelContext.Default with { Path = KernelPath.Scalar, MaxThreads = 1 };
    static readonly KernelContext BestOnTwo = KernelContext.Default with { ParallelThreshold = 1 << 8, MaxThreads = 2 };

    [Fact]
    public void Default_IsTheHostsBestPath_AndTheDefaultValueIsTheScalarReferenceOnOneThread()
    {
        Assert.Equal(KernelDispatch.Best, KernelContext.Default.EffectivePath);
        Assert.Equal(Environment.ProcessorCount, KernelContext.Default.MaxThreads);
        Assert.Equal(KernelContext.DefaultParallelThreshold, KernelContext.Default.ParallelThreshold);
        Assert.Equal(KernelPath.Scalar, default(KernelContext).EffectivePath);
        Assert.Equal(1, default(KernelContext).MaxThreads);
        Assert.Equal(1, default(KernelContext).ThreadsFor(1L << 40));
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelContext.Default with { MaxThreads = 0 });
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelContext.Default with { ParallelThreshold = -1 });
        // Values: a changed copy leaves the default as it was.
        var two = KernelContext.Default.WithThreads(2).WithPath(KernelPath.Scalar);
        Assert.Equal(2, two.MaxThreads);
        Assert.Equal(KernelDispatch.Best, KernelContext.Default.Path);
        Assert.Equal(KernelContext.ForHost(), KernelContext.Default with { AllowAmx = Environment.GetEnvironmentVariable("PTQTOOLS_AMX") != "0" });
    }

    [Fact]
    public void ThreadsFor_FollowsTheContextsThresholdAndThreads()
    {
        var c = KernelContext.Default with { ParallelThreshold = 1000, MaxThreads = 3 };
        Assert.Equal(1, c.ThreadsFor(999));
        Assert.Equal(2, c.ThreadsFor(1000));
        Assert.Equal(3, c.ThreadsFor(1_000_000));
        Assert.Equal(1, c.WithThreads(1).ThreadsFor(1_000_000));
        Assert.Equal(3, (c with { ParallelThreshold = 0 }).ThreadsFor(10));
    }

    [Fact]
    public void Clamp_StepsDownToAPathThisMachineRuns()
    {
        foreach (var path in Enum.GetValues<KernelPath>())
        {
            var clamped = KernelDispatch.Clamp(path);
            Assert.Contains(clamped, KernelDispatch.Supported());
            Assert.True(clamped <= path);
            Assert.Equal(KernelDispatch.CanRun(path), clamped == path);
        }
        Assert.Equal(KernelDispatch.Best, KernelDispatch.Clamp((KernelPath)1000));
        Assert.Equal(KernelDispatch.Supported()[^1], KernelDispatch.Best);
    }

    [Fact]
    public void Amx_IsAllowedPerContext_NotPerProcess()
    {
        var on = KernelContext.Default with { Path = KernelPath.NativeVnni, AllowAmx = true };
        var off = on with { AllowAmx = false };
        Assert.False(off.UsesAmx);
        Assert.Equal(NativeKernels.HasAmx && KernelDispatch.Best == KernelPath.NativeVnni, on.UsesAmx);
        Assert.False((on with { Path = KernelPath.Avx2 }).UsesAmx);
    }

    static byte[] U8(Random r, int n) { var a = new byte[n]; r.NextBytes(a); return a; }
    static sbyte[] S8(Random r, int n) { var a = new sbyte[n]; for (int i = 0; i < n; i++) a[i] = (sbyte)r.Next(-127, 128); return a; }

    /// <summary>Two threads at once, one on the scalar path with one thread and one on the best path with two: every
    /// GEMM and convolution of each equals the scalar reference.</summary>
    [Fact]
    public void TwoThreads_WithDifferentContexts_AtOnce_EachMatchTheReference()
    {
        var r = new Random(11);
        int m = 40, n = 48, k = 70;
        var a = U8(r, m * k); var b = S8(r, k * n);
        var gemmWant = new int[m * n];
        QGemm.Reference<byte, sbyte>(a, 131, m, k, b, new[] { 0 }, n, gemmWant);
        var gemmWeights = PackedWeights.Pack(b, k, n, new[] { 0 });
        var g = new ConvGeometry(1, 16, 12, 12, 24, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        var x = U8(r, g.Channels * g.Height * g.Width); var w = S8(r, g.OutChannels * g.PatchSize);
        var mult = new[] { 2e-3f };
        var convWant = new byte[g.OutChannels * g.OutH * g.OutW];
        QConv.RequantizedReference<byte, sbyte, byte>(x, 120, w, new[] { 0 }, g, default, mult, 128, false, convWant);
        var convWeights = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, g);

        var failures = new ConcurrentQueue<string>();
        using var start = new Barrier(2);
        void Work(KernelContext context)
        {
            start.SignalAndWait();
            for (int it = 0; it < 30; it++)
            {
                var c = new int[m * n];
                QGemm.Multiply(context, a, 131, m, gemmWeights, c);
                if (!c.AsSpan().SequenceEqual(gemmWant)) failures.Enqueue($"GEMM on {context}, call {it}");
                var y = new byte[convWant.Length];
                QConv.RunRequantized<byte, byte>(context, x, 120, convWeights, default, mult, 128, false, y);
                if (!y.AsSpan().SequenceEqual(convWant)) failures.Enqueue($"conv on {context}, call {it}");
            }
        }
        var threads = new[] { Scalar, BestOnTwo }.Select(ctx => new Thread(() => Work(ctx))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(failures);
    }

    /// <summary>Two runs of the same quantized model at once through ModelInference (the cmdlets' path), with different
    /// contexts: each reports its own path and threads, and both give the outputs of the scalar engine.</summary>
    [Fact]
    public void TwoInferenceRuns_WithDifferentContexts_AtOnce_EachReportItsOwnAndMatchTheScalarEngine()
    {
        using var dir = new TempDir();
        TestPaths.UseTempCache();
        var prepared = ModelPreparer.Prepare(TinyModels.ResidualCnn().Save(dir.File("m.onnx")));
        var random = new Random(3);
        var samples = Enumerable.Range(0, 12).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var calibration = DataSetReader.FromArrays(samples[..6], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var evaluation = DataSetReader.FromArrays(samples[6..], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, calibration, 1, null, default);
        var quantized = QuantizationPipeline.Run(prepared, stats, new QuantizationOptions(), dir.File("q.onnx"), default).OutputPath;

        using var reference = new IntegerEngine(OnnxModelIO.Load(quantized), EngineOptions.Default with { Kernels = Scalar });
        using var reader = new SampleReader(evaluation);
        var want = reader.Read(default).Select(s => reference.Run(EngineParity.Feed(reference, s))[reference.Outputs[0]].ToFloats()).ToList();

        var contexts = new[] { Scalar, BestOnTwo, KernelContext.Default with { Path = KernelPath.Vector128, MaxThreads = 3, ParallelThreshold = 1 << 8 } };
        var results = new List<InferenceResult>[contexts.Length];
        using var start = new Barrier(contexts.Length);
        var threads = contexts.Select((ctx, i) => new Thread(() =>
        {
            start.SignalAndWait();
            var all = new List<InferenceResult>();
            for (int rep = 0; rep < 5; rep++) all.AddRange(ModelInference.Run(quantized, evaluation, InferenceEngine.PtqTools, 1, null, default, kernels: ctx));
            results[i] = all;
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        for (int i = 0; i < contexts.Length; i++)
        {
            Assert.Equal(want.Count * 5, results[i].Count);
            Assert.All(results[i], r => Assert.Equal(contexts[i].EffectivePath.ToString(), r.KernelPath));
            Assert.All(results[i], r => Assert.Equal(contexts[i].MaxThreads, r.Threads));
            for (int s = 0; s < results[i].Count; s++)
                Assert.True(want[s % want.Count].AsSpan().SequenceEqual(results[i][s].Outputs[0]), $"{contexts[i]}: sample {s} differs from the scalar engine");
        }
        // Without a context, the run's thread count reaches the kernels (and no process-wide value is left behind).
        var plain = ModelInference.Run(quantized, evaluation, InferenceEngine.PtqTools, 2, null, default).ToList();
        Assert.All(plain, r => Assert.Equal(2, r.Threads));
        Assert.All(plain, r => Assert.Equal(KernelDispatch.Best.ToString(), r.KernelPath));
        Assert.Equal(Environment.ProcessorCount, KernelContext.Default.MaxThreads);
    }
}
