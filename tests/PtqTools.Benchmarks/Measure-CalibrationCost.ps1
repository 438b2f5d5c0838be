<#
.SYNOPSIS
    Calibration cost and memory, run by build.ps1 -Task Bench (figures go to docs/benchmarks.md):
    1. Wall time of Measure-ActivationRange (all tensors, every method from one pass) beside plain fp32 ONNX Runtime
       inference of the same prepared model over the same samples, same threads, same process; then, per sample and
       interleaved, plain inference, the run with the extra outputs, and run plus observation (where the time goes).
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
# The ONNX classes and protobuf runtime of the module's own load context, by name: the prepared model is one of them.
$null = [PtqTools.Loader.ModuleLoader]::ExposeDependency('Google.Protobuf'), [PtqTools.Loader.ModuleLoader]::ExposeDependency('OnnxSharp')
$prepared = [PtqTools.Core.Onnx.ModelPreparer]::Prepare($ResNet18)
$bytes = [Google.Protobuf.MessageExtensions]::ToByteArray($prepared.Model)
$null = Measure-ActivationRange -Path $ResNet18 -DataSet (New-ResNetDataSet -Split train -Count 2) -ThreadCount $ThreadCount   # warm-up
$plain = @(); $calib = @()
foreach ($round in 1..3) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $runner = [PtqTools.Core.Runtime.OrtRunner]::new($bytes, $ResNet18, $ThreadCount, $null)
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

# 1b. Where the time goes, per sample, interleaved in this process: plain inference, the augmented model (the 34
#     extra outputs) run and read in place, and run plus observation (CalibrationSession.Add). Medians.
$none = [Threading.CancellationToken]::None
$plan = [PtqTools.Core.Quantization.QuantizationPlan]::Create([PtqTools.Core.Onnx.GraphView]::new($prepared.Model.Graph), $null)
$names = [string[]]@($plan.Activations.Keys)
$augmented = $prepared.Model.Clone()
foreach ($t in $names) {
    $type = [Onnx.TypeProto]::new(); $type.TensorType = [Onnx.TypeProto+Types+Tensor]::new(); $type.TensorType.ElemType = 1
    $value = [Onnx.ValueInfoProto]::new(); $value.Name = $t; $value.Type = $type; $augmented.Graph.Output.Add($value)
}
$reader = [PtqTools.Core.Data.SampleReader]::new($data)
$samples = @($reader.Read($none) | Select-Object -First ([math]::Min(20, $CostCount)))
$reader.Dispose()
$plainRunner = [PtqTools.Core.Runtime.OrtRunner]::new($bytes, $ResNet18, $ThreadCount, $null)
$augmentedRunner = [PtqTools.Core.Runtime.OrtRunner]::new([Google.Protobuf.MessageExtensions]::ToByteArray($augmented), $ResNet18, $ThreadCount, $names)
$session = [PtqTools.Core.Calibration.CalibrationSession]::new($prepared, $plan.Activations, $data, $ThreadCount, [PtqTools.Core.Calibration.CalibrationOptions]::new('Auto', $false, 99.99), $null, $null, $none)
$times = @{ Plain = [Collections.Generic.List[double]]::new(); Augmented = [Collections.Generic.List[double]]::new(); Observed = [Collections.Generic.List[double]]::new() }
foreach ($round in 0..2) {
    foreach ($s in $samples) {
        $clock = [Diagnostics.Stopwatch]::StartNew(); $null = $plainRunner.Run($s, $none); $plainMs = $clock.Elapsed.TotalMilliseconds
        $clock.Restart(); $augmentedRunner.RunValues($s, $none).Dispose(); $augmentedMs = $clock.Elapsed.TotalMilliseconds
        $clock.Restart(); $session.Add($s); $observedMs = $clock.Elapsed.TotalMilliseconds
        if ($round -gt 0) { $times.Plain.Add($plainMs); $times.Augmented.Add($augmentedMs); $times.Observed.Add($observedMs) }   # round 0 warms up
    }
}
$clock = [Diagnostics.Stopwatch]::StartNew(); $null = $session.Finish(); $finishS = $clock.Elapsed.TotalSeconds
$session.Dispose(); $plainRunner.Dispose(); $augmentedRunner.Dispose()
$median = { param($list) ($list | Sort-Object)[[int][math]::Floor($list.Count / 2)] }
$profile = [ordered]@{ PlainMs = (& $median $times.Plain); AugmentedMs = (& $median $times.Augmented); ObservedMs = (& $median $times.Observed); FinishSeconds = $finishS; Path = [PtqTools.Core.Calibration.ObserverKernels]::Path }
"Per sample (median, $($samples.Count) samples x 2 rounds): plain {0:N1} ms, with the extra outputs {1:N1} ms, run + observation {2:N1} ms ({3} observer path); range methods at the end {4:N2} s" -f `
    $profile.PlainMs, $profile.AugmentedMs, $profile.ObservedMs, $profile.Path, $profile.FinishSeconds | Out-Host

# 2. Peak memory in fresh processes.
if ($SkipMemory) { return }
$memory = foreach ($count in $SmallCount, $LargeCount) {
    $json = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File $PSCommandPath -ModulePath $ModulePath -Child $count -ThreadCount $ThreadCount
    $json | Select-Object -Last 1 | ConvertFrom-Json
}
$memory | Format-Table -AutoSize | Out-Host
"Peak memory: {0:N0} MB on {1} samples, {2:N0} MB on {3} samples ({4:+0.0;-0.0}%)" -f $memory[0].PeakMB, $SmallCount, $memory[1].PeakMB, $LargeCount,
    (100 * ($memory[1].PeakMB / $memory[0].PeakMB - 1)) | Out-Host
[ordered]@{ PlainSeconds = $plainS; CalibrationSeconds = $calibS; Profile = $profile; Memory = $memory } | ConvertTo-Json -Depth 3 |
    Set-Content (Join-Path $root 'out/bench/calibration-cost.json')
