using Onnx;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>What a platform must not change in the written bytes (Windows.Tests.ps1 compares a Windows run under wine
/// with Linux): the order of a prepared model's opset imports, which ONNX Runtime writes from a hash map.</summary>
public class PortableOutputTests
{
    static readonly string[] LinuxOrder =
    {
        "", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview", "com.microsoft", "ai.onnx.preview.training",
        "com.microsoft.experimental", "com.microsoft.nchwc", "org.pytorch.aten",
    };

    static ModelProto WithImports(params string[] domains)
    {
        var model = new ModelProto();
        foreach (var d in domains) model.OpsetImport.Add(new OperatorSetIdProto { Domain = d, Version = d.Length == 0 ? 13 : 1 });
        return model;
    }

    [Fact]
    public void OpsetImports_InTheOrderTheWindowsRuntimeWrote_ComeOutInTheLinuxOrder()
    {
        // The order ONNX Runtime 1.31.1's win-x64 build wrote for test_Conv2d (under wine).
        var model = WithImports("", "com.microsoft.nchwc", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview",
            "ai.onnx.preview.training", "com.microsoft.experimental", "com.microsoft", "org.pytorch.aten");
        ModelPreparer.SortOpsetImports(model);
        Assert.Equal(LinuxOrder, model.OpsetImport.Select(o => o.Domain));
        Assert.Equal(13, model.OpsetImport[0].Version);
    }

    [Fact]
    public void OpsetImports_OfOtherDomains_FollowByName_AndTheLinuxOrderIsKept()
    {
        var model = WithImports("org.custom.b", "com.microsoft", "", "org.custom.a", "ai.onnx.ml");
        ModelPreparer.SortOpsetImports(model);
        Assert.Equal(new[] { "", "ai.onnx.ml", "com.microsoft", "org.custom.a", "org.custom.b" }, model.OpsetImport.Select(o => o.Domain));
        var linux = WithImports(LinuxOrder);
        ModelPreparer.SortOpsetImports(linux);
        Assert.Equal(LinuxOrder, linux.OpsetImport.Select(o => o.Domain));
    }

    [Fact]
    public void PreparedModel_FromTheRuntime_HasTheOneOrder()
    {
        TestPaths.UseTempCache();
        var prepared = ModelPreparer.Prepare(Path.Combine(CorpusWalk.Root, "pytorch-converted/test_Conv2d/model.onnx"));
        var domains = prepared.Model.OpsetImport.Select(o => o.Domain).ToArray();
        Assert.Contains("com.microsoft.nchwc", domains);
        Assert.Equal(LinuxOrder.Where(domains.Contains), domains.Where(LinuxOrder.Contains));
    }
}
