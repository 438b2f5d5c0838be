using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace PtqTools.Core.Engine;

/// <summary>
/// The engine's execution plan in units: a unit is either one node the engine runs (its own kernels, or an If in
/// ONNX Runtime) or a region of nodes ONNX Runtime runs as one session. A region is a connected set of nodes outside
/// the engine's table (<see cref="OrtNodeFallback.Handles"/>), joined by the engine's own shape and float ops that sit
/// between them (<see cref="Joinable"/>: Mul, Cast, Reshape, Flatten, Identity, whose results ONNX Runtime computes bit
/// for bit as the engine does); merged only where the units stay acyclic (no path leaves a region and comes back
/// into it through a node outside it). Quantized ops are never in a region: their integer arithmetic is the engine's.
/// Units are ordered topologically, each at the earliest place its inputs allow (the nodes' order otherwise).
/// </summary>
internal sealed class OrtRegionPlan
{
    /// <summary>One step of a run: <see cref="Node"/> alone, or <see cref="Region"/>. A node with
    /// <see cref="SameAs"/> is not run: an earlier node of the same op, inputs and attributes made its outputs, which
    /// it takes under its own names (as ONNX Runtime's common subexpression elimination does; the engine's ops are
    /// functions of their inputs and attributes).</summary>
    public sealed record Unit(NodeProto? Node, OrtRegion? Region, IReadOnlyList<string> ReleasedAfter, string[]? SameAs = null);

    public IReadOnlyList<Unit> Units { get; }

    /// <summary>The regions of the plan (each at least one node outside the engine's table).</summary>
    public IReadOnlyList<OrtRegion> Regions { get; }

    /// <summary>The engine's own ops that a region takes in when they connect nodes of it: ONNX Runtime computes
    /// them exactly as the engine does (one IEEE product per element, exact int-to-float conversion, no arithmetic).</summary>
    public static readonly IReadOnlySet<string> Joinable = new HashSet<string>(StringComparer.Ordinal) { "Mul", "Cast", "Reshape", "Flatten", "Identity" };

