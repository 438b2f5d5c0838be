using PtqTools.Core;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>
/// The portable fallbacks of what Linux reads from /proc (issue 18): run here by pointing the meter at a folder that
/// does not exist, as on Windows and macOS; and the file writing and path rules every platform shares.
/// </summary>
public class PlatformFallbackTests
{
    [Fact]
    public void PeakAndResidentMemoryFallBackToTheProcessCountersWithoutProc()
    {
        var saved = PerformanceMeter.ProcSelf;
        try
        {
            PerformanceMeter.ProcSelf = Path.Combine(Path.GetTempPath(), "no-proc-" + Guid.NewGuid().ToString("N"));
            using var p = System.Diagnostics.Process.GetCurrentProcess();
            var peak = PerformanceMeter.PeakResidentBytes();
            Assert.NotNull(peak);
            p.Refresh();
            // The process's own peak working set (never below what it holds now).
            Assert.True(peak >= 1 << 20, $"peak {peak}");
            Assert.True(peak <= p.PeakWorkingSet64, $"peak {peak} vs {p.PeakWorkingSet64}");
            var resident = PerformanceMeter.ResidentBytes();
            Assert.True(resident >= 1 << 20 && resident <= p.PeakWorkingSet64 + (64 << 20), $"resident {resident}");
        }
        finally { PerformanceMeter.ProcSelf = saved; }
    }

    [HostFact(HostNeed.Linux)]
    public void LinuxReadsTheKernelHighWaterMark()
    {
        var peak = PerformanceMeter.PeakResidentBytes();
        var status = File.ReadAllLines("/proc/self/status").Single(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        Assert.NotNull(peak);
        Assert.True(Math.Abs(peak!.Value - long.Parse(status[6..].Trim().Split(' ')[0]) * 1024) < 64 << 20);
    }

    [Fact]
    public void WriteAtomicallyReplacesAnExistingFileAndLeavesNoTemporary()
    {
        var dir = Directory.CreateTempSubdirectory("ptq-replace-").FullName;
        try
        {
            var target = Path.Combine(dir, "out.bin");
            File.WriteAllBytes(target, [1, 2, 3]);
            // A reader of the module holds the old file open while it is replaced (FileShare.Delete on Windows).
            using (var reader = new FileStream(target, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete))
            {
                OnnxModelIO.WriteAtomically(target, [4, 5]);
                Assert.Equal(1, reader.ReadByte());
            }
            Assert.Equal(new byte[] { 4, 5 }, File.ReadAllBytes(target));
            Assert.Equal(["out.bin"], Directory.GetFiles(dir).Select(Path.GetFileName));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void PathsCompareAsTheFileSystemDoes()
    {
        var expected = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        Assert.Equal(expected, PlatformPaths.Comparison);
        var root = Path.GetTempPath();
        Assert.True(PlatformPaths.Same(Path.Combine(root, "a", "b"), Path.Combine(root, "a", "b") + Path.DirectorySeparatorChar));
        Assert.Equal(expected == StringComparison.OrdinalIgnoreCase, PlatformPaths.Same(Path.Combine(root, "Model.onnx"), Path.Combine(root, "model.onnx")));
    }
}
