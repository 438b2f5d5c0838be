<#
.SYNOPSIS
    Measure-ModelPerformance over threads, batch sizes and engines (issue 7): ResNet18 fp32 and int8 on ONNX Runtime,
    the int8 model on the PtqTools engine; MiniLM fp32 and static int8 (MatMul layers) on ONNX Runtime at batch 1, 4
    and 8 (its batch dimension is dynamic; ResNet18's is fixed at 1). Every configuration is measured in -Rounds
    interleaved rounds in this one process; the median of the rounds' p50/p90/p99 and throughput is reported, with the
    peak resident memory (VmHWM, reset before each model is loaded) and its growth over the process before loading.
    Writes the rows to -OutputFolder/performance.json and prints them as a Markdown table.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-bench-performance'),
    [int] $Rounds = 3,
    [int] $Runs = 40,
    [int] $WarmupRuns = 5
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
. (Join-Path $PSScriptRoot '../Pester/TestData.ps1')
. (Join-Path $PSScriptRoot '../Pester/MiniLm.ps1')
$null = New-Item -ItemType Directory -Force $OutputFolder

# ResNet18: static int8 of every layer, 16 calibration images; timed on a Fashion-MNIST test image.
$r18int8 = Join-Path $OutputFolder 'resnet18.int8.onnx'
$null = Invoke-Quantization -Path $ResNet18 -DataSet (New-ResNetDataSet -Split train -Count 16) -OutputPath $r18int8 -Force -ThreadCount 2
$image = New-ResNetDataSet -Split t10k -Count 1 -Skip 100

# MiniLM: static int8 of the MatMul/Gemm layers but the six FFN down-projections (docs/real-models.md), timed on one
# licence sentence of 40 tokens or so.
$minilm = Get-MiniLmModel (Join-Path $OutputFolder 'minilm')
$sentences = Join-Path $OutputFolder 'sentences.txt'
Set-Content $sentences -Value @(
    'The licenses for most software and other practical works are designed to take away your freedom to share and change the works.',
    'By contrast, the GNU General Public License is intended to guarantee your freedom to share and change all versions of a program.')
$text = New-PtqDataSet -Path $sentences -VocabPath (Join-Path $OutputFolder 'minilm/vocab.txt')
$mlInt8 = Join-Path $OutputFolder 'minilm.int8.onnx'
$null = Get-ModelLayer $minilm | Where-Object { $_.OpType -in 'MatMul', 'Gemm' -and $_.Quantizable -and $_.WeightName -and -not ($_.WeightShape[0] -eq 1536 -and $_.WeightShape[1] -eq 384) } |
    Measure-ActivationRange -DataSet $text -ThreadCount 2 | Invoke-Quantization -OutputPath $mlInt8 -Force

$configs = [Collections.Generic.List[object]]::new()
foreach ($t in 1, 2) {
    $configs.Add(@{ Name = 'ResNet18 fp32'; Path = $ResNet18; Data = $image; Engine = 'OnnxRuntime'; Threads = $t; Batch = 1 })
    $configs.Add(@{ Name = 'ResNet18 int8'; Path = $r18int8; Data = $image; Engine = 'OnnxRuntime'; Threads = $t; Batch = 1 })
    $configs.Add(@{ Name = 'ResNet18 int8'; Path = $r18int8; Data = $image; Engine = 'PtqTools'; Threads = $t; Batch = 1 })
    foreach ($b in 1, 4, 8) {
        $configs.Add(@{ Name = 'MiniLM fp32'; Path = $minilm; Data = $text; Engine = 'OnnxRuntime'; Threads = $t; Batch = $b })
        $configs.Add(@{ Name = 'MiniLM int8'; Path = $mlInt8; Data = $text; Engine = 'OnnxRuntime'; Threads = $t; Batch = $b })
    }
}
$results = @{}
for ($r = 0; $r -lt $Rounds; $r++) {
    for ($i = 0; $i -lt $configs.Count; $i++) {
        $c = $configs[$i]
        $m = Measure-ModelPerformance $c.Path -DataSet $c.Data -Engine $c.Engine -ThreadCount $c.Threads -BatchSize $c.Batch -Runs $Runs -WarmupRuns $WarmupRuns
        if (-not $results.ContainsKey($i)) { $results[$i] = [Collections.Generic.List[object]]::new() }
        $results[$i].Add($m)
        Write-Host ("round {0}: {1} {2} t{3} b{4}: p50 {5:N2} ms" -f $r, $c.Name, $c.Engine, $c.Threads, $c.Batch, $m.P50Ms)
    }
}
function Median([double[]] $v) { $s = @($v | Sort-Object); if ($s.Count % 2) { $s[[int][Math]::Floor($s.Count / 2)] } else { ($s[$s.Count / 2 - 1] + $s[$s.Count / 2]) / 2 } }
$rows = for ($i = 0; $i -lt $configs.Count; $i++) {
    $c = $configs[$i]; $ms = $results[$i]
    [pscustomobject]@{
        Model = $c.Name; Engine = $c.Engine; Threads = $c.Threads; Batch = $c.Batch
        P50Ms = [Math]::Round((Median $ms.P50Ms), 2); P90Ms = [Math]::Round((Median $ms.P90Ms), 2); P99Ms = [Math]::Round((Median $ms.P99Ms), 2)
        SamplesPerSecond = [Math]::Round((Median $ms.SamplesPerSecond), 1)
        PeakMB = [Math]::Round((Median ($ms | ForEach-Object { $_.PeakMemoryBytes / 1MB })), 0)
        GrowthMB = [Math]::Round((Median ($ms | ForEach-Object { $_.MemoryGrowthBytes / 1MB })), 0)
        Kernel = $ms[0].KernelPath
    }
}
$rows | ConvertTo-Json | Set-Content (Join-Path $OutputFolder 'performance.json')
'| model | engine | threads | batch | p50 ms | p90 ms | p99 ms | samples/s | peak MB | growth MB |'
'|---|---|---|---|---|---|---|---|---|---|'
foreach ($x in $rows) { "| $($x.Model) | $($x.Engine)$(if ($x.Kernel) { " ($($x.Kernel))" }) | $($x.Threads) | $($x.Batch) | $($x.P50Ms) | $($x.P90Ms) | $($x.P99Ms) | $($x.SamplesPerSecond) | $($x.PeakMB) | $($x.GrowthMB) |" }
