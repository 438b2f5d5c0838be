<#
.SYNOPSIS
    Writes one quantized model per case of the written-bytes matrix with the module given, into -OutputFolder, and
    a cases.json naming each case's file. Run once with the module at the baseline commit and once with the module
    under test, each in its own pwsh; WrittenBytes.Tests.ps1 compares the two folders byte for byte.
.DESCRIPTION
    The cases use only parameters the baseline has. Every run on one host sees the same floats (calibration runs ONNX
    Runtime on this host), so both modules must write the same bytes; ThreadCount 1 keeps the calibration's order
    fixed. The inputs (-InputFolder) are written once by the test and read by both runs.
#>
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string] $InputFolder,
    [Parameter(Mandatory)] [string] $OutputFolder
)
$ErrorActionPreference = 'Stop'
$WarningPreference = 'SilentlyContinue'
$ProgressPreference = 'SilentlyContinue'
Import-Module $ModulePath -Force
$null = New-Item -ItemType Directory -Force $OutputFolder

$cases = [ordered]@{}
function Write-Case([string] $Name, [scriptblock] $Script) {
    $path = Join-Path $OutputFolder "$Name.onnx"
    try {
        $null = & $Script $path
        $cases[$Name] = if (Test-Path $path) { "$Name.onnx" } else { 'no file written' }
    } catch {
        $cases[$Name] = "error: $($_.FullyQualifiedErrorId): $($_.Exception.Message)"
    }
}

$in = $InputFolder
# Image CNN with 20 images (2 held out by the fidelity guard).
$cnn = Join-Path $in 'tiny.onnx'
$images = New-PtqDataSet (Join-Path $in 'images') -Resize 16
$stats = Get-ModelLayer $cnn | Measure-ActivationRange -DataSet $images -ThreadCount 1
$entropy = Get-ModelLayer $cnn | Measure-ActivationRange -DataSet $images -ThreadCount 1 -Method Entropy
$percentile = Get-ModelLayer $cnn | Measure-ActivationRange -DataSet $images -ThreadCount 1 -Method Percentile -Percentile 99.9
Write-Case 'cnn-default' { param($o) Invoke-Quantization -Path $cnn -DataSet $images -OutputPath $o -ThreadCount 1 }
Write-Case 'cnn-pipeline' { param($o) $stats | Invoke-Quantization -OutputPath $o -SkipFidelityCheck }
foreach ($t in 'Portable', 'Avx2', 'Avx512', 'Vnni', 'Amx') {
    Write-Case "cnn-target-$t" { param($o) $stats | Invoke-Quantization -OutputPath $o -Target $t -SkipFidelityCheck }
}
Write-Case 'cnn-avx2-fix-none' { param($o) $stats | Invoke-Quantization -OutputPath $o -Target Avx2 -OverflowFix None -SkipFidelityCheck }
Write-Case 'cnn-avx2-reduce' { param($o) $stats | Invoke-Quantization -OutputPath $o -Target Avx2 -ReduceRange -SkipFidelityCheck }
Write-Case 'cnn-pertensor' { param($o) $stats | Invoke-Quantization -OutputPath $o -PerTensor -SkipFidelityCheck }
Write-Case 'cnn-qoperator' { param($o) $stats | Invoke-Quantization -OutputPath $o -Format QOperator -SkipFidelityCheck }
Write-Case 'cnn-int8-symmetric' { param($o) $stats | Invoke-Quantization -OutputPath $o -ActivationType Int8 -SymmetricActivation -SkipFidelityCheck }
Write-Case 'cnn-uint16' { param($o) $stats | Invoke-Quantization -OutputPath $o -ActivationType UInt16 -SkipFidelityCheck }
Write-Case 'cnn-convkernel' { param($o) $stats | Invoke-Quantization -OutputPath $o -ConvKernel Symmetric -SkipFidelityCheck }
Write-Case 'cnn-exclude' { param($o) $stats | Invoke-Quantization -OutputPath $o -Exclude conv2 -SkipFidelityCheck }
Write-Case 'cnn-override' { param($o) $stats | Invoke-Quantization -OutputPath $o -TensorOverride @{ r1 = @{ Type = 'UInt16' } } -SkipFidelityCheck }
Write-Case 'cnn-entropy' { param($o) $entropy | Invoke-Quantization -OutputPath $o -SkipFidelityCheck }
Write-Case 'cnn-percentile' { param($o) $percentile | Invoke-Quantization -OutputPath $o -SkipFidelityCheck }
Write-Case 'cnn-equalize' { param($o) Invoke-Quantization -Path $cnn -DataSet $images -OutputPath $o -Equalize -ThreadCount 1 -SkipFidelityCheck }
Write-Case 'cnn-biascorrection' { param($o) Invoke-Quantization -Path $cnn -DataSet $images -OutputPath $o -BiasCorrection -ThreadCount 1 -SkipFidelityCheck }
Write-Case 'cnn-norules' { param($o) $stats | Invoke-Quantization -OutputPath $o -SkipRule '*' -SkipFidelityCheck }

