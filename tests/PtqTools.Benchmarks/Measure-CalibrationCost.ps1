<#
.SYNOPSIS
    Calibration cost and memory, run by build.ps1 -Task Bench (figures go to docs/benchmarks.md):
    1. Wall time of Measure-ActivationRange (all tensors, every method from one pass) beside plain fp32 ONNX Runtime
       inference of the same prepared model over the same samples, same threads, same process.
    2. Peak resident memory (VmHWM) of a fresh process calibrating ResNet18 on -SmallCount and on -LargeCount samples.
.PARAMETER Child
    Internal: run one calibration of -Count samples and print the process's peak memory.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int] $SmallCount = 200,
    [int] $LargeCount = 2000,
    [int] $CostCount = 100,
    [int] $ThreadCount = 2,
    [int] $Child = 0,
    [switch] $SkipMemory
)
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')
Import-Module $ModulePath -Force
. (Join-Path $root 'tests/Pester/TestData.ps1')

function Get-PeakMemoryMB { [double]((Get-Content /proc/self/status | Select-String '^VmHWM:') -replace '\D', '') / 1024 }

if ($Child -gt 0) {
    $data = New-ResNetDataSet -Split train -Count $Child
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $stats = Measure-ActivationRange -Path $ResNet18 -DataSet $data -Method Auto -ThreadCount $ThreadCount
    [pscustomobject]@{ Samples = $Child; Tensors = $stats.Count; Seconds = $clock.Elapsed.TotalSeconds; PeakMB = (Get-PeakMemoryMB) } | ConvertTo-Json -Compress
    return
}

# 1. Cost over plain inference: the same prepared model, data reader and threads, in this process, alternating
#    runs and taking the median of three.
$data = New-ResNetDataSet -Split train -Count $CostCount -Skip 5000
$prepared = [PtqTools.Core.Onnx.ModelPreparer]::Prepare($ResNet18)
$bytes = [Google.Protobuf.MessageExtensions]::ToByteArray($prepared.Model)
$null = Measure-ActivationRange -Path $ResNet18 -DataSet (New-ResNetDataSet -Split train -Count 2) -ThreadCount $ThreadCount   # warm-up
$plain = @(); $calib = @()
foreach ($round in 1..3) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $runner = [PtqTools.Core.Evaluation.OrtRunner]::new($bytes, $ResNet18, $ThreadCount, $null)
    $reader = [PtqTools.Core.Data.SampleReader]::new($data)
    foreach ($sample in $reader.Read([Threading.CancellationToken]::None)) { $null = $runner.Run($sample, [Threading.CancellationToken]::None) }
    $reader.Dispose(); $runner.Dispose()
    $plain += $clock.Elapsed.TotalSeconds
    $clock.Restart()
    $null = Measure-ActivationRange -Path $ResNet18 -DataSet $data -Method Auto -ThreadCount $ThreadCount
    $calib += $clock.Elapsed.TotalSeconds
}
$plainS = ($plain | Sort-Object)[1]; $calibS = ($calib | Sort-Object)[1]
"Calibration cost, ResNet18, $CostCount samples, $ThreadCount threads (median of 3): plain fp32 inference {0:N1} s, Measure-ActivationRange (all methods) {1:N1} s, ratio {2:N2}" -f $plainS, $calibS, ($calibS / $plainS) | Out-Host

# 2. Peak memory in fresh processes.
if ($SkipMemory) { return }
$memory = foreach ($count in $SmallCount, $LargeCount) {
    $json = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File $PSCommandPath -ModulePath $ModulePath -Child $count -ThreadCount $ThreadCount
    $json | Select-Object -Last 1 | ConvertFrom-Json
}
$memory | Format-Table -AutoSize | Out-Host
"Peak memory: {0:N0} MB on {1} samples, {2:N0} MB on {3} samples ({4:+0.0;-0.0}%)" -f $memory[0].PeakMB, $SmallCount, $memory[1].PeakMB, $LargeCount,
    (100 * ($memory[1].PeakMB / $memory[0].PeakMB - 1)) | Out-Host
[ordered]@{ PlainSeconds = $plainS; CalibrationSeconds = $calibS; Memory = $memory } | ConvertTo-Json -Depth 3 |
    Set-Content (Join-Path $root 'out/bench/calibration-cost.json')
