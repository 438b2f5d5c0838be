using System.Diagnostics;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Kernels;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Engine;

/// <summary>Which runtime executes a model.</summary>
public enum InferenceEngine { OnnxRuntime, PtqTools }

/// <summary>One sample's outputs (plain data: names and float arrays), with the engine that computed them.</summary>
public sealed class InferenceResult
{
    public string ModelPath { get; set; } = "";
    public string Engine { get; set; } = "";
    public int Index { get; set; }
    public string SampleId { get; set; } = "";
    /// <summary>The sample's class label; null where the data set has none.</summary>
    public int? Label { get; set; }
    public Model.ValueList<string> OutputNames { get; set; } = new();
    /// <summary>Each output's values, flat in row-major order.</summary>
    public Model.ValueList<float[]> Outputs { get; set; } = new();
    /// <summary>Index of the largest value of the first output.</summary>
    public int Top { get; set; }
    public double Milliseconds { get; set; }
    /// <summary>The kernel path the PtqTools engine took (empty for ONNX Runtime).</summary>
    public string KernelPath { get; set; } = "";
    /// <summary>The threads the run could use: the PtqTools kernels' (its <see cref="Kernels.KernelContext"/>) or ONNX
    /// Runtime's intra-op threads.</summary>
    public int Threads { get; set; }
    /// <summary>The CPU class whose ONNX Runtime int8 arithmetic the PtqTools engine emulated (empty: exact int32 sums
    /// on the PtqTools engine, or ONNX Runtime itself).</summary>
    public string Target { get; set; } = "";
}

/// <summary>Runs a model over a data set on ONNX Runtime or on the PtqTools integer engine, one result per sample.</summary>
public static class ModelInference
{
    /// <param name="target">For the PtqTools engine: the CPU class whose ONNX Runtime int8 arithmetic it emulates (null:
    /// exact int32 sums). ONNX Runtime computes what this host computes, so a target with it is refused, before any work.</param>
    /// <param name="kernels">For the PtqTools engine: how its kernels run (null: this host's default on
    /// <paramref name="threads"/> threads). This run's own value: nothing process-wide is changed.</param>
    public static IEnumerable<InferenceResult> Run(string modelPath, PtqDataSet data, InferenceEngine engine, int threads,
        IProgress<RunProgress>? progress, CancellationToken cancel, EngineTarget? target = null, KernelContext? kernels = null)
    {
        CheckTarget(engine, target);
        return RunSamples(modelPath, data, engine, threads, progress, cancel, target, kernels ?? KernelContext.Default.WithThreads(threads));
    }

    /// <summary>Refuses a target with ONNX Runtime (error InvalidOptionCombination).</summary>
    public static void CheckTarget(InferenceEngine engine, EngineTarget? target)
    {
        if (target is not null && engine != InferenceEngine.PtqTools)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"A target CPU class ({target.Name}) is emulated by the PtqTools engine only; ONNX Runtime computes what this machine computes. Use -Engine PtqTools with -Target.", target.Name);
    }

    static IEnumerable<InferenceResult> RunSamples(string modelPath, PtqDataSet data, InferenceEngine engine, int threads,
        IProgress<RunProgress>? progress, CancellationToken cancel, EngineTarget? target, KernelContext kernels)
    {
        var clock = Stopwatch.StartNew();
        using var reader = new SampleReader(data);
        OrtRunner? ort = null;
        IntegerEngine? own = null;
        try
        {
            if (engine == InferenceEngine.OnnxRuntime) ort = OrtRunner.FromFile(modelPath, threads);
            else
            {
                // A model of several inputs (MiniLM's token ids, mask and types) takes samples of whole input
                // tensors; EngineParity.Feed refuses a float sample for it (EngineInputCount).
                own = IntegerEngine.Load(modelPath, (target?.Options ?? EngineOptions.Default) with { FallbackThreads = threads, Kernels = kernels });
            }
            int n = 0;
            foreach (var sample in reader.Read(cancel))
            {
                cancel.ThrowIfCancellationRequested();
                var one = Stopwatch.StartNew();
                string[] names;
                float[][] outputs;
                if (ort is not null)
                {
                    outputs = ort.Run(sample, cancel);
                    names = ort.OutputNames;
                }
                else
                {
                    var result = own!.Run(EngineParity.Feed(own, sample), cancel);
                    names = own.Outputs.ToArray();
                    outputs = names.Select(o => result[o].ToFloats()).ToArray();
                }
                one.Stop();
                n++;
                progress?.Report(new RunProgress(n, data.Count, n / Math.Max(1e-9, clock.Elapsed.TotalSeconds), sample.Id));
                yield return new InferenceResult
                {
                    ModelPath = modelPath, Engine = engine.ToString(), Index = sample.Index, SampleId = sample.Id, Label = sample.Label >= 0 ? sample.Label : null,
                    OutputNames = names, Outputs = outputs, Top = ArgMax(outputs.Length > 0 ? outputs[0] : Array.Empty<float>()),
                    Milliseconds = one.Elapsed.TotalMilliseconds,
                    KernelPath = own is null ? "" : NativeKernels.Describe(kernels.EffectivePath),
                    Threads = own is null ? threads : kernels.MaxThreads,
                    Target = target?.Name ?? "",
                };
            }
        }
        finally
        {
            ort?.Dispose();
            own?.Dispose();
        }
    }

    static int ArgMax(float[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return v.Length == 0 ? -1 : best;
    }
}
