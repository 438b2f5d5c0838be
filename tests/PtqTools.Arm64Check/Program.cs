using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using PtqTools.Arm64Check;
using PtqTools.Core.Kernels;

// PtqTools.Arm64Check [write FOLDER] [kernels] [engine FOLDER]: writes the quantized conformance models (x64 only,
// ConformanceModels), the kernels' exactness checks against the scalar references on every path this CPU offers
// (KernelChecks), and the integer engine's report on the quantized models of FOLDER (EngineReport). Exit code 0 when
// every check passed and every path agreed, 1 otherwise, 2 on bad arguments.
var started = System.Diagnostics.Stopwatch.StartNew();
int w = Array.IndexOf(args, "write"), e = Array.IndexOf(args, "engine");
bool kernels = args.Length == 0 || args.Contains("kernels");
if ((w >= 0 && w + 1 >= args.Length) || (e >= 0 && e + 1 >= args.Length)) { Console.Error.WriteLine("usage: [write FOLDER] [kernels] [engine FOLDER]"); return 2; }
if (w >= 0)
{
    ConformanceModels.Write(args[w + 1], Console.Out);
    if (!kernels && e < 0) return 0;
}
Console.WriteLine($"arch: {RuntimeInformation.ProcessArchitecture}, AdvSimd: {AdvSimd.Arm64.IsSupported}, Dp: {Dp.IsSupported}, " +
    $"best path: {KernelDispatch.Best}, paths: {string.Join(", ", KernelDispatch.Supported())}, native library: {(NativeKernels.Available ? "loaded" : "none")}, " +
    $".NET {Environment.Version}, {Environment.ProcessorCount} CPUs");
int failed = 0, passed = 0;
if (kernels)
{
    var checks = new KernelChecks(Console.Out);
    checks.RunAll();
    foreach (var f in checks.Failures.Take(20)) Console.WriteLine($"MISMATCH {f}");
    failed += checks.Failures.Count;
    passed += checks.Cases * KernelDispatch.Supported().Count - checks.Failures.Count;
}
if (e >= 0)
{
    var lines = EngineReport.Run(args[e + 1], Console.Out);
    if (lines is null) failed++;
    else
    {
        passed++;
        foreach (var line in lines) Console.WriteLine(line);
    }
}
Console.WriteLine($"time: {started.Elapsed.TotalSeconds:F1} s");
Console.WriteLine($"{passed} passed, {failed} failed");
return failed == 0 ? 0 : 1;
