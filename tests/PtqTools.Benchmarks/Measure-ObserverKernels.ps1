<#
.SYNOPSIS
    Speed of the calibration observer passes (ObserverKernels): the scalar references against the vectorized paths
    the calibration uses, on ResNet18's per-sample volume of activation values (3,663,360, a ReLU'd normal, half
    zeros). Each pass is timed on 1/16 of the values, best of -Repeat runs, so that on a shared machine a run that
    was preempted does not count; the figures are per value. Run by hand (figures in docs/benchmarks.md).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int] $Repeat = 60
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
$core = Join-Path (Split-Path (Resolve-Path $ModulePath)) 'PtqTools.Core.dll'
Add-Type -Path $core
# C#, because PowerShell cannot pass the spans the kernels take.
Add-Type -ReferencedAssemblies $core, 'System.Runtime', 'System.Runtime.Intrinsics', 'System.Console' -TypeDefinition @'
using System;
using System.Diagnostics;
using PtqTools.Core.Calibration;
public static class ObserverKernelTiming
{
    public static double[] Run(int repeat)
    {
        var r = new Random(1);
        int n = 3663360 / 16;
        var v = new float[n];
        for (int i = 0; i < n; i++) { double g = Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble()); v[i] = (float)Math.Max(0, 2 * g); }
        var m = ObserverKernels.MomentsReference(v);
        int e = -60;
        while (Math.Floor(m.Max * Math.ScaleB(1.0, -e)) - Math.Floor(m.Min * Math.ScaleB(1.0, -e)) + 1 > 8192) e++;
        double inv = Math.ScaleB(1.0, -e);
        var counts = new long[8192];
        Func<Action, double> best = a =>
        {
            a();
            double b = double.MaxValue;
            for (int k = 0; k < repeat; k++) { var c = Stopwatch.StartNew(); a(); b = Math.Min(b, c.Elapsed.TotalMilliseconds * 1e6 / n); }
            return b;
        };
        return new[]
        {
            best(() => ObserverKernels.MomentsReference(v)), best(() => ObserverKernels.Moments(v)),
            best(() => ObserverKernels.BinReference(v, inv, 0, counts)), best(() => ObserverKernels.Bin(v, inv, 0, counts, m.Min, m.Max)),
        };
    }
}
'@
$t = [ObserverKernelTiming]::Run($Repeat)
$perSample = 3663360 / 1e6
"Observer passes, ns per value (best of $Repeat), vector path $([PtqTools.Core.Calibration.ObserverKernels]::Path):" | Out-Host
"  moments: scalar reference {0:N2}, vector {1:N2} ({2:N1}x); per ResNet18 sample {3:N1} ms vs {4:N1} ms" -f $t[0], $t[1], ($t[0] / $t[1]), ($t[0] * $perSample), ($t[1] * $perSample) | Out-Host
"  binning: scalar reference {0:N2}, vector {1:N2} ({2:N1}x); per ResNet18 sample {3:N1} ms vs {4:N1} ms" -f $t[2], $t[3], ($t[2] / $t[3]), ($t[2] * $perSample), ($t[3] * $perSample) | Out-Host