# MiniLM (real) with 8 sentences.
$minilm = Join-Path $in 'all-MiniLM-L6-v2.onnx'
$text = New-PtqDataSet -Path (Join-Path $in 'sentences.txt') -VocabPath (Join-Path $in 'vocab.txt') -MaxSequenceLength 32
Write-Case 'minilm-static' { param($o) Invoke-Quantization -Path $minilm -DataSet $text -OutputPath $o -ThreadCount 1 -SkipFidelityCheck }
Write-Case 'minilm-static-avx2' { param($o) Invoke-Quantization -Path $minilm -DataSet $text -OutputPath $o -ThreadCount 1 -Target Avx2 -SkipFidelityCheck }
Write-Case 'minilm-qoperator' { param($o) Invoke-Quantization -Path $minilm -DataSet $text -OutputPath $o -ThreadCount 1 -Format QOperator -SkipRule '*' -SkipFidelityCheck }
Write-Case 'minilm-dynamic' { param($o) Invoke-Quantization -Path $minilm -Mode Dynamic -OutputPath $o }
Write-Case 'minilm-dynamic-avx2' { param($o) Invoke-Quantization -Path $minilm -Mode Dynamic -Target Avx2 -OutputPath $o }
Write-Case 'minilm-weight8' { param($o) Invoke-Quantization -Path $minilm -Mode WeightOnly -OutputPath $o }
Write-Case 'minilm-int4' { param($o) Invoke-Quantization -Path $minilm -Mode WeightOnly -WeightBits 4 -BlockSize 64 -OutputPath $o }
Write-Case 'minilm-int4-hqq' { param($o) Invoke-Quantization -Path $minilm -Mode WeightOnly -WeightBits 4 -WeightMethod HQQ -OutputPath $o }
Write-Case 'minilm-int4-gptq' { param($o) Invoke-Quantization -Path $minilm -Mode WeightOnly -WeightBits 4 -WeightMethod GPTQ -DataSet $text -ThreadCount 1 -OutputPath $o }
Write-Case 'minilm-smoothquant' { param($o) Invoke-Quantization -Path $minilm -Mode Dynamic -SmoothQuant 0.5 -DataSet $text -ThreadCount 1 -OutputPath $o }
Write-Case 'minilm-outliers' { param($o) Invoke-Quantization -Path $minilm -Mode Dynamic -OutlierThreshold 6 -DataSet $text -ThreadCount 1 -OutputPath $o }

# ResNet18 (real) with 6 images of the repository's Fashion-MNIST sample.
$resnetData = New-PtqDataSet -Path (Join-Path $in 'fashion/t10k-images-idx3-ubyte.gz') -Resize 224 -Scale 1 -PreprocessModel (Join-Path $in 'ResNetPreprocess.onnx') -MaxSamples 6
$resnet = Join-Path $in 'ResNet18.onnx'
$resnetStats = Get-ModelLayer $resnet | Measure-ActivationRange -DataSet $resnetData -ThreadCount 1
Write-Case 'resnet18-portable' { param($o) $resnetStats | Invoke-Quantization -OutputPath $o -SkipFidelityCheck }
Write-Case 'resnet18-avx2' { param($o) $resnetStats | Invoke-Quantization -OutputPath $o -Target Avx2 -SkipFidelityCheck }
Write-Case 'resnet18-qoperator' { param($o) $resnetStats | Invoke-Quantization -OutputPath $o -Format QOperator -Target Vnni -SkipFidelityCheck }

# The architecture models of issue 17 (tests/PtqTools.TestModels), each with its own calibration samples and the
# default pipeline (rules and fidelity guard on). Their dynamic mode is not a case: the CNNs have no MatMul to
# quantize dynamically, and bert11's dynamic model is invalid at opset 11 on the baseline (a per-axis Gather table).
foreach ($kind in 'bert11', 'crnn', 'textdir', 'vad', 'dbnet') {
    $model = Join-Path $in "$kind/model.onnx"
    $data = New-PtqDataSet -Path (Join-Path $in "$kind/calibration") -MaxSamples 20
    # A budget the guard's search does not run out of (bert11's takes about 30 s on a quiet 2-core machine): a search
    # cut by its budget writes what it found so far, which depends on the machine's speed, not only on the options.
    Write-Case "$kind-default" { param($o) Invoke-Quantization -Path $model -DataSet $data -OutputPath $o -ThreadCount 1 -TimeBudget ([TimeSpan]::FromMinutes(10)) }
}
$cases | ConvertTo-Json | Set-Content -Path (Join-Path $OutputFolder 'cases.json')