    static bool FallbackMember(NodeProto n) =>
        OrtNodeFallback.Handles(n) && OrtNodeFallback.OuterScopeInputs(n).Count == 0 && !n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0);

    static bool Eligible(NodeProto n) =>
        (FallbackMember(n) || (Joinable.Contains(n.OpType) && n.Domain is "" or "ai.onnx")) && n.Output.All(o => o.Length > 0);

    OrtRegionPlan(IReadOnlyList<Unit> units)
    {
        Units = units;
        Regions = units.Where(u => u.Region is not null).Select(u => u.Region!).ToList();
    }

    /// <param name="nodes">The engine's nodes in topological order.</param>
    /// <param name="reads">Every value name a node reads (subgraph reads included).</param>
    /// <param name="keep">Values never dropped (graph outputs and constants).</param>
    /// <param name="constants">The model's constants: region inputs found here become initializers.</param>
    public static OrtRegionPlan Build(IReadOnlyList<NodeProto> nodes, Func<NodeProto, IEnumerable<string>> reads, IReadOnlyCollection<string> outputs,
        IReadOnlyDictionary<string, EngineTensor> constants)
    {
        int n = nodes.Count;
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++) foreach (var o in nodes[i].Output) if (o.Length > 0) producer.TryAdd(o, i);
        var nodeReads = nodes.Select(x => reads(x).Distinct(StringComparer.Ordinal).ToArray()).ToArray();
        // Repeated engine nodes (MiniLM's query, key and value projections each quantize the same input): the later
        // ones read the first one's outputs instead of computing them again.
        var sameAs = new int[n];
        var firstOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++)
        {
            sameAs[i] = -1;
            var node = nodes[i];
            if (OrtNodeFallback.Handles(node) || node.Output.Count == 0 || node.Output.Any(o => o.Length == 0) || node.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)) continue;
            var key = $"{node.Domain}\u0001{node.OpType}\u0001{string.Join("\u0001", node.Input)}\u0001{node.Output.Count}\u0001" +
                      Convert.ToBase64String(node.Attribute.Select(a => a.ToByteArray()).SelectMany(b => b).ToArray());
            if (firstOf.TryGetValue(key, out int first)) { sameAs[i] = first; nodeReads[i] = nodes[first].Output.ToArray(); }
            else firstOf[key] = i;
        }
        // Node-level edges (producer -> consumer).
        var succ = Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < n; i++)
            foreach (var r in nodeReads[i])
                if (producer.TryGetValue(r, out int p) && p != i) succ[p].Add(i);

        // Union-find over nodes; each node starts as its own unit.
        var parent = Enumerable.Range(0, n).ToArray();
        int Find(int x) { while (parent[x] != x) x = parent[x] = parent[parent[x]]; return x; }
        var members = Enumerable.Range(0, n).Select(i => new List<int> { i }).ToArray();
        var eligible = nodes.Select((x, i) => sameAs[i] < 0 && Eligible(x)).ToArray();

        // Whether a unit other than a and b lies on a path from unit a to unit b (merging them would then close a
        // cycle): a depth-first walk over the units (a visit stamp per root, no allocation per query).
        var stamp = new int[n];
        int query = 0;
        var stack = new Stack<int>();
        bool PathThroughOthers(int a, int b)
        {
            query++;
            stack.Clear();
            foreach (var m in members[a]) foreach (var s in succ[m]) { int u = Find(s); if (u != a && u != b && stamp[u] != query) { stamp[u] = query; stack.Push(u); } }
            while (stack.Count > 0)
            {
                int u = stack.Pop();
                foreach (var m in members[u])
                    foreach (var s in succ[m])
                    {
                        int v = Find(s);
                        if (v == b) return true;
                        if (v != a && stamp[v] != query) { stamp[v] = query; stack.Push(v); }
                    }
            }
            return false;
        }

        for (int i = 0; i < n; i++)
        {
            if (!eligible[i]) continue;
            foreach (var j in succ[i])
            {
                if (!eligible[j]) continue;
                int a = Find(i), b = Find(j);
                if (a == b || PathThroughOthers(a, b)) continue;
                // Keep the smaller index as the root (the unit's place in the nodes' order).
                if (b < a) (a, b) = (b, a);
                parent[b] = a;
                members[a].AddRange(members[b]);
                members[a].Sort();
                members[b] = new List<int>();
            }
        }

        // Units: a merged group holding a node outside the engine's table is a region; any other group (engine nodes,
        // joinable ops that connect nothing of ONNX Runtime's) runs node by node.
        var unitOf = new int[n];
        var groups = new List<int[]>();
        for (int i = 0; i < n; i++)
        {
            if (Find(i) != i) continue;
            var m = members[i].ToArray();
            if (m.Length > 1 && m.Any(k => FallbackMember(nodes[k]))) { foreach (var k in m) unitOf[k] = groups.Count; groups.Add(m); }
            else foreach (var k in m) { unitOf[k] = groups.Count; groups.Add(new[] { k }); }
        }

        // Topological order of the units (Kahn), the earliest first node first.
        int u = groups.Count;
        var indegree = new int[u];
        var unitSucc = Enumerable.Range(0, u).Select(_ => new HashSet<int>()).ToArray();
        for (int i = 0; i < n; i++)
            foreach (var j in succ[i])
                if (unitOf[i] != unitOf[j] && unitSucc[unitOf[i]].Add(unitOf[j])) indegree[unitOf[j]]++;
        var ready = new PriorityQueue<int, int>();
        for (int g = 0; g < u; g++) if (indegree[g] == 0) ready.Enqueue(g, groups[g][0]);
        var order = new List<int>(u);
        while (ready.TryDequeue(out int g, out _))
        {
            order.Add(g);
            foreach (var s in unitSucc[g]) if (--indegree[s] == 0) ready.Enqueue(s, groups[s][0]);
        }
        if (order.Count != u) throw new InvalidOperationException("The engine's region plan has a cycle.");

        // What each unit reads from outside itself and what it makes that others read.
        var readers = new Dictionary<string, HashSet<int>>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++) foreach (var r in nodeReads[i]) { if (!readers.TryGetValue(r, out var set)) readers[r] = set = new(); set.Add(unitOf[i]); }
        var outputSet = new HashSet<string>(outputs, StringComparer.Ordinal);
        var keep = new HashSet<string>(outputs, StringComparer.Ordinal);
        keep.UnionWith(constants.Keys);
        var units = new List<(int Group, List<string> Reads, List<string> Makes)>();
        foreach (var g in order)
        {
            var inside = groups[g];
            var made = new HashSet<string>(inside.SelectMany(k => nodes[k].Output).Where(o => o.Length > 0), StringComparer.Ordinal);
            var external = inside.SelectMany(k => nodeReads[k]).Where(r => !made.Contains(r)).Distinct(StringComparer.Ordinal).ToList();
            var makes = inside.Length == 1 ? nodes[inside[0]].Output.Where(o => o.Length > 0).ToList()
                : made.Where(o => outputSet.Contains(o) || (readers.TryGetValue(o, out var rs) && rs.Any(r => r != g))).OrderBy(o => producer[o]).ToList();
            units.Add((g, external, makes));
        }
        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int k = 0; k < units.Count; k++)
        {
            foreach (var o in units[k].Makes) last.TryAdd(o, k);
            foreach (var r in units[k].Reads) last[r] = k;
        }
        var release = Enumerable.Range(0, units.Count).Select(_ => new List<string>()).ToArray();
        foreach (var (name, k) in last) if (!keep.Contains(name)) release[k].Add(name);
        foreach (var list in release) list.Sort(StringComparer.Ordinal);

        var result = new List<Unit>(units.Count);
        for (int k = 0; k < units.Count; k++)
        {
            var (g, external, makes) = units[k];
            var inside = groups[g];
            result.Add(inside.Length == 1
                ? new Unit(nodes[inside[0]], null, release[k], sameAs[inside[0]] >= 0 ? nodes[sameAs[inside[0]]].Output.ToArray() : null)
                : new Unit(null, new OrtRegion(inside.Select(i => nodes[i]).ToArray(), external.Where(r => !constants.ContainsKey(r)).ToArray(),
                    external.Where(constants.ContainsKey).ToArray(), makes.ToArray()), release[k]));
        }
        return new OrtRegionPlan(result);
    }
}

