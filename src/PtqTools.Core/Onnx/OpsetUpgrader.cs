using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Raises a model's default-domain opset to the one the quantizer writes (13: per-channel QuantizeLinear and
/// DequantizeLinear), only by changes that keep every present op's meaning. An op whose meaning cannot be kept
/// blocks the upgrade, and the error names it.
/// </summary>
public static class OpsetUpgrader
{
    public const int TargetOpset = 13;

    /// <summary>Opset version from which each op means at opset 13 what it meant then (type additions aside).</summary>
    static readonly Dictionary<string, int> SameSince = new(StringComparer.Ordinal)
    {
        ["Abs"] = 6, ["Acos"] = 7, ["Acosh"] = 9, ["Add"] = 7, ["And"] = 7, ["ArgMax"] = 1, ["ArgMin"] = 1,
        ["Asin"] = 7, ["Asinh"] = 9, ["Atan"] = 7, ["Atanh"] = 9, ["AveragePool"] = 7, ["BitShift"] = 11,
        ["Cast"] = 6, ["Ceil"] = 6, ["Celu"] = 12, ["Compress"] = 9, ["Concat"] = 4, ["ConcatFromSequence"] = 11,
        ["Constant"] = 1, ["ConstantOfShape"] = 9, ["Conv"] = 1, ["ConvInteger"] = 10, ["ConvTranspose"] = 1,
        ["Cos"] = 7, ["Cosh"] = 9, ["CumSum"] = 11, ["DepthToSpace"] = 1, ["DequantizeLinear"] = 10, ["Det"] = 11,
        ["Div"] = 7, ["DynamicQuantizeLinear"] = 11, ["Einsum"] = 12, ["Elu"] = 6, ["Equal"] = 7, ["Erf"] = 9,
        ["Exp"] = 6, ["Expand"] = 8, ["EyeLike"] = 9, ["Flatten"] = 1, ["Floor"] = 6, ["GRU"] = 7, ["Gather"] = 1,
        ["GatherElements"] = 11, ["GatherND"] = 11, ["Gemm"] = 7, ["GlobalAveragePool"] = 1, ["GlobalLpPool"] = 2,
        ["GlobalMaxPool"] = 1, ["Greater"] = 7, ["GreaterOrEqual"] = 12, ["HardSigmoid"] = 6, ["Identity"] = 1,
        ["If"] = 1, ["InstanceNormalization"] = 6, ["IsInf"] = 10, ["IsNaN"] = 9, ["LRN"] = 1, ["LSTM"] = 7,
        ["LeakyRelu"] = 6, ["Less"] = 7, ["LessOrEqual"] = 12, ["Log"] = 6, ["Loop"] = 1, ["LpNormalization"] = 1,
        ["LpPool"] = 2, ["MatMul"] = 1, ["MatMulInteger"] = 10, ["Max"] = 6, ["MaxPool"] = 1, ["MaxRoiPool"] = 1,
        ["MaxUnpool"] = 9, ["Mean"] = 6, ["MeanVarianceNormalization"] = 9, ["Min"] = 6, ["Mod"] = 10, ["Mul"] = 7,
        ["Neg"] = 6, ["NonMaxSuppression"] = 10, ["NonZero"] = 9, ["Not"] = 1, ["OneHot"] = 9, ["Or"] = 7,
        ["PRelu"] = 7, ["Pow"] = 7, ["QLinearConv"] = 10, ["QLinearMatMul"] = 10, ["QuantizeLinear"] = 10,
        ["RNN"] = 7, ["Range"] = 11, ["Reciprocal"] = 6, ["ReduceL1"] = 1, ["ReduceL2"] = 1, ["ReduceLogSum"] = 1,
        ["ReduceLogSumExp"] = 1, ["ReduceMax"] = 1, ["ReduceMean"] = 1, ["ReduceMin"] = 1, ["ReduceProd"] = 1,
        ["ReduceSumSquare"] = 1, ["Relu"] = 6, ["Reshape"] = 5, ["Resize"] = 11, ["ReverseSequence"] = 10,
        ["RoiAlign"] = 10, ["Round"] = 11, ["Scan"] = 9, ["ScatterElements"] = 11, ["ScatterND"] = 11, ["Selu"] = 6,
        ["SequenceAt"] = 11, ["SequenceConstruct"] = 11, ["SequenceEmpty"] = 11, ["SequenceErase"] = 11,
        ["SequenceInsert"] = 11, ["SequenceLength"] = 11, ["Shape"] = 1, ["Shrink"] = 9, ["Sigmoid"] = 6,
        ["Sign"] = 9, ["Sin"] = 7, ["Sinh"] = 9, ["Size"] = 1, ["Slice"] = 10, ["SplitToSequence"] = 11, ["Softplus"] = 1, ["Softsign"] = 1,
        ["SpaceToDepth"] = 1, ["Sqrt"] = 6, ["StringNormalizer"] = 10, ["Sub"] = 7, ["Sum"] = 6, ["Tan"] = 7,
        ["Tanh"] = 6, ["TfIdfVectorizer"] = 9, ["ThresholdedRelu"] = 10, ["Tile"] = 6, ["TopK"] = 10,
        ["Transpose"] = 1, ["Unique"] = 11, ["Where"] = 9, ["Xor"] = 7,
    };

