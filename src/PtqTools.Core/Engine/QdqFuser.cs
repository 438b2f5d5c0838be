using Onnx;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Engine;

/// <summary>
/// Turns the QDQ form into the operator form the engine executes in integers, the way ONNX Runtime's QDQ
/// transformer does, by the pattern each op's handler names (<see cref="OpHandler.Engine"/>): DequantizeLinear → Conv/MatMul/Gemm/Add/pool [→ Relu] → QuantizeLinear becomes one
/// QLinearConv / QLinearMatMul / QGemm / QLinearAdd / QLinearAveragePool / QLinearGlobalAveragePool node (a fused
/// Relu is the attribute ptq_relu), and DequantizeLinear → MaxPool/Reshape/Flatten → QuantizeLinear with the same
/// scale and zero point runs on the quantized values. Nodes nothing needs any more are then dropped.
/// </summary>
internal static class QdqFuser
{
    public static List<NodeProto> Fuse(GraphProto graph, IReadOnlyDictionary<string, EngineTensor> constants)
    {
        var nodes = graph.Node.Select(n => n.Clone()).ToList();
        var producer = new Dictionary<string, NodeProto>();
        var consumers = new Dictionary<string, List<NodeProto>>();
        foreach (var n in nodes)
        {
            foreach (var o in n.Output) producer[o] = n;
            foreach (var i in n.Input) { if (!consumers.TryGetValue(i, out var l)) consumers[i] = l = new(); l.Add(n); }
        }
        var graphOutputs = graph.Output.Select(o => o.Name).ToHashSet();
        // Only ai.onnx (8-bit) DequantizeLinear: ONNX Runtime fuses no com.microsoft (16-bit) Q/DQ into an integer op.
        NodeProto? Dq(string tensor) => producer.TryGetValue(tensor, out var p) && p.OpType == "DequantizeLinear" && p.Domain is "" or "ai.onnx" ? p : null;
        NodeProto? SoleConsumer(string tensor) =>
            !graphOutputs.Contains(tensor) && consumers.TryGetValue(tensor, out var l) && l.Count == 1 ? l[0] : null;
        // The Q after op (optionally through a Relu), or null.
        (NodeProto? Q, bool Relu) FollowingQ(NodeProto op)
        {
            var next = SoleConsumer(op.Output[0]);
            if (next?.OpType == "QuantizeLinear") return (next, false);
            if (next?.OpType == "Relu" && SoleConsumer(next.Output[0]) is { OpType: "QuantizeLinear" } q) return (q, true);
            return (null, false);
        }
        bool IsConst(string t) => constants.ContainsKey(t);
        static string In(NodeProto n, int i) => i < n.Input.Count ? n.Input[i] : "";

        var replaced = new Dictionary<NodeProto, NodeProto>();
        var absorbed = new HashSet<NodeProto>();   // the QuantizeLinear (and Relu) each fusion takes in
        foreach (var op in nodes.ToList())
        {
            NodeProto? fused = null;
            // The op's handler names the pattern and the engine op it fuses into (OpHandler.Engine).
            var fusion = OpHandlers.ForOpType(op.OpType)?.Engine(op.OpType);
            switch (fusion?.Pattern)
            {
                case FusionPattern.WeightedProduct:
                {
                    var dx = Dq(In(op, 0)); var dw = Dq(In(op, 1));
                    if (dx is null || dw is null || !IsConst(dw.Input[0])) break;
                    var (q, relu) = FollowingQ(op);
                    NodeProto? db = In(op, 2) is { Length: > 0 } b ? Dq(b) : null;
                    if (In(op, 2) is { Length: > 0 } && (db is null || !IsConst(db.Input[0]))) break;
                    var type = fusion.FusedOp;
                    if (type != "QGemm" && q is null) break;
                    fused = new NodeProto { OpType = type, Name = op.Name };
                    if (type == "QLinearConv")
                    {
                        fused.Input.AddRange(new[] { dx.Input[0], dx.Input[1], In(dx, 2), dw.Input[0], dw.Input[1], In(dw, 2), q!.Input[1], In(q, 2) });
                        if (db is not null) fused.Input.AddRange(new[] { db.Input[0], db.Input[1] });
                    }
                    else if (type == "QLinearMatMul")
                        fused.Input.AddRange(new[] { dx.Input[0], dx.Input[1], In(dx, 2), dw.Input[0], dw.Input[1], In(dw, 2), q!.Input[1], In(q, 2) });
                    else
                        fused.Input.AddRange(new[] { dx.Input[0], dx.Input[1], In(dx, 2), dw.Input[0], dw.Input[1], In(dw, 2),
                            db?.Input[0] ?? "", db?.Input[1] ?? "", q?.Input[1] ?? "", q is null ? "" : In(q, 2) });
                    fused.Attribute.AddRange(op.Attribute);
                    fused.Output.Add(q?.Output[0] ?? op.Output[0]);
                    if (relu) fused.Attribute.Add(GraphEditor.Int("ptq_relu", 1));
                    break;
                }
                case FusionPattern.Binary:
                {
                    var da = Dq(In(op, 0)); var db = Dq(In(op, 1));
                    var (q, relu) = FollowingQ(op);
                    if (da is null || db is null || q is null) break;
                    fused = new NodeProto { OpType = fusion.FusedOp, Name = op.Name };
                    fused.Input.AddRange(new[] { da.Input[0], da.Input[1], In(da, 2), db.Input[0], db.Input[1], In(db, 2), q.Input[1], In(q, 2) });
                    fused.Output.Add(q.Output[0]);
                    if (relu) fused.Attribute.Add(GraphEditor.Int("ptq_relu", 1));
                    break;
                }
                case FusionPattern.Pool:
                {
                    var dx = Dq(In(op, 0));
                    var (q, relu) = FollowingQ(op);
                    if (dx is null || q is null || relu) break;
                    fused = new NodeProto { OpType = fusion.FusedOp, Name = op.Name };
                    fused.Input.AddRange(new[] { dx.Input[0], dx.Input[1], In(dx, 2), q.Input[1], In(q, 2) });
                    fused.Attribute.AddRange(op.Attribute);
                    fused.Output.Add(q.Output[0]);
                    break;
                }
                case FusionPattern.SameScale:
                {
                    var dx = Dq(In(op, 0));
                    var (q, relu) = FollowingQ(op);
                    if (dx is null || q is null || relu || op.Output.Count != 1) break;
                    if (!SameParams(dx, q, constants)) break;
                    fused = new NodeProto { OpType = fusion.FusedOp, Name = op.Name };
                    fused.Input.Add(dx.Input[0]);
                    fused.Input.AddRange(op.Input.Skip(1));
                    fused.Attribute.AddRange(op.Attribute);
                    fused.Output.Add(q.Output[0]);
                    break;
                }
            }
            if (fused is not null)
            {
                replaced[op] = fused;
                var (q2, relu2) = FollowingQ(op);
                if (q2 is not null && fused.Output[0] == q2.Output[0])
                {
                    absorbed.Add(q2);
                    if (relu2) absorbed.Add(SoleConsumer(op.Output[0])!);
                }
            }
        }
        var result = nodes.Where(n => !absorbed.Contains(n)).Select(n => replaced.TryGetValue(n, out var f) ? f : n).ToList();
        return Prune(result, graphOutputs);
    }

