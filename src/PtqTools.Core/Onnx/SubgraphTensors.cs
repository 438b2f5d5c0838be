using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Makes tensors visible as outputs of the main graph, wherever they are defined. ONNX Runtime can only fetch
/// main-graph values, so a tensor inside a subgraph is passed out through the op that owns the subgraph:
/// <list type="bullet">
/// <item>If: the branch gets one more output and the other branch an empty float tensor in the same position, so
/// a sample that takes the other branch yields no values;</item>
/// <item>Loop and Scan: the body gets one more scan output, which stacks the tensor of every iteration.</item>
/// </list>
/// Nested subgraphs are lifted one level at a time. Tensors are named by <see cref="GraphView.Key"/>.
/// </summary>
public static class SubgraphTensors
{
    readonly record struct Location(GraphProto Graph, string Local, List<(GraphProto Parent, NodeProto Owner, string Attribute)> Path);

    /// <summary>Adds outputs to <paramref name="model"/> (in place) for the tensors named by <paramref name="keys"/>;
    /// returns the main-graph output name that carries each.</summary>
    public static string[] Expose(ModelProto model, IReadOnlyList<string> keys)
    {
        var locations = new Dictionary<string, Location>(StringComparer.Ordinal);
        Index(model.Graph, "", new List<(GraphProto, NodeProto, string)>(), locations);
        var names = new NameScope(model.Graph);
        var outputs = model.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var result = new string[keys.Count];
        for (int k = 0; k < keys.Count; k++)
        {
            // A key that names no subgraph tensor is a main-graph tensor (or unknown, which ONNX Runtime reports).
            var (graph, name, path) = locations.TryGetValue(keys[k], out var loc) ? loc : new Location(model.Graph, keys[k], new());
            for (int level = path.Count - 1; level >= 0; level--)
            {
                var (parent, owner, attribute) = path[level];
                name = Lift(graph, name, owner, attribute, names);
                graph = parent;
            }
            if (outputs.Add(name)) model.Graph.Output.Add(FloatValue(name));
            result[k] = name;
        }
        return result;
    }

    static void Index(GraphProto graph, string scope, List<(GraphProto, NodeProto, string)> path, Dictionary<string, Location> locations)
    {
        if (scope.Length > 0)
            foreach (var name in graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(t => t.Name)).Concat(graph.Node.SelectMany(n => n.Output)))
                if (name.Length > 0) locations[scope + name] = new Location(graph, name, path);
        foreach (var node in graph.Node)
            foreach (var attr in node.Attribute)
                if (attr.G is not null)
                    Index(attr.G, $"{scope}{node.Name}/{attr.Name}/", new List<(GraphProto, NodeProto, string)>(path) { (graph, node, attr.Name) }, locations);
    }

    /// <summary>Passes <paramref name="local"/> of <paramref name="body"/> out through <paramref name="owner"/>;
    /// returns the name of the new output of the owner.</summary>
    static string Lift(GraphProto body, string local, NodeProto owner, string attribute, NameScope names)
    {
        if (owner.Domain is not ("" or "ai.onnx") || owner.OpType is not ("If" or "Loop" or "Scan"))
            throw new PtqException("SubgraphNotObservable", PtqErrorKind.NotSupported,
                $"Tensor '{local}' lives in the '{attribute}' subgraph of {owner.OpType} '{owner.Name}', whose values cannot be observed.", owner.Name);
        // Loop bodies output the condition first; the owner has one output fewer.
        int skip = owner.OpType == "Loop" ? 1 : 0;
        var copy = names.Fresh(local + "_observed");
        var identity = new NodeProto { OpType = "Identity", Name = names.Fresh(local + "_Observe") };
        identity.Input.Add(local);
        identity.Output.Add(copy);
        body.Node.Add(identity);
        if (owner.OpType == "If")
        {
            var other = owner.Attr(attribute == "then_branch" ? "else_branch" : "then_branch")!.G;
            Pad(owner, Math.Max(body.Output.Count, other.Output.Count), names);
            var empty = names.Fresh(local + "_not_taken");
            var constant = new NodeProto { OpType = "Constant", Name = names.Fresh(local + "_NotTaken") };
            constant.Output.Add(empty);
            var tensor = new TensorProto { Name = "", DataType = (int)OnnxDataType.Float };
            tensor.Dims.Add(0);
            constant.Attribute.Add(GraphEditor.Tensor("value", tensor));
            other.Node.Add(constant);
            other.Output.Add(FloatValue(empty));
        }
        else
        {
            Pad(owner, body.Output.Count - skip, names);
            if (owner.OpType == "Scan")
                foreach (var a in owner.Attribute.Where(a => a.Name is "scan_output_axes" or "scan_output_directions" && a.Ints.Count > 0)) a.Ints.Add(0);
        }
        body.Output.Add(FloatValue(copy));
        var lifted = names.Fresh(local + "_" + owner.Name);
        owner.Output.Add(lifted);
        return lifted;
    }

    /// <summary>Optional trailing outputs may be left off a node; the new output must land at the body's position.</summary>
    static void Pad(NodeProto owner, int count, NameScope names)
    {
        while (owner.Output.Count < count) owner.Output.Add(names.Fresh(owner.Name + "_unused"));
    }

    static ValueInfoProto FloatValue(string name) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } };
}
