using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Onnx;

/// <summary>Summaries and layer lists of models, as plain objects.</summary>
public static class ModelInspector
{
    public static ModelSummary Summarize(string path)
    {
        var bytes = OnnxModelIO.ReadFile(path);
        var model = OnnxModelIO.Parse(bytes, path);
        var g = model.Graph;
        var inits = g.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var meta = model.MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        return new ModelSummary
        {
            Name = g.Name.Length > 0 ? g.Name : System.IO.Path.GetFileNameWithoutExtension(path),
            Path = System.IO.Path.GetFullPath(path),
            Sha256 = OnnxModelIO.Sha256(bytes),
            IrVersion = model.IrVersion,
            Opset = OpsetUpgrader.DefaultOpset(model),
            OpsetImports = model.OpsetImport.Select(o => $"{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)}:{o.Version}").ToArray(),
            Producer = $"{model.ProducerName} {model.ProducerVersion}".Trim(),
            Inputs = g.Input.Where(i => !inits.Contains(i.Name)).Select(GraphView.Describe).ToArray(),
            Outputs = g.Output.Select(GraphView.Describe).ToArray(),
            NodeCount = OpsetUpgrader.AllNodes(g).Count(),
            OpTypes = OpsetUpgrader.AllNodes(g).GroupBy(n => n.OpType).OrderByDescending(x => x.Count()).ThenBy(x => x.Key, StringComparer.Ordinal)
                .Select(x => $"{x.Key}:{x.Count()}").ToArray(),
            ParameterCount = g.Initializer.Sum(t => Math.Max(0, TensorData.ElementCount(t.Dims))),
            SizeBytes = bytes.LongLength,
            QuantizedFrom = meta.GetValueOrDefault("ptq.source_sha256"),
            QuantizationOptions = meta.GetValueOrDefault("ptq.options"),
        };
    }

    /// <summary>The layers of the prepared model (what is quantized), with whether each can be and why.</summary>
    public static List<ModelLayer> Layers(PreparedModel prepared)
    {
        var result = new List<ModelLayer>();
        Collect(prepared.Model.Graph, "", prepared, result);
        if (ModelPreparer.OpsetBlocked(prepared.Model) is { } blocked)
            foreach (var layer in result.Where(l => l.Quantizable))
                (layer.Quantizable, layer.Reason) = (false, blocked);
        return result;
    }

    static void Collect(GraphProto graph, string scope, PreparedModel prepared, List<ModelLayer> result)
    {
        var view = new GraphView(graph);
        var plan = scope.Length == 0 ? QuantizationPlan.Create(view, null) : null;
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            var handler = OpHandlers.Get(node);
            var (quantizable, reason) = OpHandlers.Assess(node, view);
            if (scope.Length > 0 && quantizable) (quantizable, reason) = (false, "inside a subgraph: kept in float in this version");
            if (plan is not null && !quantizable && plan.Decisions[i].Layer == node.Name) reason = plan.Decisions[i].Reason;
            var weight = handler?.Weight(node, view) is { } w && view.Initializers.TryGetValue(node.Input[w.Input], out var wt) ? wt : null;
            result.Add(new ModelLayer
            {
                ModelPath = prepared.SourcePath,
                ModelSha256 = prepared.SourceSha256,
                Index = result.Count,
                Name = node.Name,
                OpType = node.OpType,
                Domain = node.Domain,
                Scope = scope,
                Inputs = node.Input.ToArray(),
                Outputs = node.Output.ToArray(),
                WeightName = weight?.Name,
                WeightShape = weight?.Dims.ToArray() ?? Array.Empty<long>(),
                ParameterCount = node.Input.Where(view.Initializers.ContainsKey).Sum(n => Math.Max(0, TensorData.ElementCount(view.Initializers[n].Dims))),
                Quantizable = quantizable,
                Reason = reason,
            });
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) Collect(attr.G, $"{scope}{node.Name}/{attr.Name}/", prepared, result);
                foreach (var g in attr.Graphs) Collect(g, $"{scope}{node.Name}/{attr.Name}/", prepared, result);
            }
        }
    }
}
