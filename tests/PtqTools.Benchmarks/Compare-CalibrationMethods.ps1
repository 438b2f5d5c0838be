<#
.SYNOPSIS
    Accuracy of each calibration method, on ResNet18 with Fashion-MNIST and on all-MiniLM-L6-v2 with real
    sentences: calibrates once per mode (every method's range comes from the same pass), re-selects each method
    with Merge-ActivationRange -Method, quantizes (static QDQ), and compares the int8 model with fp32 (cosine and
    SQNR of the first output, as Test-QuantizedModel reports them) on held-out data. Run by build.ps1 -Task Bench;
    the tables go to docs/benchmarks.md.
.PARAMETER Model
    ResNet18, MiniLM, or both (the default).
.DESCRIPTION
    MiniLM: the sentences are those of docs/real-models.md (the licence texts of Debian's base-files, split at
    sentence ends, 6 to 60 words, duplicates dropped); the first -MiniLmCalibrationCount calibrate, the next
    -MiniLmEvaluationCount evaluate. Two selections of layers are quantized: every MatMul with a weight (37), and
    all but the six FFN down-projections (31), the selection docs/real-models.md recommends. The output compared
    is last_hidden_state (every token of every sentence).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [ValidateSet('ResNet18', 'MiniLM')] [string[]] $Model = @('ResNet18', 'MiniLM'),
    [int] $CalibrationCount = 200,
    [int] $EvaluationCount = 200,
    [int] $MiniLmCalibrationCount = 100,
    [int] $MiniLmEvaluationCount = 100,
    [int] $ThreadCount = 2
)
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')
$outFolder = Join-Path $root 'out/bench'
$null = New-Item -ItemType Directory -Force $outFolder
Import-Module $ModulePath -Force
. (Join-Path $root 'tests/Pester/TestData.ps1')
$methods = 'MinMax', 'MovingAverageMinMax', 'Percentile', 'Entropy', 'Mse', 'Auto'

# One calibration per mode, then every method quantized and compared from it.
function Compare-Methods([string] $Name, [object[]] $Layers, $Calibration, $Evaluation, [string] $Selection) {
    foreach ($symmetric in $false, $true) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $stats = $Layers | Measure-ActivationRange -DataSet $Calibration -ThreadCount $ThreadCount -Symmetric:$symmetric
        Write-Host ("{0} {1}, {2}: calibrated {3} tensors in {4:N1} s" -f $Name, $Selection, $(if ($symmetric) { 'symmetric' } else { 'asymmetric' }), $stats.Count, $clock.Elapsed.TotalSeconds)
        foreach ($method in $methods) {
            $selected = $stats | Merge-ActivationRange -Method $method
            $path = Join-Path $outFolder "$($Name.ToLowerInvariant()).$Selection.$method.$(if ($symmetric) { 'sym' } else { 'asym' }).int8.onnx"
            $report = $selected | Invoke-Quantization -OutputPath $path -Force | Test-QuantizedModel -DataSet $Evaluation -ThreadCount $ThreadCount -LatencyRuns 1
            [pscustomobject]@{
                Model = $Name
                Selection = $Selection
                Method = $method
                Symmetric = $symmetric
                Cosine = [math]::Round($report.Cosine, 5)
                SqnrDb = [math]::Round($report.SqnrDb, 2)
                AutoPicks = if ($method -eq 'Auto') { ($selected | Group-Object SelectedMethod | Sort-Object Count -Descending | ForEach-Object { "$($_.Name) $($_.Count)" }) -join ', ' } else { '' }
            }
            Remove-Item $path -ErrorAction SilentlyContinue
        }
    }
}

# The sentences of docs/real-models.md (and of tests/PtqTools.Core.Tests/MiniLm.cs).
function Get-LicenceSentences([int] $Count) {
    $files = 'GPL-3', 'GPL-2', 'Apache-2.0', 'LGPL-2.1', 'MPL-2.0', 'GFDL-1.3', 'Artistic', 'LGPL-3', 'MPL-1.1', 'GPL-1', 'CC0-1.0', 'BSD', 'GFDL-1.2', 'LGPL-2'
    $seen = [Collections.Generic.HashSet[string]]::new([StringComparer]::Ordinal)
    $result = [Collections.Generic.List[string]]::new()
    foreach ($f in $files) {
        $path = Join-Path /usr/share/common-licenses $f
        if (-not (Test-Path $path)) { continue }
        $text = [regex]::Replace([IO.File]::ReadAllText($path), '\s+', ' ')
        foreach ($s in [regex]::Split($text, '(?<=[.!?])\s+(?=[A-Z"(])')) {
            $words = @($s.Split(' ', [StringSplitOptions]::RemoveEmptyEntries)).Count
            if ($words -lt 6 -or $words -gt 60 -or -not [char]::IsLetter($s[0]) -or -not $seen.Add($s)) { continue }
            $result.Add($s)
            if ($result.Count -eq $Count) { return , $result.ToArray() }
        }
    }
    throw "Only $($result.Count) sentences were found in /usr/share/common-licenses (base-files)."
}

$rows = @()
if ('ResNet18' -in $Model) {
    $calibration = New-ResNetDataSet -Split train -Count $CalibrationCount
    $evaluation = New-ResNetDataSet -Split t10k -Count $EvaluationCount -Skip 1000
    $rows += Compare-Methods 'ResNet18' (Get-ModelLayer $ResNet18) $calibration $evaluation 'all'
    "ResNet18, Fashion-MNIST: calibration $CalibrationCount train images, evaluation $EvaluationCount test images (int8 QDQ vs fp32, first output)" | Out-Host
}
if ('MiniLM' -in $Model) {
    . (Join-Path $root 'tests/Pester/MiniLm.ps1')
    $miniFolder = Join-Path $outFolder 'minilm'
    $mini = Get-MiniLmModel $miniFolder
    $sentences = Get-LicenceSentences ($MiniLmCalibrationCount + $MiniLmEvaluationCount)
    $calibFile = Join-Path $miniFolder 'calibration.txt'
    $evalFile = Join-Path $miniFolder 'evaluation.txt'
    $sentences[0..($MiniLmCalibrationCount - 1)] | Set-Content $calibFile
    $sentences[$MiniLmCalibrationCount..($sentences.Count - 1)] | Set-Content $evalFile
    $vocab = Join-Path $miniFolder 'vocab.txt'
    $calibration = New-PtqDataSet -Path $calibFile -VocabPath $vocab
    $evaluation = New-PtqDataSet -Path $evalFile -VocabPath $vocab
    $matmuls = @(Get-ModelLayer $mini | Where-Object { $_.OpType -in 'MatMul', 'Gemm' -and $_.Quantizable -and $_.WeightName })
    $rows += Compare-Methods 'MiniLM' $matmuls $calibration $evaluation 'matmul37'
    $rows += Compare-Methods 'MiniLM' @($matmuls | Where-Object { ($_.WeightShape -join 'x') -ne '1536x384' }) $calibration $evaluation 'matmul31'
    "MiniLM: calibration $MiniLmCalibrationCount licence sentences, evaluation the next $MiniLmEvaluationCount (int8 QDQ vs fp32, last_hidden_state)" | Out-Host
}
$rows | Format-Table -AutoSize | Out-Host
$rows | ConvertTo-Json | Set-Content (Join-Path $outFolder 'calibration-methods.json')
