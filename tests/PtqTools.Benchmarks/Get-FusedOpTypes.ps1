<#
.SYNOPSIS
    What ONNX Runtime makes of the models PtqTools writes: quantizes ResNet18 (QDQ and QOperator, from 8 calibration
    images) and MiniLM (Dynamic, WeightOnly int8), loads each with ORT_ENABLE_ALL at one thread, saves the optimized graph through
    SessionOptions.OptimizedModelFilePath and prints its op types with counts, next to the fp32 model's.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-fused')
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
# ONNX Runtime's managed API as the module loads it (its own load context, its natives): reachable by name here.
$null = [PtqTools.Loader.ModuleLoader]::ExposeDependency('Microsoft.ML.OnnxRuntime')
. (Join-Path $PSScriptRoot '../Pester/TestData.ps1')
. (Join-Path $PSScriptRoot '../Pester/MiniLm.ps1')
$null = New-Item -ItemType Directory -Force $OutputFolder
$stats = Get-ModelLayer -Path $ResNet18 | Measure-ActivationRange -DataSet (New-ResNetDataSet -Split train -Count 8)
$miniLm = Get-MiniLmModel $OutputFolder
$models = [ordered]@{
    'ResNet18 fp32' = $ResNet18
    'ResNet18 QDQ' = ($stats | Invoke-Quantization -OutputPath (Join-Path $OutputFolder 'resnet18.qdq.onnx') -Force).OutputPath
    'ResNet18 QOperator' = ($stats | Invoke-Quantization -Format QOperator -OutputPath (Join-Path $OutputFolder 'resnet18.qop.onnx') -Force).OutputPath
    'MiniLM fp32' = $miniLm
    'MiniLM Dynamic' = (Invoke-Quantization -Path $miniLm -Mode Dynamic -OutputPath (Join-Path $OutputFolder 'minilm.dynamic.onnx') -Force).OutputPath
    'MiniLM WeightOnly int8' = (Invoke-Quantization -Path $miniLm -Mode WeightOnly -OutputPath (Join-Path $OutputFolder 'minilm.w8.onnx') -Force).OutputPath
}
foreach ($name in $models.Keys) {
    $optimized = Join-Path $OutputFolder "$($name -replace ' ', '-').optimized.onnx"
    $options = [Microsoft.ML.OnnxRuntime.SessionOptions]::new()
    $options.GraphOptimizationLevel = 'ORT_ENABLE_ALL'
    $options.IntraOpNumThreads = 1
    $options.LogSeverityLevel = 'ORT_LOGGING_LEVEL_ERROR'
    $options.OptimizedModelFilePath = $optimized
    try { ([Microsoft.ML.OnnxRuntime.InferenceSession]::new($models[$name], $options)).Dispose() } finally { $options.Dispose() }
    [pscustomobject]@{ Model = $name; OpTypes = (Get-OnnxModel $optimized).OpTypes -join ', ' }
}
