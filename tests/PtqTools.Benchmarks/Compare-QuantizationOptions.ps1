<#
.SYNOPSIS
    What each accuracy algorithm (cross-layer equalization, bias correction) and each weight/activation type does
    on ResNet18 with Fashion-MNIST: quantizes with each combination and compares the int8 model with fp32 (output
    cosine and SQNR) on held-out test images. The statistics are measured once on the model as it is; -Equalize
    rows calibrate the equalized model themselves (on the same images). The table goes to docs/benchmarks.md.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int] $CalibrationCount = 32,
    [int] $EvaluationCount = 100,
    [int] $ThreadCount = 2
)
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')
$outFolder = Join-Path $root 'out/bench'
$null = New-Item -ItemType Directory -Force $outFolder
Import-Module $ModulePath -Force
. (Join-Path $root 'tests/Pester/TestData.ps1')
$calibration = New-ResNetDataSet -Split train -Count $CalibrationCount
$evaluation = New-ResNetDataSet -Split t10k -Count $EvaluationCount -Skip 1000
$stats = Get-ModelLayer -Path $ResNet18 | Measure-ActivationRange -DataSet $calibration -ThreadCount $ThreadCount
$configs = [ordered]@{
    'per-channel (default)'                      = @{}
    'per-channel, -BiasCorrection'               = @{ BiasCorrection = $true }
    'per-channel, -Equalize'                     = @{ Equalize = $true }
    'per-channel, -Equalize -BiasCorrection'     = @{ Equalize = $true; BiasCorrection = $true }
    'per-tensor'                                 = @{ PerTensor = $true }
    'per-tensor, -BiasCorrection'                = @{ PerTensor = $true; BiasCorrection = $true }
    'per-tensor, -Equalize'                      = @{ PerTensor = $true; Equalize = $true }
    'per-tensor, -Equalize -BiasCorrection'      = @{ PerTensor = $true; Equalize = $true; BiasCorrection = $true }
    'per-channel, -ReduceRange (7-bit weights)'  = @{ ReduceRange = $true }
    'per-tensor uint8 asymmetric weights'        = @{ PerTensor = $true; WeightType = 'UInt8'; WeightSymmetry = 'Asymmetric' }
    'per-channel, -ActivationType UInt16'        = @{ ActivationType = 'UInt16' }
    'per-channel, -ActivationType Int16 -SymmetricActivation' = @{ ActivationType = 'Int16'; SymmetricActivation = $true }
}
$i = 0
$rows = foreach ($name in $configs.Keys) {
    $options = $configs[$name]
    $path = Join-Path $outFolder "resnet18.options$($i++).onnx"
    $result = if ($options.Equalize) {
        Invoke-Quantization -Path $ResNet18 -DataSet $calibration -ThreadCount $ThreadCount -OutputPath $path -Force @options
    } else {
        $stats | Invoke-Quantization -OutputPath $path -Force @options
    }
    $report = $result | Test-QuantizedModel -DataSet $evaluation -ThreadCount $ThreadCount -LatencyRuns 1
    [pscustomobject]@{
        Options = $name
        Cosine = [math]::Round($report.Cosine, 5)
        MinCosine = [math]::Round($report.Outputs[0].MinCosine, 4)
        SqnrDb = [math]::Round($report.SqnrDb, 2)
        SizeRatio = $result.SizeRatio
    }
}
"ResNet18, Fashion-MNIST: calibration $CalibrationCount train images, evaluation $EvaluationCount test images (QDQ vs fp32, first output)" | Out-Host
$rows | Format-Table -AutoSize | Out-Host
$rows | ConvertTo-Json | Set-Content (Join-Path $outFolder 'quantization-options.json')
