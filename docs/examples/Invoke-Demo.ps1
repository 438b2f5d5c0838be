<#
.SYNOPSIS
    The PtqTools demo: quantizes the pretrained ResNet18 to int8 and reports what an analyst needs.
.DESCRIPTION
    Calibrates on Fashion-MNIST training images and evaluates on test images the calibration never saw, with the
    images prepared the way ResNet18 expects (RGB pixels 0..255 at 224x224 minus the model's mean image, through the
    package's own preprocessing graph). Prints the model sizes, the fidelity of the int8 model against fp32, and
    fp32 vs int8 latency in ONNX Runtime at one thread, and the task accuracy: leave-one-out kNN classification
    (k = 5, cosine) of the evaluation images on ResNet18's 512 features, fp32 vs int8, with the paired 95% interval
    of the difference. `build.ps1 -Task Accuracy` runs it on 5,000 test images (docs/benchmarks.md).
.EXAMPLE
    dotnet tool restore && dotnet pwsh ./build.ps1 -Task Demo
#>
[CmdletBinding()]
param(
    [string] $ModulePath = 'PtqTools',
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptqtools-demo'),
    [int] $CalibrationImages = 100,
    [int] $EvaluationImages = 200,
    [int] $ThreadCount = 1,
    [int] $LatencyRuns = 50
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath -Force
$null = New-Item -ItemType Directory -Force $OutputFolder

$nugetRoot = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path $HOME '.nuget/packages' }
$models = Join-Path $nugetRoot 'microsoft.ml.dnnimagefeaturizer.resnet18/0.23.1/tools/DnnImageModels'
$resnet = Join-Path $models 'ResNet18Onnx/ResNet18.onnx'
$preprocess = Join-Path $models 'ResNetPrepOnnx/ResNetPreprocess.onnx'
$fashion = '/usr/share/datasets/fashion-mnist'
if (-not (Test-Path "$fashion/t10k-images-idx3-ubyte.gz")) {
    $fashion = Join-Path $PSScriptRoot '../../tests/data/fashion-mnist-sample'
    Write-Warning "Debian's dataset-fashion-mnist is not installed; using the 200-image sample in the repository."
}

Write-Host "`n== The float model" -ForegroundColor Cyan
$float = Get-OnnxModel $resnet
$float | Format-List Name, Producer, IrVersion, Opset, Inputs, Outputs, ParameterCount, SizeBytes | Out-Host

Write-Host "== Data: Fashion-MNIST, prepared as ResNet18 expects" -ForegroundColor Cyan
$prep = @{ Resize = 224; Scale = 1; PreprocessModel = $preprocess }
$calibration = New-PtqDataSet "$fashion/train-images-idx3-ubyte.gz" @prep -MaxSamples $CalibrationImages
$evaluation = New-PtqDataSet "$fashion/t10k-images-idx3-ubyte.gz" @prep -MaxSamples $EvaluationImages
$calibration, $evaluation | Format-Table Kind, Name, Count, @{ n = 'SampleShape'; e = { $_.SampleShape -join 'x' } } | Out-Host

Write-Host "== Calibrate, quantize (static QDQ, int8 per-channel weights, uint8 activations)" -ForegroundColor Cyan
$target = Join-Path $OutputFolder 'resnet18.int8.onnx'
$clock = [Diagnostics.Stopwatch]::StartNew()
$stats = Get-ModelLayer $resnet | Where-Object Quantizable | Measure-ActivationRange -DataSet $calibration
$calibrationTime = $clock.Elapsed.TotalSeconds
# Written for this machine's CPU class (-Target Host, resolved and recorded in the model): the demo measures speed
# here. The default, -Target Portable, writes a model that is right on every CPU class.
$result = $stats | Invoke-Quantization -OutputPath $target -Target Host -DataSet $calibration -Force
Write-Host ("{0} tensors calibrated on {1} of the {2} images (every 10th is held out for the fidelity check) in {3:N1} s; {4} layers quantized, {5} Relu folded into them, {6} kept in float; written to {7}" -f
    $stats.Count, $stats[0].SampleCount, $calibration.Count, $calibrationTime, $result.QuantizedLayerCount, $result.FoldedLayerCount, $result.FloatLayerCount, $result.OutputPath)
Write-Host ("Fidelity check: {0}" -f $result.Fidelity.Summary)
Write-Host ("Target: {0} (this host: {1}); {2} layers made pair-safe for CPUs without VNNI. {3}" -f
    $result.Target, $result.HostClass, $result.PairSafeLayers.Count, $result.HostCheck.Summary)

Write-Host "`n== Evaluate on $($evaluation.Count) images the calibration never saw" -ForegroundColor Cyan
# The task: classify each evaluation image by its 5 nearest neighbours (cosine) among the others, on the features.
$knn = { param($Outputs, $Labels) [PtqTools.Core.Evaluation.TaskMetrics]::KnnCorrect($Outputs, $Labels, 5) }
$clock.Restart()
$report = $result | Test-QuantizedModel -DataSet $evaluation -ThreadCount $ThreadCount -LatencyRuns $LatencyRuns -Metric $knn -MetricName 'kNN-5 accuracy'
$evaluationTime = $clock.Elapsed.TotalSeconds
$report | Export-Clixml (Join-Path $OutputFolder 'report.clixml')

$rows = @(
    [pscustomobject]@{ Measure = 'File size (MB)'; Fp32 = '{0:N1}' -f ($report.FloatSizeBytes / 1MB); Int8 = '{0:N1}' -f ($report.QuantizedSizeBytes / 1MB); Result = '{0:P1} of fp32' -f $report.SizeRatio }
    [pscustomobject]@{ Measure = "Latency, $ThreadCount thread(s) (ms, median)"; Fp32 = '{0:N2}' -f $report.FloatLatencyMs; Int8 = '{0:N2}' -f $report.QuantizedLatencyMs
        Result = if ($report.Speedup -ge 1.1) { '{0:N2}x faster' -f $report.Speedup } else { '{0:N2}x: no faster on this CPU (see below)' -f $report.Speedup } }
    [pscustomobject]@{ Measure = 'Output cosine vs fp32 (mean)'; Fp32 = ''; Int8 = '{0:N4}' -f $report.Cosine; Result = "min {0:N4} over {1} images" -f $report.Outputs[0].MinCosine, $report.SampleCount }
    [pscustomobject]@{ Measure = 'Output SQNR (dB)'; Fp32 = ''; Int8 = '{0:N1}' -f $report.SqnrDb; Result = 'max abs error {0:N3}' -f $report.MaxAbsError }
    [pscustomobject]@{ Measure = "kNN-5 accuracy, $($report.SampleCount) images (%)"; Fp32 = '{0:N2}' -f (100 * $report.FloatMetric); Int8 = '{0:N2}' -f (100 * $report.QuantizedMetric)
        Result = 'drop {0:N2} points, 95% CI [{1:N2}, {2:N2}], McNemar p = {3:N3}' -f (100 * $report.MetricDrop.Drop), (100 * $report.MetricDrop.DropLow), (100 * $report.MetricDrop.DropHigh), $report.MetricDrop.McNemarPValue }
)
$rows | Format-Table -AutoSize -Wrap | Out-Host
if ($report.Speedup -lt 1.1) {
    # Not a bare 0.99x: on CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's int8 kernels multiply with
    # vpmaddubsw and run at about its fp32 rate (37-38 GOPS both, measured on such a CPU); the model is still a quarter
    # of the size, and on a CPU with VNNI, AMX or ARM64 dot products the same file runs several times faster.
    Write-Warning ("ONNX Runtime's int8 kernels are no faster than its fp32 kernels on this CPU ({0}): the int8 model runs at {1:N2}x fp32 here. Its gain here is size ({2:P1} of fp32); on a CPU with VNNI or AMX it runs several times faster than fp32." -f
        $result.HostClass, $report.Speedup, $report.SizeRatio)
}
Write-Host "Task accuracy: $($report.MetricDrop)"
Write-Host ("Evaluation of {0} images (both models, {1} thread(s)) took {2:N0} s; {3} images the int8 model alone classifies right, {4} the fp32 model alone." -f
    $report.SampleCount, $ThreadCount, $evaluationTime, $report.MetricDrop.QuantizedOnly, $report.MetricDrop.FloatOnly)
$report | ConvertTo-Json -Depth 4 | Set-Content (Join-Path $OutputFolder 'report.json')
# The HTML report: summary, per-layer SQNR (8 evaluation images) and the activation ranges, charts embedded.
$layerErrors = $stats | Measure-LayerError -DataSet (New-PtqDataSet "$fashion/t10k-images-idx3-ubyte.gz" @prep -MaxSamples 8) -ThreadCount ([Environment]::ProcessorCount)
$html = @($result; $report; $layerErrors; $stats) | Export-QuantizationReport (Join-Path $OutputFolder 'report.html') -Force
Write-Host "Worst layer by itself: $($layerErrors[0].Layer) ($($layerErrors[0].OpType), isolated SQNR $($layerErrors[0].IsolatedSqnrDb) dB). HTML report: $($html.FullName)"
$ok = $report.Cosine -ge 0.99 -and $report.SizeRatio -le 0.26
Write-Host ("Verdict: {0}" -f $(if ($ok) { 'int8 model is within the fidelity goal (cosine >= 0.99) at <= 26% of the size.' } else { 'int8 model MISSES the goal.' }))
if (-not $ok) { exit 1 }
