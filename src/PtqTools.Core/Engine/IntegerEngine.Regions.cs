using Onnx;

namespace PtqTools.Core.Engine;

public sealed partial class IntegerEngine
{
    OrtRegionPlan? _plan;

    /// <summary>The plan <see cref="Run"/> follows when the model has nodes for ONNX Runtime: each maximal
    /// connected region of them (with the engine's shape and float ops between them) one session call
    /// (<see cref="OrtRegionPlan"/>), built once on first use.</summary>
    internal OrtRegionPlan RegionPlan =>
        _plan ?? Interlocked.CompareExchange(ref _plan, OrtRegionPlan.Build(Nodes, Reads, Outputs.ToArray(), _constants), null) ?? _plan!;

    /// <summary>How many regions of nodes <see cref="Run"/> hands to ONNX Runtime as one session each, and how many
    /// nodes they hold (the rest runs node by node: the engine's kernels, or an If in ONNX Runtime).</summary>
    public (int Regions, int Nodes) OnnxRuntimeRegions => (RegionPlan.Regions.Count, RegionPlan.Regions.Sum(r => r.Nodes.Count));

    /// <summary><see cref="Execute"/> by units (<see cref="OrtRegionPlan"/>): a region's inner values stay in ONNX
    /// Runtime; only what the rest of the graph reads comes back. Each value is dropped after the last unit reading it.</summary>
    Dictionary<string, EngineTensor> ExecuteUnits(IReadOnlyDictionary<string, EngineTensor> inputs, CancellationToken cancel)
    {
        var values = new Dictionary<string, EngineTensor>(_constants, StringComparer.Ordinal);
        foreach (var name in Inputs)
        {
            if (!inputs.TryGetValue(name, out var t))
                throw new PtqException("EngineInputMissing", PtqErrorKind.InvalidArgument, $"The model input '{name}' was not given.", name);
            values[name] = t;
        }
        var state = (EngineState)_cache;
        Func<string, EngineTensor?> lookup = values.GetValueOrDefault;
        foreach (var unit in RegionPlan.Units)
        {
            cancel.ThrowIfCancellationRequested();
            long started = Profile is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
            string opType;
            if (unit.Region is { } region)
            {
                opType = "(ONNX Runtime region)";
                var results = _fallback.Run(region, lookup, state.Buffers);
                // The region's large constants live in its session now (an engine loaded from its file drops its own).
                if (_fallbackReleases.Count > 0)
                    foreach (var n in region.Nodes)
                        if (_fallbackReleases.TryGetValue(n, out var held)) ReleaseAfterFallback(held);
                for (int i = 0; i < results.Length; i++) values[region.Outputs[i]] = results[i];
            }
            else if (unit.SameAs is { } same)
            {
                var node = unit.Node!;
                opType = "(same as an earlier node)";
                for (int i = 0; i < same.Length; i++) values[node.Output[i]] = values[same[i]];
            }
            else
            {
                var node = unit.Node!;
                opType = node.OpType;
                var args = new EngineTensor?[node.Input.Count];
                for (int i = 0; i < args.Length; i++)
                {
                    var name = node.Input[i];
                    args[i] = name.Length == 0 ? null : values.TryGetValue(name, out var v) ? v
                        : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) needs '{name}', which nothing produced.", name);
                }
                EngineTensor[] results;
                try { results = OrtNodeFallback.Handles(node) ? _fallback.Run(node, args, lookup, state.Buffers) : EngineOps.Run(node, args, _cache); }
                catch (ArgumentException ex)
                {
                    throw new PtqException("EngineNodeFailed", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) failed: {ex.Message}", node.Name, ex);
                }
                for (int i = 0; i < results.Length && i < node.Output.Count; i++)
                    if (node.Output[i].Length > 0) values[node.Output[i]] = results[i];
            }
            if (Profile is { } profile)
            {
                double ms = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                profile.TryGetValue(opType, out var seen);
                profile[opType] = (seen.Count + 1, seen.Milliseconds + ms);
            }
            foreach (var name in unit.ReleasedAfter)
                if (values.Remove(name, out var dropped)) Recycle(dropped, values, inputs);
        }
        return values;
    }
}
