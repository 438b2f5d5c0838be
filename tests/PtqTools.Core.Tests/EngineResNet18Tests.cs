using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using Xunit;
using Xunit.Abstractions;

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
        var engine = new IntegerEngine(_f.Quantized, "resnet18.int8");
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
    }
}
