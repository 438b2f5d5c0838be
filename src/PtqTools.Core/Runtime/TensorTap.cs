using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Runtime;

/// <summary>What one run over the data feeds: the tensors it reads, and what it does with each run's values.</summary>
public interface ITensorConsumer
{
    /// <summary>The tensors (by <see cref="Model.GraphView.Key"/>) whose values this consumer reads.</summary>
    IReadOnlyList<string> Tensors { get; }

    /// <summary>Takes one run's values; <paramref name="values"/> is indexed by the position of the tensor in
    /// <see cref="Tensors"/>.</summary>
    void Add(Sample sample, TapValues values);
}

/// <summary>
/// One ONNX Runtime session of a model with tensors exposed as extra outputs, wherever they are defined: the one
/// place that does "expose these tensors and run" for calibration, SmoothQuant's channel maxima, GPTQ's Hessians and
/// the layer error analysis. A graph input is observed through an Identity (a graph input cannot be fetched as an
/// output), a subgraph tensor through its owner (<see cref="SubgraphTensors.Expose"/>); a model above 2 GB keeps its
/// tensors in their side files (<see cref="ExternalData.ForRuntime"/>).
/// </summary>
public sealed class TensorTap : IDisposable
{
    readonly OrtRunner _runner;

    public TensorTap(ModelProto model, string source, IReadOnlyList<string> tensors, int threads,
        GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        Tensors = tensors.ToArray();
        var augmented = model.Clone();
        var outputs = Expose(augmented, Tensors);
        var (bytes, folder) = ExternalData.ForRuntime(augmented);
        _runner = new OrtRunner(bytes, source, threads, outputs, level, folder);
    }

    /// <summary>The tensors exposed, in the order of the values of a run.</summary>
    public IReadOnlyList<string> Tensors { get; }

    /// <summary>The session (for its input shape and checks).</summary>
    public OrtRunner Runner => _runner;

    /// <summary>Adds outputs to <paramref name="model"/> (in place) for <paramref name="tensors"/>; returns the output
    /// name that carries each.</summary>
    public static string[] Expose(ModelProto model, IReadOnlyList<string> tensors)
    {
        var graphInputs = model.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var keys = tensors.ToArray();
        if (keys.Any(graphInputs.Contains))
        {
            var scope = new NameScope(model.Graph);
            var observed = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < keys.Length; i++)
            {
                if (!graphInputs.Contains(keys[i])) continue;
                if (!observed.TryGetValue(keys[i], out var copy))
                {
                    observed[keys[i]] = copy = scope.Fresh(keys[i] + "_observed");
                    var identity = new NodeProto { OpType = "Identity", Name = scope.Fresh(keys[i] + "_Observe") };
                    identity.Input.Add(keys[i]);
                    identity.Output.Add(copy);
                    model.Graph.Node.Add(identity);
                }
                keys[i] = copy;
            }
        }
        return SubgraphTensors.Expose(model, keys);
    }

    /// <summary>Runs one sample (or a combined batch); the caller reads the values in place and disposes them.</summary>
    public TapValues Run(Sample sample, CancellationToken cancel) => new(_runner.RunValues(sample, cancel));

    /// <summary>Runs one sample; the values copied out.</summary>
    public float[][] RunArrays(Sample sample, CancellationToken cancel) => _runner.Run(sample, cancel);

    public void Dispose() => _runner.Dispose();

    /// <summary>
    /// One run over <paramref name="data"/> (a sample at a time) for every consumer: the union of their tensors is
    /// exposed once and each run's values are handed to each consumer. Returns the samples run.
    /// </summary>
    public static int Collect(ModelProto model, string source, PtqDataSet data, int threads, IReadOnlyList<ITensorConsumer> consumers,
        IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        var union = consumers.SelectMany(c => c.Tensors).Distinct(StringComparer.Ordinal).OrderBy(t => t, StringComparer.Ordinal).ToArray();
        var index = union.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i, StringComparer.Ordinal);
        var maps = consumers.Select(c => c.Tensors.Select(t => index[t]).ToArray()).ToArray();
        using var tap = new TensorTap(model, source, union, threads);
        using var reader = new SampleReader(data);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        foreach (var sample in reader.Read(cancel))
        {
            using (var values = tap.Run(sample, cancel))
                for (int c = 0; c < consumers.Count; c++) consumers[c].Add(sample, values.Select(maps[c]));
            done += Math.Max(1, sample.BatchCount);
            progress?.Report(new RunProgress(done, data.Count, done / Math.Max(1e-9, clock.Elapsed.TotalSeconds), sample.Id));
        }
        return done;
    }
}

/// <summary>The values of one run of a <see cref="TensorTap"/>, read in place; disposing releases them.</summary>
public sealed class TapValues : IDisposable
{
    readonly IDisposableReadOnlyCollection<OrtValue>? _owner;
    readonly IReadOnlyList<OrtValue> _values;
    readonly int[]? _map;

    internal TapValues(IDisposableReadOnlyCollection<OrtValue> values) => (_owner, _values) = (values, values);

    TapValues(IReadOnlyList<OrtValue> values, int[] map) => (_values, _map) = (values, map);

    public int Count => _map?.Length ?? _values.Count;

    public OrtValue this[int t] => _values[_map is null ? t : _map[t]];

    /// <summary>The float values of tensor <paramref name="t"/>.</summary>
    public ReadOnlySpan<float> Span(int t) => this[t].GetTensorDataAsSpan<float>();

    /// <summary>A view of some of the values, in the order <paramref name="map"/> gives.</summary>
    public TapValues Select(int[] map) => new(_values, _map is null ? map : map.Select(i => _map[i]).ToArray());

    public void Dispose() => _owner?.Dispose();
}
