using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

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
            Sha256 = OnnxModelIO.Sha256(path, bytes),
            IrVersion = model.IrVersion,
            Opset = OpsetUpgrader.DefaultOpset(model),
            OpsetImports = new(model.OpsetImport.Select(o => new OpsetImport { Domain = o.Domain.Length == 0 ? "ai.onnx" : o.Domain, Version = o.Version })),
            Producer = $"{model.ProducerName} {model.ProducerVersion}".Trim(),
            Inputs = new(g.Input.Where(i => !inits.Contains(i.Name)).Select(GraphView.Info)),
            Outputs = new(g.Output.Select(GraphView.Info)),
            NodeCount = OpsetUpgrader.AllNodes(g).Count(),
            OpTypes = new(OpsetUpgrader.AllNodes(g).GroupBy(n => n.OpType).OrderByDescending(x => x.Count()).ThenBy(x => x.Key, StringComparer.Ordinal)
                .Select(x => new OpTypeCount { OpType = x.Key, Count = x.Count() })),
            ParameterCount = g.Initializer.Sum(t => Math.Max(0, TensorData.ElementCount(t.Dims))),
            SizeBytes = OnnxModelIO.SizeOnDisk(path, bytes),
            QuantizedFrom = meta.GetValueOrDefault("ptq.source_sha256"),
            QuantizationOptions = meta.GetValueOrDefault("ptq.options"),
            QuantizationTarget = meta.GetValueOrDefault("ptq.target"),
        };
    }

    /// <summary>The layers of the prepared model (what is quantized), with whether each can be and why.</summary>
    public static List<ModelLayer> Layers(PreparedModel prepared)
    {
        var result = new List<ModelLayer>();
        var main = new GraphView(prepared.Model.Graph);
        var decisions = QuantizationPlan.Create(main, null).Decisions.GroupBy(d => d.Layer, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        Collect(main, prepared, decisions, result);
        // Listing needs no opset raise; quantizing does (13 for per-channel weights, 10 per tensor).
        if (OpsetUpgrader.RaiseBlocked(prepared.Model, 13) is { } blocked)
        {
            bool perTensor = OpsetUpgrader.RaiseBlocked(prepared.Model, 10) is null;
            foreach (var layer in result.Where(l => l.Quantizable))
                if (perTensor) layer.Reason = $"{layer.Reason}, per tensor only (-PerChannel:$false): {blocked}";
                else (layer.Quantizable, layer.Reason) = (false, blocked);
        }
        return result;
    }

    /// <summary>A graph's layers, each followed by those of its subgraphs, named by their scope path
    /// (<c>If_3/then_branch/Conv_0</c>) as the plan names them.</summary>
    static void Collect(GraphView view, PreparedModel prepared, Dictionary<string, LayerDecision> decisions, List<ModelLayer> result)
    {
        foreach (var node in view.Graph.Node)
        {
            var handler = OpHandlers.Get(node);
            var (quantizable, reason) = OpHandlers.Assess(node, view);
            var name = QuantizationPlan.LayerName(view, node);
            if (!quantizable && decisions.TryGetValue(name, out var decision)) reason = decision.Reason;
            var weight = handler?.Weight(node, view) is { } w && view.Initializers.TryGetValue(node.Input[w.Input], out var wt) ? wt : null;
            result.Add(new ModelLayer
            {
                ModelPath = prepared.SourcePath,
                ModelSha256 = prepared.SourceSha256,
                Index = result.Count,
                Name = name,
                OpType = node.OpType,
                Domain = node.Domain,
                Scope = view.Scope,
                Inputs = node.Input.ToArray(),
                Outputs = node.Output.ToArray(),
                WeightName = weight?.Name,
                WeightShape = weight?.Dims.ToArray() ?? Array.Empty<long>(),
                ParameterCount = node.Input.Where(view.Initializers.ContainsKey).Sum(n => Math.Max(0, TensorData.ElementCount(view.Initializers[n].Dims))),
                Quantizable = quantizable,
                Reason = reason,
            });
            foreach (var sub in view.Subgraphs(node)) Collect(sub, prepared, decisions, result);
        }
    }
}
