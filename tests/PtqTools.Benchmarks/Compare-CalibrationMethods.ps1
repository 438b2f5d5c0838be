<#
.SYNOPSIS
    Accuracy of each calibration method on ResNet18 with Fashion-MNIST: calibrates once (every method's range comes
    from the same pass), re-selects each method with Merge-ActivationRange -Method, quantizes, and compares the int8
    model with fp32 (output cosine and SQNR) on held-out test images. Run by build.ps1 -Task Bench; the table goes to
    docs/benchmarks.md.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [int] $CalibrationCount = 200,
    [int] $EvaluationCount = 200,
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
$rows = foreach ($symmetric in $false, $true) {
    $stats = Measure-ActivationRange -Path $ResNet18 -DataSet $calibration -ThreadCount $ThreadCount -Symmetric:$symmetric
    foreach ($method in 'MinMax', 'MovingAverageMinMax', 'Percentile', 'Entropy', 'Mse', 'Auto') {
        $selected = $stats | Merge-ActivationRange -Method $method
        $path = Join-Path $outFolder "resnet18.$method.$(if ($symmetric) { 'sym' } else { 'asym' }).int8.onnx"
        $report = $selected | Invoke-Quantization -OutputPath $path -Force | Test-QuantizedModel -DataSet $evaluation -ThreadCount $ThreadCount -LatencyRuns 1
        [pscustomobject]@{
            Method = $method
            Symmetric = $symmetric
            Cosine = [math]::Round($report.Cosine, 5)
            SqnrDb = [math]::Round($report.SqnrDb, 2)
            AutoPicks = if ($method -eq 'Auto') { ($selected | Group-Object SelectedMethod | ForEach-Object { "$($_.Name) $($_.Count)" }) -join ', ' } else { '' }
        }
    }
}
"ResNet18, Fashion-MNIST: calibration $CalibrationCount train images, evaluation $EvaluationCount test images (int8 QDQ vs fp32, first output)" | Out-Host
$rows | Format-Table -AutoSize | Out-Host
$rows | ConvertTo-Json | Set-Content (Join-Path $outFolder 'calibration-methods.json')
