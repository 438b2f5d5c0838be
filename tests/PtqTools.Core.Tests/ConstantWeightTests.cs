using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

public class ConstantWeightTests
{
    /// <summary>The residual CNN with every initializer turned into a Constant node, each attribute kind in turn.</summary>
    static ModelProto WithConstantNodes(string kind)
    {
        var model = TinyModels.ResidualCnn(7).Model;
        var g = model.Graph;
        var constants = new List<NodeProto>();
        foreach (var t in g.Initializer.ToList())
        {
            var node = new NodeProto { OpType = "Constant", Name = "const_" + t.Name };
            node.Output.Add(t.Name);
            var values = TensorData.ReadFloats(t);
            AttributeProto attr;
            if (kind == "value_floats" && t.Dims.Count == 1)
            {
                attr = new AttributeProto { Name = "value_floats", Type = AttributeProto.Types.AttributeType.Floats };
                attr.Floats.AddRange(values);
            }
            else if (kind == "sparse_value")
            {
                // Keep every non-zero value with its flat index (COO, 1-D indices).
                var sparse = new SparseTensorProto();
                sparse.Dims.AddRange(t.Dims);
                var nz = Enumerable.Range(0, values.Length).Where(i => values[i] != 0).ToArray();
                sparse.Values = TensorData.FromFloats("", nz.Select(i => values[i]).ToArray(), nz.Length);
                sparse.Indices = new TensorProto { DataType = (int)OnnxDataType.Int64, Dims = { nz.Length } };
                sparse.Indices.Int64Data.AddRange(nz.Select(i => (long)i));
                attr = new AttributeProto { Name = "sparse_value", Type = AttributeProto.Types.AttributeType.SparseTensor, SparseTensor = sparse };
            }
            else
            {
                var copy = t.Clone();
                copy.Name = "";
                attr = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = copy };
            }
            node.Attribute.Add(attr);
            constants.Add(node);
        }
        g.Initializer.Clear();
        var nodes = constants.Concat(g.Node).ToList();
        g.Node.Clear();
        g.Node.AddRange(nodes);
        return model;
    }

    [Theory]
    [InlineData("value")]
    [InlineData("value_floats")]
    [InlineData("sparse_value")]
    public void WeightsInConstantNodes_AreListedAndQuantized(string kind)
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var model = WithConstantNodes(kind);
        var path = dir.File($"const-{kind}.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var random = new Random(70);
        var inputs = Enumerable.Range(0, 16).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var expected = Ort.Run(model, TinyModels.Input, inputs[0], TinyModels.InputShape)["y"];
        // The same network as the initializer version.
        Check.Close(Ort.Run(TinyModels.ResidualCnn(7).Model, TinyModels.Input, inputs[0], TinyModels.InputShape)["y"], expected, 1e-5, "constant vs initializer");

        var prepared = ModelPreparer.Prepare(path);
        var layers = ModelInspector.Layers(prepared);
        foreach (var name in new[] { "conv1", "conv2", "gemm" })
        {
            var layer = layers.Single(l => l.Name == name);
            Assert.True(layer.Quantizable, $"{name}: {layer.Reason}");
            Assert.NotNull(layer.WeightName);
        }

        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var data = DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        var output = dir.File($"const-{kind}.int8.onnx");
        var result = QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), output, CancellationToken.None);
        Assert.Contains("conv1", result.QuantizedLayers);
        Assert.Contains("gemm", result.QuantizedLayers);
        var quantized = OnnxModelIO.Load(output);
        Assert.Contains(quantized.Graph.Initializer, t => t.DataType == (int)OnnxDataType.Int8 && t.Dims.Count == 4);
        var actual = Ort.Run(quantized, TinyModels.Input, inputs[0], TinyModels.InputShape)["y"];
        Assert.True(Check.Cosine(expected, actual) > 0.99, $"cosine {Check.Cosine(expected, actual)}");
    }
}
