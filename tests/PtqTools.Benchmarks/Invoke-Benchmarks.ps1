<#
.SYNOPSIS
    Benchmarks run by build.ps1 -Task Bench: ResNet18 fp32 vs int8 latency in ONNX Runtime (both models in the same
    process and run), calibration cost, and module import time. Prints a table and writes out/bench/results.json.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int[]] $ThreadCounts = @(1, 2),
    [int] $Rounds = 3,
    [int] $RunsPerRound = 100
)
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')
$outFolder = Join-Path $root 'out/bench'
$null = New-Item -ItemType Directory -Force $outFolder

# Import time, in fresh processes (median of 5).
# pwsh from the local tool runs as 'dotnet pwsh.dll'.
$importMs = 1..5 | ForEach-Object {
    [double](& dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -Command "(Measure-Command { Import-Module '$ModulePath' }).TotalMilliseconds")
} | Sort-Object | Select-Object -Index 2

Import-Module $ModulePath -Force
. (Join-Path $root 'tests/Pester/TestData.ps1')
$calibration = New-ResNetDataSet -Split train -Count 100
$timing = New-ResNetDataSet -Split t10k -Count 1

$clock = [Diagnostics.Stopwatch]::StartNew()
$stats = Get-ModelLayer $ResNet18 | Measure-ActivationRange -DataSet $calibration -ThreadCount 2
$calibrationSeconds = $clock.Elapsed.TotalSeconds
$result = $stats | Invoke-Quantization -OutputPath (Join-Path $outFolder 'resnet18.int8.onnx') -Force
$qoperator = $stats | Invoke-Quantization -Format QOperator -OutputPath (Join-Path $outFolder 'resnet18.qop.onnx') -Force
# The same weights encoded for ONNX Runtime's symmetric convolution kernel (zero point 0): what -ConvKernel Auto
# writes on a CPU without AMX-INT8, timed here beside the default for comparison.
$symmetric = $stats | Invoke-Quantization -ConvKernel Symmetric -OutputPath (Join-Path $outFolder 'resnet18.int8.symconv.onnx') -Force

$rows = foreach ($threads in $ThreadCounts) {
    $reports = 1..$Rounds | ForEach-Object { $result | Test-QuantizedModel -DataSet $timing -ThreadCount $threads -LatencyRuns $RunsPerRound }
    $fp32 = ($reports.FloatLatencyMs | Sort-Object)[[int][math]::Floor($Rounds / 2)]
    $int8 = ($reports.QuantizedLatencyMs | Sort-Object)[[int][math]::Floor($Rounds / 2)]
    # QOperator in the same rounds: fp32 is timed again beside it and the QDQ figures are from the same process.
    $qop = 1..$Rounds | ForEach-Object { $qoperator | Test-QuantizedModel -DataSet $timing -ThreadCount $threads -LatencyRuns $RunsPerRound }
    $qopMs = ($qop.QuantizedLatencyMs | Sort-Object)[[int][math]::Floor($Rounds / 2)]
    $sym = 1..$Rounds | ForEach-Object { $symmetric | Test-QuantizedModel -DataSet $timing -ThreadCount $threads -LatencyRuns $RunsPerRound }
    $symMs = ($sym.QuantizedLatencyMs | Sort-Object)[[int][math]::Floor($Rounds / 2)]
    [pscustomobject]@{
        Model = 'ResNet18 b1'
        Threads = $threads
        'fp32 ms (ORT)' = [math]::Round($fp32, 2)
        'int8 ms (PtqTools QDQ, ORT)' = [math]::Round($int8, 2)
        Speedup = [math]::Round($fp32 / $int8, 2)
        'int8 ms (QOperator)' = [math]::Round($qopMs, 2)
        'QOperator speedup' = [math]::Round($fp32 / $qopMs, 2)
        'QOperator cosine' = [math]::Round(($qop.Cosine | Measure-Object -Minimum).Minimum, 4)
        'int8 ms (-ConvKernel Symmetric)' = [math]::Round($symMs, 2)
        'Symmetric speedup' = [math]::Round($fp32 / $symMs, 2)
    }
}
$rows | Format-Table -AutoSize | Out-Host

