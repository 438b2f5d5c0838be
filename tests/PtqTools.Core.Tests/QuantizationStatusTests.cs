using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The up-to-date decision (Get-QuantizationStatus, Update-QuantizedModel) on the quantized residual CNN.</summary>
public class QuantizationStatusTests : IClassFixture<SyntheticModelFixture>
{
    readonly SyntheticModelFixture _f;

    public QuantizationStatusTests(SyntheticModelFixture f) => _f = f;

    [Fact]
    public void MetadataReadWithoutTheGraphEqualsTheParsedModels()
    {
        var parsed = _f.Quantized.MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        Assert.Equal(parsed, QuantizationStatusCheck.ReadMetadata(_f.QuantizedPath));
        Assert.Contains("ptq.source_sha256", parsed.Keys);
        Assert.Empty(QuantizationStatusCheck.ReadMetadata(_f.FloatPath)!);
    }

    [Fact]
    public void NotAModelHasNoMetadata()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("text.onnx"), "not a model");
        Assert.Null(QuantizationStatusCheck.ReadMetadata(dir.File("text.onnx")));
        File.WriteAllBytes(dir.File("empty.onnx"), Array.Empty<byte>());
        Assert.Null(QuantizationStatusCheck.ReadMetadata(dir.File("empty.onnx")));
    }

    [Fact]
    public void TheOutputWrittenWithTheseOptionsIsCurrent()
    {
        var status = QuantizationStatusCheck.Check(_f.FloatPath, _f.QuantizedPath, _f.Options);
        Assert.Equal("Current", status.State);
        Assert.True(status.IsCurrent);
        Assert.Equal(_f.Result.Options, status.RecordedOptions);
        Assert.Equal(OnnxModelIO.Sha256(_f.FloatPath), status.SourceSha256);
    }

    [Fact]
    public void EachDifferenceHasItsState()
    {
        Assert.Equal("OptionsChanged", QuantizationStatusCheck.Check(_f.FloatPath, _f.QuantizedPath, new QuantizationOptions { PerChannel = false }).State);
        // The target is compared before the rest of the options.
        var amx = QuantizationStatusCheck.Check(_f.FloatPath, _f.QuantizedPath, new QuantizationOptions { Target = QuantTarget.Amx, PerChannel = false });
        Assert.Equal("TargetChanged", amx.State);
        Assert.Equal("Amx", amx.Target);
        Assert.Equal("Portable", amx.RecordedTarget);
        using var dir = new TempDir();
        Assert.Equal("Missing", QuantizationStatusCheck.Check(_f.FloatPath, dir.File("none.onnx"), _f.Options).State);
        Assert.Equal("NotQuantized", QuantizationStatusCheck.Check(_f.FloatPath, _f.FloatPath, _f.Options).State);
        var changed = dir.File("changed.onnx");
        File.WriteAllBytes(changed, File.ReadAllBytes(_f.FloatPath).Concat(new byte[] { 0x32, 0x01, (byte)'x' }).ToArray());
        Assert.Equal("SourceChanged", QuantizationStatusCheck.Check(changed, _f.QuantizedPath, _f.Options).State);
    }

    [Fact]
    public void TheDifferenceNamesTheOptionsThatChanged()
    {
        Assert.Equal("the output records 'weights=int8,symmetric,per-channel' where this run has 'weights=int8,symmetric,per-tensor'",
            QuantizationStatusCheck.Difference("a;weights=int8,symmetric,per-channel;b", "a;weights=int8,symmetric,per-tensor;b"));
    }
}