/// <summary>A connected set of nodes ONNX Runtime runs as one model (<see cref="OrtRegionPlan"/>): the nodes as
/// written, in the engine's order; the model's constants they read as initializers; the values they read from the
/// rest of the graph as inputs, typed from the actual tensors (element type and rank); the values the rest reads as
/// outputs. One session per input signature, built on the region's first run, with graph optimizations disabled, so
/// each node computes exactly what it computes alone in <see cref="OrtNodeFallback"/>.</summary>
internal sealed class OrtRegion
{
    public OrtRegion(NodeProto[] nodes, string[] inputs, string[] constantInputs, string[] outputs)
    {
        Nodes = nodes;
        Inputs = inputs;
        ConstantInputs = constantInputs;
        Outputs = outputs;
        Name = $"{nodes[0].Name}..{nodes[^1].Name} ({nodes.Length} nodes)";
        ReadInPlace = inputs.Select(i => nodes.Where(n => n.Input.Contains(i)).All(n => ExactAnyAlignment.Contains(n.OpType) && n.Domain is "" or "ai.onnx")).ToArray();
    }

    /// <summary>Ops whose results do not depend on where their inputs lie in memory: correctly rounded element-wise
    /// arithmetic (one IEEE operation per element, in any vector width) and data movement. An input only these read
    /// is handed to ONNX Runtime in place (the engine's array, pinned); any other input is copied into a buffer ONNX
    /// Runtime allocates, since MLAS's reductions and GEMMs take other paths on other alignments and round differently
    /// (<see cref="OrtNodeFallback"/>).</summary>
    static readonly HashSet<string> ExactAnyAlignment = new(StringComparer.Ordinal)
    {
        "Cast", "Add", "Sub", "Mul", "Div", "Sqrt", "Neg", "Abs", "Relu", "Where", "Equal", "Less", "Greater", "Not",
        "Reshape", "Flatten", "Identity", "Transpose", "Unsqueeze", "Squeeze", "Shape", "Gather", "Slice", "Concat", "Expand",
    };

    /// <summary>Per input: whether it may be read in place (see <see cref="ExactAnyAlignment"/>).</summary>
    public bool[] ReadInPlace { get; }

    public IReadOnlyList<NodeProto> Nodes { get; }
    /// <summary>Values it reads from the rest of the graph (not constants).</summary>
    public string[] Inputs { get; }
    /// <summary>Model constants it reads (initializers of its model).</summary>
    public string[] ConstantInputs { get; }
    /// <summary>Values it makes that the rest of the graph reads, or that are graph outputs.</summary>
    public string[] Outputs { get; }
    public string Name { get; }

    /// <summary>The region's sessions, one per input signature (element type and rank of each input; almost always
    /// one), built by <see cref="OrtNodeFallback"/> under its lock and disposed with it.</summary>
    internal readonly List<(int[] Signature, InferenceSession Session)> Sessions = new();
}