# all-MiniLM-L6-v2: fp32 vs dynamic and weight-only models, in this same process (sessions interleaved per round).
$miniLm = & (Join-Path $PSScriptRoot 'Invoke-MiniLmBenchmark.ps1') -ModulePath $ModulePath -OutputFolder (Join-Path $outFolder 'minilm') -Rounds $Rounds
$miniLm | Format-Table -AutoSize | Out-String -Width 200 | Out-Host
$summary = [ordered]@{
    Date = (Get-Date).ToString('u')
    Cpu = ((Get-Content /proc/cpuinfo | Select-String 'model name' | Select-Object -First 1) -replace '.*:\s*', '')
    OnnxRuntime = '1.31.1'
    Latency = $rows
    CalibrationImages = $calibration.Count
    CalibrationSeconds = [math]::Round($calibrationSeconds, 2)
    CalibrationImagesPerSecond = [math]::Round($calibration.Count / $calibrationSeconds, 1)
    SizeRatio = $result.SizeRatio
    ConvKernel = ($result.Options -split ';' | Where-Object { $_ -like 'conv-kernel=*' }) -replace 'conv-kernel=', ''
    QOperatorSizeRatio = $qoperator.SizeRatio
    ImportModuleMs = [math]::Round($importMs, 1)
    MiniLm = $miniLm
}
"Calibration: {0} images in {1:N1} s ({2:N1} images/s, all tensors, 2 threads); int8 size {3:P1} of fp32; Import-Module {4:N0} ms" -f
    $summary.CalibrationImages, $summary.CalibrationSeconds, $summary.CalibrationImagesPerSecond, $summary.SizeRatio, $summary.ImportModuleMs | Out-Host

# The PtqTools integer engine on the same int8 model: parity with ONNX Runtime over 100 images (in steps of the
# output's quantization scale) and one-thread latency side by side (median of the per-sample times, same run).
$parityData = New-ResNetDataSet -Split t10k -Count 100 -Skip 200
$int8Path = Join-Path $outFolder 'resnet18.int8.onnx'
$ortRuns = @(Invoke-ModelInference -Path $int8Path -DataSet $parityData -Engine OnnxRuntime -ThreadCount 1)
$ownRuns = @(Invoke-ModelInference -Path $int8Path -DataSet $parityData -Engine PtqTools -ThreadCount 1)
$elements = 0; $within = 0; $identical = 0
foreach ($i in 0..($ortRuns.Count - 1)) {
    $a = [float[]]$ortRuns[$i].Outputs[0]; $b = [float[]]$ownRuns[$i].Outputs[0]
    $sorted = [float[]]($a | Sort-Object -Unique)
    $step = [double]::MaxValue
    for ($k = 1; $k -lt $sorted.Count; $k++) { $step = [Math]::Min($step, $sorted[$k] - $sorted[$k - 1]) }
    for ($k = 0; $k -lt $a.Count; $k++) {
        $d = [Math]::Abs($a[$k] - $b[$k]) / $step
        $elements++
        if ($d -le 1.001) { $within++ }
        if ($d -lt 0.001) { $identical++ }
    }
}
$median = { param($xs) ($xs | Sort-Object)[[int][math]::Floor($xs.Count / 2)] }
$engine = [ordered]@{
    Images = $ortRuns.Count
    WithinOneStep = [math]::Round($within / $elements, 5)
    Identical = [math]::Round($identical / $elements, 5)
    OrtInt8Ms = [math]::Round((& $median ($ortRuns | Select-Object -Skip 5).Milliseconds), 2)
    PtqToolsInt8Ms = [math]::Round((& $median ($ownRuns | Select-Object -Skip 5).Milliseconds), 2)
    KernelPath = $ownRuns[0].KernelPath
}
"PtqTools engine vs ONNX Runtime, int8 ResNet18, {0} images: {1:P2} of outputs within 1 step ({2:P2} identical); 1 thread: ORT {3} ms, PtqTools {4} ms ({5})" -f
    $engine.Images, $engine.WithinOneStep, $engine.Identical, $engine.OrtInt8Ms, $engine.PtqToolsInt8Ms, $engine.KernelPath | Out-Host
$summary.Engine = $engine
$summary | ConvertTo-Json -Depth 4 | Set-Content (Join-Path $outFolder 'results.json')
