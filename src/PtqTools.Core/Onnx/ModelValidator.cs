using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Structural checks made before ONNX Runtime or the quantizer sees a model, so that a broken or hostile file ends
/// in an error naming the problem rather than in a crash deep inside native code.
/// </summary>
public static class ModelValidator
{
    public const int MaxIrVersion = 11;

    /// <summary>The largest tensor a node with constant shape inputs may ask for (ConstantOfShape, Expand, Tile):
    /// ONNX Runtime folds such nodes while the model is prepared, so a model claiming terabytes would otherwise
    /// allocate them (or be killed for it) before any data is seen. The same 2 GB bound as one stored tensor.</summary>
    public const long MaxConstantOutputBytes = int.MaxValue;

    /// <summary>The largest dimension a value may declare: one tensor holds at most 2 GB, so no dimension of a real
    /// tensor passes 2^31 - 1.</summary>
    public const long MaxDeclaredDimension = int.MaxValue;

    /// <summary>The longest declared shape-like input (the shape of Reshape, Expand, ConstantOfShape, the sizes of Resize, ...): ONNX
    /// shape inference makes an output of that rank, and a declared length of 2^63 exhausted memory inside ONNX
    /// Runtime's session creation (found by the fuzz harness). Real ranks are single digits.</summary>
    public const long MaxDeclaredRank = 4096;

    public static void Validate(ModelProto model, string source)
    {
        if (model.IrVersion > MaxIrVersion)
            throw Invalid("UnsupportedIrVersion", $"'{source}' has IR version {model.IrVersion}; versions up to {MaxIrVersion} are supported.", source);
        ValidateGraph(model.Graph, new HashSet<string>(StringComparer.Ordinal), source, "");
    }

    static void ValidateGraph(GraphProto graph, HashSet<string> outer, string source, string scope)
    {
        var known = new HashSet<string>(outer, StringComparer.Ordinal);
        foreach (var init in graph.Initializer)
        {
            CheckTensor(init, source, init.Name);
            known.Add(init.Name);
        }
        foreach (var sparse in graph.SparseInitializer)
            if (sparse.Values is not null) known.Add(sparse.Values.Name);
        foreach (var input in graph.Input)
        {
            CheckValueInfo(input, source);
            known.Add(input.Name);
        }
        foreach (var vi in graph.ValueInfo) CheckValueInfo(vi, source);

        // Every tensor has one producer.
        var producedBy = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Node.Count; i++)
        {
            foreach (var output in graph.Node[i].Output)
            {
                if (output.Length == 0) continue;
                if (!producedBy.TryAdd(output, i) || graph.Initializer.Any(t => t.Name == output))
                    throw Invalid("DuplicateTensorName", $"Tensor '{scope}{output}' in '{source}' is produced more than once.", output);
            }
        }