    static bool SameParams(NodeProto dq, NodeProto q, IReadOnlyDictionary<string, EngineTensor> constants)
    {
        if (!constants.TryGetValue(dq.Input[1], out var s1) || !constants.TryGetValue(q.Input[1], out var s2)) return false;
        if (s1.Length != 1 || s2.Length != 1 || s1.FloatAt(0) != s2.FloatAt(0)) return false;
        int z1 = dq.Input.Count > 2 && dq.Input[2].Length > 0 && constants.TryGetValue(dq.Input[2], out var a) ? a.IntAt(0) : 0;
        int z2 = q.Input.Count > 2 && q.Input[2].Length > 0 && constants.TryGetValue(q.Input[2], out var b) ? b.IntAt(0) : 0;
        OnnxDataType t1 = dq.Input.Count > 2 && constants.TryGetValue(dq.Input[2], out var c) ? c.Type : OnnxDataType.UInt8;
        OnnxDataType t2 = q.Input.Count > 2 && constants.TryGetValue(q.Input[2], out var d) ? d.Type : OnnxDataType.UInt8;
        return z1 == z2 && t1 == t2;
    }

    /// <summary>Keeps the nodes the graph outputs depend on, in their order.</summary>
    internal static List<NodeProto> Prune(List<NodeProto> nodes, HashSet<string> outputs)
    {
        var needed = new HashSet<string>(outputs);
        var keep = new bool[nodes.Count];
        for (int i = nodes.Count - 1; i >= 0; i--)
        {
            if (!nodes[i].Output.Any(needed.Contains)) continue;
            keep[i] = true;
            foreach (var input in nodes[i].Input) if (input.Length > 0) needed.Add(input);
        }
        return nodes.Where((_, i) => keep[i]).ToList();
    }
}