    /// <summary>Ops whose inputs or attributes moved on the way to opset 13; each has a rewrite that keeps its meaning.</summary>
    static readonly HashSet<string> Rewritten = new(StringComparer.Ordinal)
    {
        "BatchNormalization", "Clip", "Dropout", "Pad", "ReduceSum", "Split", "Squeeze", "Unsqueeze",
        "Softmax", "LogSoftmax", "Hardmax", "Scatter", "Slice",
    };

    public static int DefaultOpset(ModelProto model) =>
        (int)(model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 0);

    /// <summary>The ops (with the reason) that keep this model from opset 13; empty when it can be raised.</summary>
    public static IReadOnlyList<string> Blockers(ModelProto model)
    {
        int from = DefaultOpset(model);
        var blockers = new SortedSet<string>(StringComparer.Ordinal);
        if (from >= TargetOpset) return Array.Empty<string>();
        foreach (var node in AllNodes(model.Graph))
        {
            if (node.Domain is not ("" or "ai.onnx")) continue;
            if (Rewritten.Contains(node.OpType) && !(SameSince.TryGetValue(node.OpType, out var kept) && from >= kept))
            {
                if (node.OpType is "Pad" or "Clip" && from < 2) blockers.Add($"{node.OpType} (opset {from} is older than any rewrite here)");
                continue;
            }
            if (!SameSince.TryGetValue(node.OpType, out var since))
                blockers.Add($"{node.OpType} (not known to keep its meaning at opset {TargetOpset})");
            else if (from < since)
                blockers.Add($"{node.OpType} (its meaning changed between opset {from} and opset {since})");
        }
        return blockers.ToList();
    }

    /// <summary>
    /// Raises the default opset in place only as far as <paramref name="needed"/> (10 for per-tensor QuantizeLinear
    /// and DequantizeLinear, 13 for per-channel ones), and only as the meaning of every present op allows: when each
    /// op means at <paramref name="needed"/> what it meant at the model's opset, only the version changes; when some
    /// op has to be rewritten, the rewrites here produce opset 13 forms, so the model goes to 13. Throws
    /// OpsetUpgradeBlocked naming the ops that no rewrite keeps. Returns whether the opset changed.
    /// </summary>
    public static bool RaiseFor(ModelProto model, int needed)
    {
        int from = DefaultOpset(model);
        if (from >= needed) return false;
        if (needed <= TargetOpset && OnlyVersionChanges(model, from))
        {
            SetDefaultOpset(model, needed);
            long ir = needed >= 13 ? 7 : needed == 12 ? 7 : needed == 11 ? 6 : 5;
            if (model.IrVersion < ir) model.IrVersion = ir;
            return true;
        }
        return UpgradeTo13(model);
    }

    /// <summary>What raising to <paramref name="needed"/> takes: "kept" (already there), "version" (only the version
    /// changes), "rewrite" (meaning-keeping rewrites, to 13) or "blocked".</summary>
    public static string RaiseKind(ModelProto model, int needed)
    {
        int from = DefaultOpset(model);
        if (from >= needed) return "kept";
        if (OnlyVersionChanges(model, from)) return "version";
        return Blockers(model).Count == 0 ? "rewrite" : "blocked";
    }

