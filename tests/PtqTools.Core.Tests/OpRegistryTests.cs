using System.Reflection;
using System.Text.RegularExpressions;
using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The op registry (<see cref="OpHandlers"/>): every handler answers for every mode and format, the engine
/// runs what the handlers name, and the documented op lists are the registry's.</summary>
public sealed class OpRegistryTests
{
    static IEnumerable<OpHandler> Handlers => OpHandlers.OpTypes.Select(OpHandlers.ForOpType).Distinct().Cast<OpHandler>();

    static bool Overrides(OpHandler h, string method) =>
        h.GetType().GetMethods(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Where(m => m.Name == method || m.Name == "get_" + method)
            .Any(m => m.DeclaringType != typeof(OpHandler) && m.GetBaseDefinition().DeclaringType == typeof(OpHandler));

    [Fact]
    public void EveryOpTypeHasOneHandler_ThatClaimsIt()
    {
        var claimed = Handlers.SelectMany(h => h.OpTypes).ToList();
        Assert.Equal(claimed.Count, claimed.Distinct().Count());
        Assert.Equal(claimed.OrderBy(o => o, StringComparer.Ordinal), OpHandlers.OpTypes.OrderBy(o => o, StringComparer.Ordinal));
        foreach (var op in OpHandlers.OpTypes)
        {
            Assert.Contains(op, OpHandlers.ForOpType(op)!.OpTypes);
            Assert.Same(OpHandlers.ForOpType(op), OpHandlers.Get(new NodeProto { OpType = op }));
            Assert.Null(OpHandlers.Get(new NodeProto { OpType = op, Domain = "com.microsoft" }));   // ai.onnx ops only
        }
        Assert.Empty(OpHandlers.OpTypes.Intersect(OpHandlers.FoldedActivations));
    }

    /// <summary>A handler in the weight modes says why a node stays float, describes a quantized one and writes it;
    /// one outside them leaves all three to the base (the modes' common reason keeps it float).</summary>
    [Fact]
    public void EveryHandler_AnswersForEveryWeightMode()
    {
        foreach (var h in Handlers)
        {
            var name = h.GetType().Name;
            foreach (var method in new[] { "CannotQuantizeWeights", "DescribeWeights", "QuantizeWeights" })
                Assert.True(h.InWeightModes == Overrides(h, method), $"{name}: InWeightModes = {h.InWeightModes} but {method} is {(Overrides(h, method) ? "" : "not ")}overridden");
        }
        Assert.Equal(new[] { "GRU", "Gather", "LSTM", "MatMul" }, OpHandlers.WeightModeOpTypes.OrderBy(o => o, StringComparer.Ordinal));
    }

    /// <summary>Every engine fusion a handler names is an op the engine runs, and a same-scale pass-through op also
    /// runs as itself; an op the engine only runs fused has no float entry.</summary>
    [Fact]
    public void EngineFusions_NameOpsTheEngineRuns()
    {
        var fused = new List<string>();
        foreach (var op in OpHandlers.OpTypes)
            if (OpHandlers.ForOpType(op)!.Engine(op) is { } f)
            {
                Assert.Contains(f.FusedOp, EngineOps.Supported);
                if (f.Pattern == FusionPattern.SameScale) Assert.Equal(op, f.FusedOp);
                fused.Add(op);
            }
        Assert.Equal(new[] { "Add", "AveragePool", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "MatMul", "MaxPool", "Reshape" },
            fused.OrderBy(o => o, StringComparer.Ordinal));
        Assert.Equal(new[] { "Add", "Conv", "MatMul" }, EngineOps.OnlyQuantized.OrderBy(o => o, StringComparer.Ordinal));
    }

    /// <summary>What each op lowers to in QOperator, from the registry, on one DQ → op → Q pattern per op.</summary>
    [Fact]
    public void QOperatorLowerings_AreTheHandlers()
    {
        var lowered = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var op in OpHandlers.OpTypes)
        {
            var g = new GraphProto();
            var dq = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
            foreach (var t in new[] { "a", "b", "c" })
                dq[t + "_dq"] = GraphEditor.Node("DequantizeLinear", t + "_DQ", new[] { t + "_q", "s", "z" }, t + "_dq");
            g.Initializer.Add(TensorData.FromFloats("s", new[] { 0.1f }));
            g.Initializer.Add(GraphEditor.QuantizedTensor("z", new[] { 128 }, OnnxDataType.UInt8));
            g.Initializer.Add(GraphEditor.QuantizedTensor("c_q", new[] { 1 }, OnnxDataType.Int32, 1));
            var inputs = op is "Conv" or "Concat" ? new[] { "a_dq", "b_dq", "c_dq" } : op is "Add" or "Mul" or "MatMul" or "Gemm" ? new[] { "a_dq", "b_dq" } : new[] { "a_dq" };
            var node = GraphEditor.Node(op, op.ToLowerInvariant(), inputs, "y");
            var q = GraphEditor.Node("QuantizeLinear", "Q", new[] { "y", "s", "z" }, "y_q");
            g.Node.AddRange(dq.Values.Append(node).Append(q));
            var model = new ModelProto { Graph = g };
            model.OpsetImport.Add(new OperatorSetIdProto { Version = 13 });
            var lowering = new QOperatorLowering(model, new GraphView(g), dq);
            lowered[op] = OpHandlers.ForOpType(op)!.ToQOperator(lowering, node, q, null) is { } n ? (n.Domain.Length > 0 ? n.Domain + "." : "") + n.OpType : "-";
        }
        Assert.Equal(
            "Add=com.microsoft.QLinearAdd AveragePool=com.microsoft.QLinearAveragePool Concat=com.microsoft.QLinearConcat Conv=QLinearConv ConvTranspose=- "
            + "Flatten=Flatten GRU=- Gather=- Gemm=- GlobalAveragePool=com.microsoft.QLinearGlobalAveragePool LSTM=- MatMul=QLinearMatMul MaxPool=MaxPool "
            + "Mul=com.microsoft.QLinearMul Reshape=Reshape Resize=Resize Softmax=com.microsoft.QLinearSoftmax Squeeze=Squeeze Transpose=Transpose Unsqueeze=Unsqueeze",
            string.Join(" ", lowered.Select(kv => kv.Key + "=" + kv.Value)));
    }

    /// <summary>docs/architecture.md, "How to add an op", lists the registry's ops and the weight modes' ops.</summary>
    [Fact]
    public void DocumentedOpLists_AreTheRegistry()
    {
        var doc = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "docs", "architecture.md"));
        string[] Listed(string label)
        {
            var m = Regex.Match(doc, "^" + Regex.Escape(label) + "(.*)$", RegexOptions.Multiline);
            Assert.True(m.Success, $"docs/architecture.md has no line starting '{label}'");
            return Regex.Matches(m.Groups[1].Value, "`([A-Za-z]+)`").Select(x => x.Groups[1].Value).ToArray();
        }
        Assert.Equal(OpHandlers.OpTypes.OrderBy(o => o, StringComparer.Ordinal), Listed("Registered ops:"));
        Assert.Equal(OpHandlers.WeightModeOpTypes.OrderBy(o => o, StringComparer.Ordinal), Listed("Weight-mode ops:"));
    }
}
