using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.TestModels;

/// <summary>all-MiniLM-L6-v2 rewritten into the form of a PyTorch export at opset 11: the graph already has what such an
/// export writes (the additive mask (1 - mask) * -10000, GELU as x * 0.5 * (1 + Erf(x / sqrt 2)), LayerNorm as
/// ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add); its opset-13-only forms are rewritten: Unsqueeze, Squeeze and
/// ReduceSum take their axes as an attribute, Split its split sizes as an attribute; opset import 11, IR version 6.
/// A graph edit on the ModelProto; ONNX Runtime is not involved.</summary>
public static class BertOpset11
{
    public static ModelProto Rewrite(ModelProto source)
    {
        var model = source.Clone();
        var graph = model.Graph;
        var constants = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            if (n.OpType == "Constant" && n.Attribute.FirstOrDefault(a => a.Name == "value") is { T: { } t }) constants[n.Output[0]] = t;
        foreach (var t in graph.Initializer) constants.TryAdd(t.Name, t);
        foreach (var n in graph.Node)
        {
            (string Attr, int Input)? move = n.OpType switch
            {
                "Unsqueeze" or "Squeeze" or "ReduceSum" => ("axes", 1),
                "Split" => ("split", 1),
                _ => null,
            };
            if (move is not { } m || n.Input.Count <= m.Input) continue;
            var name = n.Input[m.Input];
            if (name.Length > 0)
            {
                if (!constants.TryGetValue(name, out var value))
                    throw new InvalidOperationException($"{n.OpType} '{n.Name}' takes its {m.Attr} from '{name}', which is not a constant: no opset-11 form.");
                n.Attribute.Add(new AttributeProto { Name = m.Attr, Type = AttributeProto.Types.AttributeType.Ints, Ints = { Int64s(value) } });
            }
            n.Input.RemoveAt(m.Input);
        }
        // Constant nodes and initializers nothing reads any more go (an exporter would not write them).
        var used = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
        foreach (var n in graph.Node.Where(n => n.OpType == "Constant" && !used.Contains(n.Output[0])).ToList()) graph.Node.Remove(n);
        foreach (var t in graph.Initializer.Where(t => !used.Contains(t.Name)).ToList()) graph.Initializer.Remove(t);
        model.OpsetImport.Clear();
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 11 });
        model.IrVersion = 6;
        model.ProducerName = "pytorch";
        model.ProducerVersion = "1.8 (opset 11 form, rewritten by PtqTools.TestModels)";
        return model;
    }

    static long[] Int64s(TensorProto t)
    {
        if (t.DataType == (int)OnnxDataType.Int64)
        {
            if (t.Int64Data.Count > 0) return t.Int64Data.ToArray();
            var raw = t.RawData.Span;
            var v = new long[raw.Length / 8];
            for (int i = 0; i < v.Length; i++) v[i] = BitConverter.ToInt64(raw.Slice(i * 8, 8));
            return v;
        }
        if (t.DataType == (int)OnnxDataType.Int32) return t.Int32Data.Select(i => (long)i).ToArray();
        throw new InvalidOperationException($"Constant '{t.Name}' of type {t.DataType} is not a list of integers.");
    }
}