    /// <summary>Sets the default-domain opset, importing it when the model imports only other domains.</summary>
    static void SetDefaultOpset(ModelProto model, int version)
    {
        bool found = false;
        foreach (var o in model.OpsetImport)
            if (o.Domain is "" or "ai.onnx") (o.Version, found) = (version, true);
        if (!found) model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = version });
    }

    /// <summary>Why the model cannot be raised to <paramref name="needed"/>, naming the ops, or null when it can.</summary>
    public static string? RaiseBlocked(ModelProto model, int needed)
    {
        int from = DefaultOpset(model);
        if (from >= needed || OnlyVersionChanges(model, from)) return null;
        var blockers = Blockers(model);
        return blockers.Count == 0 ? null : BlockedMessage(from, needed, blockers);
    }

    static string BlockedMessage(int from, int needed, IReadOnlyList<string> blockers) =>
        $"The model uses opset {from}; quantization needs opset {needed}, and these ops cannot be raised without changing their meaning: {string.Join(", ", blockers)}.";

    /// <summary>Every default-domain op (in subgraphs too) means at opset 13 what it means at <paramref name="from"/>.</summary>
    static bool OnlyVersionChanges(ModelProto model, int from) =>
        AllNodes(model.Graph).All(n => n.Domain is not ("" or "ai.onnx") || SameSince.TryGetValue(n.OpType, out var since) && from >= since);

    /// <summary>Raises the default opset to 13 in place, or throws naming the ops that block it.</summary>
    public static bool UpgradeTo13(ModelProto model)
    {
        int from = DefaultOpset(model);
        if (from >= TargetOpset) return false;
        var blockers = Blockers(model);
        if (blockers.Count > 0)
            throw new PtqException("OpsetUpgradeBlocked", PtqErrorKind.NotSupported, BlockedMessage(from, TargetOpset, blockers), blockers[0]);
        var names = new NameScope(model.Graph);
        RewriteGraph(model.Graph, from, names);
        SetDefaultOpset(model, TargetOpset);
        if (model.IrVersion < 7) model.IrVersion = 7;
        return true;
    }

    static void RewriteGraph(GraphProto graph, int from, NameScope names)
    {
        var result = new List<NodeProto>(graph.Node.Count);
        foreach (var node in graph.Node)
        {
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) RewriteGraph(attr.G, from, names);
                foreach (var g in attr.Graphs) RewriteGraph(g, from, names);
            }
            if (node.Domain is not ("" or "ai.onnx")) { result.Add(node); continue; }
            switch (node.OpType)
            {
                case "Squeeze" or "Unsqueeze" or "ReduceSum":
                    MoveIntsToInput(graph, node, "axes", 1, names);
                    break;
                case "Split":
                    MoveIntsToInput(graph, node, "split", 1, names);
                    break;
                case "Clip" when from < 11:
                    {
                        var min = TakeFloat(node, "min", float.MinValue);
                        var max = TakeFloat(node, "max", float.MaxValue);
                        node.Input.Add(AddScalar(graph, names.Fresh(node.Name + "_min"), min));
                        node.Input.Add(AddScalar(graph, names.Fresh(node.Name + "_max"), max));
                        break;
                    }
                case "Pad" when from < 11:
                    {
                        var pads = Take(node, "pads")?.Ints.ToArray() ?? Array.Empty<long>();
                        var value = TakeFloat(node, "value", 0f);
                        var padsName = names.Fresh(node.Name + "_pads");
                        graph.Initializer.Add(Int64Tensor(padsName, pads));
                        node.Input.Add(padsName);
                        node.Input.Add(AddScalar(graph, names.Fresh(node.Name + "_value"), value));
                        break;
                    }
                case "Slice" when from < 10:
                    // Opset 1 held starts, ends and axes as attributes; from 10 they are inputs with the same meaning.
                    MoveIntsToInput(graph, node, "starts", 1, names);
                    MoveIntsToInput(graph, node, "ends", 2, names);
                    MoveIntsToInput(graph, node, "axes", 3, names);
                    break;
                case "Scatter":
                    // Scatter (9, deprecated at 11) is ScatterElements under its old name: same inputs, axis and meaning.
                    node.OpType = "ScatterElements";
                    break;
                case "Dropout":
                    // Inference ignores the ratio; from opset 12 it is an input with the same default meaning.
                    Take(node, "ratio");
                    Take(node, "is_test");
                    break;
                case "BatchNormalization":
                    var spatial = Take(node, "spatial");
                    if (spatial is not null && spatial.I != 1)
                        throw new PtqException("OpsetUpgradeBlocked", PtqErrorKind.NotSupported,
                            $"BatchNormalization '{node.Name}' uses spatial=0, which opset {TargetOpset} cannot express.", node.Name);
                    Take(node, "consumed_inputs");
                    break;
                case "Softmax" or "LogSoftmax" or "Hardmax":
                    // Before opset 13 these flattened the input to 2-D at 'axis' (default 1); the same result is
                    // Flatten(axis) -> op(axis=-1) -> Reshape back to the input's shape.
                    result.AddRange(CoercedTo2D(node, names));
                    continue;
            }
            result.Add(node);
        }
        graph.Node.Clear();
        graph.Node.AddRange(result);
    }

    static IEnumerable<NodeProto> CoercedTo2D(NodeProto node, NameScope names)
    {
        var axisAttr = Take(node, "axis");
        long axis = axisAttr?.I ?? 1;
        var x = node.Input[0];
        var y = node.Output[0];
        var shape = names.Fresh(node.Name + "_shape");
        var flat = names.Fresh(node.Name + "_2d");
        var inner = names.Fresh(node.Name + "_2d_out");
        var shapeNode = new NodeProto { OpType = "Shape", Name = names.Fresh(node.Name + "_Shape") };
        shapeNode.Input.Add(x); shapeNode.Output.Add(shape);
        var flatten = new NodeProto { OpType = "Flatten", Name = names.Fresh(node.Name + "_Flatten") };
        flatten.Input.Add(x); flatten.Output.Add(flat);
        flatten.Attribute.Add(GraphEditor.Int("axis", axis));
        node.Input[0] = flat;
        node.Output[0] = inner;
        node.Attribute.Add(GraphEditor.Int("axis", -1));
        var reshape = new NodeProto { OpType = "Reshape", Name = names.Fresh(node.Name + "_Reshape") };
        reshape.Input.Add(inner); reshape.Input.Add(shape); reshape.Output.Add(y);
        return new[] { shapeNode, flatten, node, reshape };
    }

    static void MoveIntsToInput(GraphProto graph, NodeProto node, string attrName, int inputIndex, NameScope names)
    {
        var attr = Take(node, attrName);
        if (attr is null) return;
        var name = names.Fresh($"{node.Name}_{attrName}");
        graph.Initializer.Add(Int64Tensor(name, attr.Ints.ToArray()));
        while (node.Input.Count < inputIndex) node.Input.Add("");
        node.Input.Insert(inputIndex, name);
    }

    static AttributeProto? Take(NodeProto node, string name)
    {
        var attr = node.Attr(name);
        if (attr is not null) node.Attribute.Remove(attr);
        return attr;
    }

    static float TakeFloat(NodeProto node, string name, float fallback) => Take(node, name)?.F ?? fallback;

    static string AddScalar(GraphProto graph, string name, float value)
    {
        graph.Initializer.Add(TensorData.FromFloats(name, new[] { value }));
        return name;
    }

    static TensorProto Int64Tensor(string name, long[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)OnnxDataType.Int64 };
        t.Dims.Add(values.Length);
        t.Int64Data.AddRange(values);
        return t;
    }

    public static IEnumerable<NodeProto> AllNodes(GraphProto graph)
    {
        foreach (var node in graph.Node)
        {
            yield return node;
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) foreach (var n in AllNodes(attr.G)) yield return n;
                foreach (var g in attr.Graphs) foreach (var n in AllNodes(g)) yield return n;
            }
        }
    }
}

/// <summary>Hands out tensor and node names not yet used anywhere in a model.</summary>
public sealed class NameScope
{
    readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public NameScope(GraphProto graph) => Collect(graph);

    void Collect(GraphProto graph)
    {
        foreach (var t in graph.Initializer) _used.Add(t.Name);
        foreach (var v in graph.Input) _used.Add(v.Name);
        foreach (var v in graph.Output) _used.Add(v.Name);
        foreach (var v in graph.ValueInfo) _used.Add(v.Name);
        foreach (var n in graph.Node)
        {
            _used.Add(n.Name);
            foreach (var o in n.Output) _used.Add(o);
            foreach (var i in n.Input) _used.Add(i);
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) Collect(a.G);
                foreach (var g in a.Graphs) Collect(g);
            }
        }
    }

    public string Fresh(string wanted)
    {
        if (_used.Add(wanted)) return wanted;
        for (int i = 1; ; i++)
            if (_used.Add($"{wanted}_{i}")) return $"{wanted}_{i}";
    }
}
