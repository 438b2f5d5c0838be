using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Engine;

/// <summary>What one node of a run held: the intermediate values alive while it ran (its inputs and outputs and
/// whatever later nodes still need), those left after the values it read for the last time were dropped, and the
/// kernels' scratch of the running thread. Bytes count each array once (a Reshape shares its input's array).</summary>
public sealed record EngineMemoryStep(string Node, string OpType, long NodeBytes, long HeldBytes, IReadOnlyList<string> LiveAfter, long LiveAfterBytes, long ScratchBytes);

/// <summary>
/// The engine's account of its working memory over one <see cref="IntegerEngine.Run"/> (set
/// <see cref="IntegerEngine.MemoryTrace"/>): per node, the values held (model constants excluded: they are the
/// weights) and the kernels' shared scratch. Deterministic: sizes of tensors and buffers, not the process's
/// resident memory. One run at a time per trace.
/// </summary>
public sealed class EngineMemoryTrace
{
    readonly List<EngineMemoryStep> _steps = new();
    long _held;

    public IReadOnlyList<EngineMemoryStep> Steps => _steps;

    /// <summary>The largest sum, over the nodes, of the intermediate values alive while a node ran.</summary>
    public long PeakHeldBytes => _steps.Count == 0 ? 0 : _steps.Max(s => s.HeldBytes);

    /// <summary>The largest one node's own buffers (its non-constant inputs and its outputs).</summary>
    public long LargestNodeBytes => _steps.Count == 0 ? 0 : _steps.Max(s => s.NodeBytes);

    /// <summary>The kernels' scratch at the end of the run (<see cref="Workspace.Bytes"/>: one buffer per slot, each
    /// as large as the largest layer asked for).</summary>
    public long ScratchBytes => _steps.Count == 0 ? 0 : _steps.Max(s => s.ScratchBytes);

    /// <summary>The planned peak working set: the values held at the busiest node plus the shared scratch.</summary>
    public long PeakWorkingSetBytes => PeakHeldBytes + ScratchBytes;

    internal void Begin(IntegerEngine engine) { _steps.Clear(); _held = 0; _constantArrays = null; }

    internal void Step(NodeProto node, EngineTensor?[] args, EngineTensor[] results, Dictionary<string, EngineTensor> values, IReadOnlyDictionary<string, EngineTensor> constants)
    {
        var constantArrays = ConstantArrays(constants);
        _pendingNode = (node.Name, node.OpType, Bytes(args.Concat(results).Where(t => t is not null).Select(t => t!), constantArrays));
        _held = Bytes(values.Where(kv => !constants.ContainsKey(kv.Key)).Select(kv => kv.Value), constantArrays);
    }

    // Names, not the NodeProto: a value-tuple field of an ONNX type would load OnnxSharp with this public type, which
    // the module's import registers (Module.Tests: nothing of ONNX loads before a cmdlet needs it).
    (string Name, string OpType, long Bytes) _pendingNode;
    HashSet<Array>? _constantArrays;
    IReadOnlyDictionary<string, EngineTensor>? _constantsSeen;

    HashSet<Array> ConstantArrays(IReadOnlyDictionary<string, EngineTensor> constants)
    {
        if (_constantArrays is null || !ReferenceEquals(_constantsSeen, constants))
        {
            _constantArrays = new HashSet<Array>(constants.Values.Select(c => c.HeldData).OfType<Array>(), ReferenceEqualityComparer.Instance);
            _constantsSeen = constants;
        }
        return _constantArrays;
    }

    internal void Released(Dictionary<string, EngineTensor> values, IReadOnlyDictionary<string, EngineTensor> constants)
    {
        var constantArrays = ConstantArrays(constants);
        var live = values.Where(kv => !constants.ContainsKey(kv.Key)).ToList();
        var (name, opType, nodeBytes) = _pendingNode;
        _steps.Add(new EngineMemoryStep(name, opType, nodeBytes, _held, live.Select(kv => kv.Key).OrderBy(n => n, StringComparer.Ordinal).ToArray(),
            Bytes(live.Select(kv => kv.Value), constantArrays), Workspace.Bytes));
    }

    static long Bytes(IEnumerable<EngineTensor> tensors, HashSet<Array> exclude)
    {
        var seen = new HashSet<Array>(ReferenceEqualityComparer.Instance);
        long bytes = 0;
        foreach (var t in tensors)
            // A weight released after packing (IntegerEngine.Load) is not held: nothing to count, nothing to read back.
            if (t.HeldData is { } data && !exclude.Contains(data) && seen.Add(data)) bytes += (long)data.Length * OnnxDataTypes.ElementSize(t.Type);
        return bytes;
    }
}
