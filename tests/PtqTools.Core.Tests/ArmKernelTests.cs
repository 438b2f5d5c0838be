using PtqTools.Core.Kernels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The ARM64 path's dispatch as seen from any host. Its kernels' exactness is checked where they run: on an
/// ARM64 machine, or under qemu-user from this x64 one (tests/Pester/Arm64.Tests.ps1, tests/PtqTools.Arm64Check).</summary>
public class ArmKernelTests
{
    [Fact]
    public void ArmDot_IsOfferedExactlyWhereAdvSimdAndTheDotProductAre()
    {
        bool arm = System.Runtime.Intrinsics.Arm.AdvSimd.Arm64.IsSupported && System.Runtime.Intrinsics.Arm.Dp.IsSupported;
        Assert.Equal(arm, ArmKernels.Supported);
        Assert.Equal(arm, KernelDispatch.Supported().Contains(KernelPath.ArmDot));
        if (arm) Assert.Equal(KernelPath.ArmDot, KernelDispatch.Best);
        else Assert.NotEqual(KernelPath.ArmDot, KernelDispatch.Best);
        // An x86 path and ArmDot are never offered together.
        Assert.False(arm && KernelDispatch.Supported().Any(p => p is KernelPath.Avx2 or KernelPath.Avx512BW or KernelPath.NativeVnni));
    }

    [HostFact(HostNeed.NoArmDot)]
    public void ArmDot_AskedForWhereItIsNotSupported_FallsBackToAPathThatIsAndStaysExact()
    {
        Assert.Equal(KernelDispatch.Supported()[^1], KernelDispatch.Clamp(KernelPath.ArmDot));
        var random = new Random(3);
        int m = 5, k = 19, n = 21;
        var a = new byte[m * k]; random.NextBytes(a);
        var b = Enumerable.Range(0, k * n).Select(_ => (sbyte)random.Next(-128, 128)).ToArray();
        var zb = Enumerable.Range(0, n).Select(_ => random.Next(-5, 5)).ToArray();
        var expected = new int[m * n];
        QGemm.Reference<byte, sbyte>(a, 7, m, k, b, zb, n, expected);
        var packed = PackedWeights.Pack(b, k, n, zb);
        var arm = KernelPaths.Context(KernelPath.ArmDot);
        var gemm = new int[m * n];
        QGemm.Multiply(arm, a, 7, m, packed, gemm);
        Assert.Equal(expected, gemm);

        var g = new ConvGeometry(1, 6, 7, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1);
        var x = new byte[6 * 7 * 7]; random.NextBytes(x);
        var w = Enumerable.Range(0, 5 * 6 * 9).Select(_ => (sbyte)random.Next(-128, 128)).ToArray();
        var y = new int[5 * g.OutH * g.OutW];
        QConv.Reference<byte, sbyte>(x, 3, w, new[] { 1 }, g, y);
        var pw = PackedConvWeights.Pack<sbyte>(w, new[] { 1 }, g);
        var conv = new int[y.Length];
        QConv.Run<byte>(arm, x, 3, pw, conv);
        Assert.Equal(y, conv);

        var addA = new byte[40]; random.NextBytes(addA);
        var addB = new byte[40]; random.NextBytes(addB);
        var sum = new byte[40];
        QElementwise.AddReference<byte>(addA, 0.02f, 120, addB, 0.03f, 130, 0.04f, 128, sum);
        var added = new byte[40];
        QElementwise.Add<byte>(arm, addA, 0.02f, 120, addB, 0.03f, 130, 0.04f, 128, added);
        Assert.Equal(sum, added);
    }
}