        // Inputs resolve, and the graph has no cycle (Kahn's algorithm over node dependencies).
        var indegree = new int[graph.Node.Count];
        var dependents = new List<int>[graph.Node.Count];
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            foreach (var input in node.Input)
            {
                if (input.Length == 0) continue;
                if (producedBy.TryGetValue(input, out var p))
                {
                    indegree[i]++;
                    (dependents[p] ??= new List<int>()).Add(i);
                }
                else if (!known.Contains(input))
                {
                    throw Invalid("DanglingNodeInput",
                        $"Node '{scope}{NodeLabel(node, i)}' in '{source}' reads tensor '{input}', which no node, input or initializer provides.", input);
                }
            }
        }
        var queue = new Queue<int>(Enumerable.Range(0, graph.Node.Count).Where(i => indegree[i] == 0));
        int visited = 0;
        while (queue.Count > 0)
        {
            var n = queue.Dequeue();
            visited++;
            if (dependents[n] is null) continue;
            foreach (var d in dependents[n])
                if (--indegree[d] == 0) queue.Enqueue(d);
        }
        if (visited != graph.Node.Count)
        {
            var stuck = Enumerable.Range(0, graph.Node.Count).First(i => indegree[i] > 0);
            throw Invalid("GraphCycle", $"The graph of '{source}' has a cycle through node '{scope}{NodeLabel(graph.Node[stuck], stuck)}'.", NodeLabel(graph.Node[stuck], stuck));
        }

        CheckConstantShapes(graph, source, scope);

        var outputNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var output in graph.Output)
        {
            CheckValueInfo(output, source);
            if (!outputNames.Add(output.Name))
                throw Invalid("DuplicateTensorName", $"Graph output '{scope}{output.Name}' of '{source}' is listed more than once.", output.Name);
            if (!producedBy.ContainsKey(output.Name) && !known.Contains(output.Name))
                throw Invalid("DanglingGraphOutput", $"Graph output '{scope}{output.Name}' of '{source}' is produced by nothing.", output.Name);
        }

        // Subgraphs (If/Loop/Scan bodies) see every name of this scope.
        var inner = new HashSet<string>(known, StringComparer.Ordinal);
        inner.UnionWith(producedBy.Keys);
        for (int i = 0; i < graph.Node.Count; i++)
            foreach (var attr in graph.Node[i].Attribute)
            {
                CheckAttribute(graph.Node[i], attr, source, $"{scope}{NodeLabel(graph.Node[i], i)}");
                // Tensors held by attributes (Constant's value and the like) are checked like initializers.
                if (attr.T is not null) CheckTensor(attr.T, source, $"{scope}{NodeLabel(graph.Node[i], i)}.{attr.Name}");
                foreach (var t in attr.Tensors) CheckTensor(t, source, $"{scope}{NodeLabel(graph.Node[i], i)}.{attr.Name}");
                if (attr.G is not null) ValidateGraph(attr.G, inner, source, $"{scope}{NodeLabel(graph.Node[i], i)}/{attr.Name}/");
                foreach (var g in attr.Graphs) ValidateGraph(g, inner, source, $"{scope}{NodeLabel(graph.Node[i], i)}/{attr.Name}/");
            }
    }

    /// <summary>Integer attributes ONNX Runtime's kernels trust. A GatherND with a negative batch_dims aborts the
    /// process inside ONNX Runtime 1.31.1 when it runs (std::terminate; found by the fuzz harness), and no operator
    /// takes a scalar integer attribute beyond 32 bits except Constant's value_int.</summary>
    static void CheckAttribute(NodeProto node, AttributeProto attr, string source, string label)
    {
        if (attr.Type != AttributeProto.Types.AttributeType.Int) return;
        if (node.OpType == "Constant" && node.Domain.Length == 0) return;
        if (attr.I < int.MinValue || attr.I > int.MaxValue)
            throw Invalid("InvalidAttribute", $"Attribute '{attr.Name}' of node '{label}' ({node.OpType}) in '{source}' is {attr.I}, beyond the 32-bit range of an operator attribute.", label);
        if (attr.Name == "batch_dims" && node.OpType is "GatherND" && node.Domain.Length == 0 && attr.I < 0)
            throw Invalid("InvalidAttribute", $"Attribute 'batch_dims' of node '{label}' (GatherND) in '{source}' is {attr.I}; it must not be negative.", label);
    }

    static void CheckTensor(TensorProto t, string source, string label)
    {
        foreach (var d in t.Dims)
            if (d < 0) throw Invalid("InvalidDimension", $"Tensor '{label}' in '{source}' has a negative dimension ({d}).", label);
        long expected;
        try { expected = TensorData.ElementCount(t.Dims); }
        catch (OverflowException)
        {
            throw Invalid("InvalidDimension", $"Tensor '{label}' in '{source}' has dimensions whose product overflows.", label);
        }
        if (t.DataLocation == TensorProto.Types.DataLocation.External) return;
        var stored = TensorData.StoredElementCount(t);
        if (stored == -2 || stored >= 0 && stored != expected && !(stored == 0 && expected == 0))
            throw Invalid("TensorDataSizeMismatch",
                $"Tensor '{label}' in '{source}' has shape [{string.Join(",", t.Dims)}] ({expected} elements) but holds {(stored < 0 ? "a partial element" : stored + " elements")}.", label);
    }

    /// <summary>Refuses ConstantOfShape, Expand and Tile nodes whose constant shape (or repeats) asks for more than
    /// <see cref="MaxConstantOutputBytes"/>, before anything is allocated.</summary>
    static void CheckConstantShapes(GraphProto graph, string source, string scope)
    {
        Dictionary<string, TensorProto>? constants = null;
        Dictionary<string, ValueInfoProto>? declared = null;
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            if (node.Domain.Length > 0 && node.Domain != "ai.onnx") continue;
            // Inputs whose length is a rank (a shape, sizes, scales, axes, pads, repeats): shape inference makes
            // outputs of that many dimensions from the declared length alone.
            int[] rankInputs = node.OpType switch
            {
                "ConstantOfShape" => new[] { 0 }, "Expand" or "Tile" or "Reshape" or "Upsample" or "Squeeze" or "Unsqueeze" or "Pad" => new[] { 1 },
                "Resize" => new[] { 2, 3 }, "Slice" => new[] { 1, 2, 3, 4 }, _ => Array.Empty<int>(),
            };
            foreach (var k in rankInputs)
            {
                if (k >= node.Input.Count || node.Input[k].Length == 0) continue;
                declared ??= graph.Input.Concat(graph.ValueInfo).Concat(graph.Output).GroupBy(v => v.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
                if (declared.TryGetValue(node.Input[k], out var vi) && vi.Type?.TensorType?.Shape?.Dim is { Count: 1 } sd
                    && sd[0].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && sd[0].DimValue > MaxDeclaredRank)
                    throw Invalid("InvalidDimension",
                        $"Tensor '{vi.Name}' in '{source}', input {k} of node '{scope}{NodeLabel(node, i)}' ({node.OpType}), declares {sd[0].DimValue:N0} values, one per dimension; at most {MaxDeclaredRank} dimensions are supported.", vi.Name);
            }
            int shapeInput = node.OpType switch { "ConstantOfShape" => 0, "Expand" or "Tile" => 1, _ => -1 };
            if (shapeInput < 0 || node.Input.Count <= shapeInput) continue;
            constants ??= Constants(graph);
            if (!constants.TryGetValue(node.Input[shapeInput], out var shape) || shape.DataType != (int)OnnxDataType.Int64) continue;
            long[] values;
            try { values = Int64Values(shape); }
            catch (PtqException) { continue; } // a size mismatch is reported by CheckTensor
            long elements = 1;
            try
            {
                if (node.OpType == "Tile")
                {
                    // The output is the input's shape times the repeats; the input's shape is known when it is constant.
                    if (!constants.TryGetValue(node.Input[0], out var input) || input.Dims.Count != values.Length) continue;
                    for (int d = 0; d < values.Length; d++) elements = checked(elements * Math.Max(0, input.Dims[d]) * Math.Max(0, values[d]));
                }
                else foreach (var v in values) elements = checked(elements * Math.Max(0, v));
                if (checked(elements * 8) <= MaxConstantOutputBytes) continue;
            }
            catch (OverflowException) { }
            var label = $"{scope}{NodeLabel(node, i)}";
            throw new PtqException("TensorTooLarge", PtqErrorKind.NotSupported,
                $"Node '{label}' ({node.OpType}) in '{source}' asks for a tensor of shape [{string.Join(",", values)}]{(node.OpType == "Tile" ? " (repeats)" : "")}, above the {MaxConstantOutputBytes:N0}-byte limit of one tensor.", label);
        }
    }

    static Dictionary<string, TensorProto> Constants(GraphProto graph)
    {
        var d = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer) d.TryAdd(t.Name, t);
        foreach (var n in graph.Node)
            if (n.OpType == "Constant" && n.Output.Count == 1 && n.TensorAttr("value") is { } t)
                d.TryAdd(n.Output[0], t);
        return d;
    }

    static long[] Int64Values(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External) throw Invalid("ExternalDataInvalid", "external", t.Name);
        if (!t.RawData.IsEmpty)
        {
            if (t.RawData.Length % 8 != 0 || t.RawData.Length > 8 * 64) throw Invalid("TensorDataSizeMismatch", "size", t.Name);
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray();
        }
        if (t.Int64Data.Count > 64) throw Invalid("TensorDataSizeMismatch", "size", t.Name);
        return t.Int64Data.ToArray();
    }

    static void CheckValueInfo(ValueInfoProto vi, string source)
    {
        var shape = vi.Type?.TensorType?.Shape;
        if (shape is null) return;
        foreach (var dim in shape.Dim)
        {
            if (dim.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && dim.DimValue < 0)
                throw Invalid("InvalidDimension", $"Tensor '{vi.Name}' in '{source}' declares a negative dimension ({dim.DimValue}).", vi.Name);
            if (dim.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && dim.DimValue > MaxDeclaredDimension)
                throw Invalid("InvalidDimension", $"Tensor '{vi.Name}' in '{source}' declares the dimension {dim.DimValue:N0}, above the {MaxDeclaredDimension:N0} a tensor can have.", vi.Name);
        }
    }

    internal static string NodeLabel(NodeProto node, int index) => node.Name.Length > 0 ? node.Name : $"{node.OpType}#{index}";

    static PtqException Invalid(string id, string message, object target) => new(id, PtqErrorKind.InvalidData, message, target);
}
