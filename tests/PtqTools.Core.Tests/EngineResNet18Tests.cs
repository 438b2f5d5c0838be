using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using Xunit;
using Xunit.Abstractions;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Tests;

/// <summary>The int8 QDQ ResNet18 (made by the quantizer, as the Pester suite does) on the engine against ONNX
/// Runtime's int8 run of the same file, on 10 evaluation images (the 100-image check is tests/PtqTools.Benchmarks'
/// EngineParity, run by build.ps1 -Task Bench).</summary>
public class EngineResNet18Tests : IClassFixture<ResNet18Fixture>
{
    readonly ResNet18Fixture _f;
    readonly ITestOutputHelper _out;

    public EngineResNet18Tests(ResNet18Fixture fixture, ITestOutputHelper output) { _f = fixture; _out = output; }

    [Fact]
    public void ResNet18Int8_OnTheEngine_MatchesOnnxRuntimeWithinOneStep()
    {
        using var engine = new IntegerEngine(_f.Quantized, "resnet18.int8");
        Assert.DoesNotContain(engine.Nodes, n => n.OpType is "Conv" or "Add");
        Assert.Contains(engine.Nodes, n => n.OpType == "QLinearConv");
        using var ort = OrtRunner.FromFile(_f.QuantizedPath);
        var parity = new EngineParity(engine);
        using var reader = new SampleReader(_f.Evaluation);
        foreach (var sample in reader.Read(CancellationToken.None).Take(10))
            parity.Add(ort.Run(sample), engine.Run(EngineParity.Feed(engine, sample)));
        _out.WriteLine(parity.ToString());
        Assert.Equal(10, parity.Samples);
        Assert.True(parity.WithinOneStep >= 0.999, parity.ToString());
        // On x64 with FMA the engine follows ONNX Runtime's kernels operation for operation (QLinearAdd included), so
        // the outputs are the same values, not merely close.
        if (System.Runtime.Intrinsics.X86.Fma.IsSupported) Assert.True(parity.ExactShare >= 0.999, parity.ToString());
    }

    // Layer replay: exact against the full engine run, and close to the float layer when fed the float model's own activations.

    [Fact]
    public void Replay_FromDequantizedInputs_ReproducesTheFullRunExactly()
    {
        using var replay = new LayerReplay(_f.Quantized, "resnet18.int8");
        using var reader = new SampleReader(_f.Evaluation);
        var sample = reader.Read(CancellationToken.None).First();
        var all = replay.Engine.RunAll(EngineParity.Feed(replay.Engine, sample));
        foreach (var layer in new[] { "Convolution257", "Plus267", "Pooling255" })
        {
            var node = replay.Engine.Nodes.Single(n => n.Name == layer);
            // The dequantized value of what the layer read: quantizing it again must give the same integers.
            var floats = replay.FloatInputs(layer).ToDictionary(name => name, name => Dequantized(replay, _f.Quantized, name, all));
            var result = replay.Run(layer, floats);
            Assert.Equal(all[node.Output[0]].ToFloats(), result.IntegerOutputs[0].ToFloats());
            Assert.Equal(result.IntegerOutputs[0].Length, result.FloatOutputs[0].Length);
            Assert.True(result.OutputScale > 0);
        }
        Check.Throws("LayerNotFound", () => replay.Run("NoSuchLayer", new Dictionary<string, EngineTensor>()));
        Check.Throws("ReplayInputMissing", () => replay.Run("Convolution257", new Dictionary<string, EngineTensor>()));
    }

    /// <summary>DequantizeLinear of the QuantizeLinear output made from float tensor <paramref name="floatName"/>.</summary>
    static EngineTensor Dequantized(LayerReplay replay, global::Onnx.ModelProto model, string floatName, Dictionary<string, EngineTensor> all)
    {
        var q = model.Graph.Node.Single(n => n.OpType == "QuantizeLinear" && n.Input[0] == floatName);
        var dq = new global::Onnx.NodeProto { OpType = "DequantizeLinear", Name = "dq" };
        dq.Input.AddRange(new[] { q.Output[0], q.Input[1], q.Input[2] });
        return replay.Engine.RunNode(dq, all)[0];
    }

    [Fact]
    public void Replay_FromFloatModelActivations_IsCloseToTheFloatLayer()
    {
        using var replay = new LayerReplay(_f.Quantized, "resnet18.int8");
        using var reader = new SampleReader(_f.Evaluation);
        var sample = reader.Read(CancellationToken.None).First();
        var prepared = _f.Prepared.Model.Clone();
        const string layer = "Convolution257";
        var inputName = replay.FloatInputs(layer).Single();
        var conv = prepared.Graph.Node.Single(n => n.Name == layer);
        var outName = conv.Output[0];
        foreach (var t in new[] { inputName, outName }) prepared.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = t });
        var shape = new long[] { 1 }.Concat(sample.Shape.Select(d => (long)d)).ToArray();
        var floats = Ort.Run(prepared, prepared.Graph.Input[0].Name, sample.Data, shape);
        var inShape = replay.Engine.RunAll(EngineParity.Feed(replay.Engine, sample))[replay.Engine.Nodes.Single(n => n.Name == layer).Input[0]].Dims;
        var result = replay.Run(layer, new Dictionary<string, EngineTensor> { [inputName] = EngineTensor.Float(floats[inputName], inShape) });
        // The quantized layer's output includes its fused Relu; the float Conv's does not.
        var expected = floats[outName].Select(v => Math.Max(v, 0f)).ToArray();
        Assert.True(Check.Cosine(expected, result.FloatOutputs[0]) > 0.98, $"cosine {Check.Cosine(expected, result.FloatOutputs[0])}");
    }
}
