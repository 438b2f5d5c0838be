<#
.SYNOPSIS
    The fixes for CPUs whose u8 x s8 pair sums saturate at int16 (x86-64 without VNNI), side by side on ResNet18
    (static) and MiniLM (dynamic): the per-channel fix (-OverflowFix Channels, the default), 7-bit weights on the
    layers at risk (-OverflowFix ReduceRange), ONNX Runtime's reduce_range on every layer (-ReduceRange), NNCF's
    first-layer-only fix (-OverflowFix FirstLayer), and no fix (full-range weights, -Target Vnni).
.DESCRIPTION
    Fidelity is measured as each CPU class computes the model: "AVX2" through the engine's emulation of ONNX
    Runtime's saturating kernels (Test-QuantizedModel -Target Avx2, held bit for bit to ONNX Runtime on a real AVX2
    CPU by GroundTruthTests), "exact" as VNNI, AMX and ARM64 compute it (-Target Vnni). Latency is ONNX Runtime's on
    this machine, fp32 and int8 in the same process; on an AVX2 CPU every variant runs the same int8 kernels. The
    table goes to docs/benchmarks.md with the host class this ran on.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int] $CalibrationCount = 32,
    [int] $EvaluationCount = 100,
    [int] $Sentences = 24,
    [int] $LatencyRuns = 50
)
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')
$outFolder = Join-Path $root 'out/bench/overflow'
$null = New-Item -ItemType Directory -Force $outFolder
Import-Module $ModulePath -Force
. (Join-Path $root 'tests/Pester/TestData.ps1')
. (Join-Path $root 'tests/Pester/MiniLm.ps1')
$hostClass = [PtqTools.Core.Quantization.QuantTargets]::HostClass

$variants = [ordered]@{
    'no fix (full-range weights, -Target Vnni)'            = @{ Target = 'Vnni' }
    'per channel (-OverflowFix Channels, default)'         = @{ Target = 'Avx2' }
    '7-bit on layers at risk (-OverflowFix ReduceRange)'   = @{ Target = 'Avx2'; OverflowFix = 'ReduceRange' }
    'reduce_range on every layer (-ReduceRange)'           = @{ Target = 'Avx2'; ReduceRange = $true }
    'first layer only, as NNCF (-OverflowFix FirstLayer)'  = @{ Target = 'Avx2'; OverflowFix = 'FirstLayer' }
}

function Measure-Variant($Result, $Data, [string] $Model, [string] $Name, [int] $Runs) {
    $avx2 = $Result | Test-QuantizedModel -DataSet $Data -Target Avx2 -LatencyRuns 0
    $exact = $Result | Test-QuantizedModel -DataSet $Data -Target Vnni -LatencyRuns 0
    $ort = $Result | Test-QuantizedModel -DataSet $Data -LatencyRuns $Runs
    [pscustomobject]@{
        Model = $Model; Variant = $Name
        'layers fixed' = @($Result.PairSafeLayers).Count; 'layers at risk' = @($Result.OverflowLayers).Count
        'AVX2 cosine' = [math]::Round($avx2.Cosine, 4); 'AVX2 min' = [math]::Round($avx2.Outputs[0].MinCosine, 4); 'AVX2 SQNR dB' = [math]::Round($avx2.SqnrDb, 2)
        'exact cosine' = [math]::Round($exact.Cosine, 4); 'exact SQNR dB' = [math]::Round($exact.SqnrDb, 2)
        'speedup here' = if ($Runs -gt 0) { [math]::Round($ort.Speedup, 2) } else { $null }
        'size %' = [math]::Round(100 * $Result.SizeRatio, 2)
    }
}

# ResNet18, static QDQ, Fashion-MNIST prepared as the model expects.
$calibration = New-ResNetDataSet -Split train -Count $CalibrationCount
$evaluation = New-ResNetDataSet -Split t10k -Count $EvaluationCount -Skip 1000
$stats = Get-ModelLayer -Path $ResNet18 | Measure-ActivationRange -DataSet $calibration
$rows = foreach ($name in $variants.Keys) {
    $options = $variants[$name]
    $r = $stats | Invoke-Quantization -OutputPath (Join-Path $outFolder ("resnet18-{0}.onnx" -f ($name -replace '\W', ''))) -SkipHostCheck -Force -WarningAction SilentlyContinue @options
    Measure-Variant $r $evaluation 'ResNet18 (static)' $name $LatencyRuns
}

# MiniLM, dynamic: the first sentences of a licence text, tokenized with the model's vocabulary.
$miniLm = Get-MiniLmModel $outFolder
$text = Join-Path $outFolder 'sentences.txt'
[IO.File]::WriteAllLines($text, [string[]](Get-LicenceSentences $Sentences))
$sentenceData = New-PtqDataSet -Path $text -VocabPath (Join-Path $outFolder 'vocab.txt')
$rows += foreach ($name in $variants.Keys) {
    $options = $variants[$name]
    $r = Invoke-Quantization -Path $miniLm -Mode Dynamic -OutputPath (Join-Path $outFolder ("minilm-{0}.onnx" -f ($name -replace '\W', ''))) -SkipHostCheck -Force -WarningAction SilentlyContinue @options
    Measure-Variant $r $sentenceData 'MiniLM (dynamic)' $name $LatencyRuns
}
$rows | Format-Table -AutoSize | Out-String -Width 250 | Out-Host
"Host class: $hostClass; ONNX Runtime 1.31.1; $(Get-Date -Format u)" | Out-Host
$rows | ConvertTo-Json | Set-Content (Join-Path $outFolder 'results.json')
$rows
