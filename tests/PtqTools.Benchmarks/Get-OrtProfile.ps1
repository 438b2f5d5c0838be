<#
.SYNOPSIS
    Where ONNX Runtime spends the time of each model: loads every -Path with ORT_ENABLE_ALL at one thread (as
    Invoke-MiniLmBenchmark.ps1 does), saves the optimized graph (OptimizedModelFilePath), runs MiniLM-style inputs
    (input_ids, attention_mask, token_type_ids; batch 1, -SequenceLength tokens) -Runs times with
    SessionOptions.EnableProfiling (the JSON profile stays in -OutputFolder), and sums its node events per op type. One row per model and op type:
    nodes in the optimized graph, total microseconds per run, share of the run.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string[]] $Path,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-profile'),
    [int] $SequenceLength = 128,
    [int] $Runs = 20
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
# ONNX Runtime's managed API as the module loads it (its own load context, its natives): reachable by name here.
$null = [PtqTools.Loader.ModuleLoader]::ExposeDependency('Microsoft.ML.OnnxRuntime')
$null = New-Item -ItemType Directory -Force $OutputFolder

$dims = [int[]]@(1, $SequenceLength)
$ids = [long[]]::new($SequenceLength); for ($k = 0; $k -lt $SequenceLength; $k++) { $ids[$k] = 1000 + $k }
$ones = [long[]]::new($SequenceLength); for ($k = 0; $k -lt $SequenceLength; $k++) { $ones[$k] = 1 }
$feed = @{
    input_ids = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('input_ids', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new($ids, $dims))
    attention_mask = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('attention_mask', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new($ones, $dims))
    token_type_ids = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('token_type_ids', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new([long[]]::new($SequenceLength), $dims))
}

foreach ($model in $Path) {
    $name = [IO.Path]::GetFileNameWithoutExtension($model)
    $optimized = Join-Path $OutputFolder "$name.optimized.onnx"
    $o = [Microsoft.ML.OnnxRuntime.SessionOptions]::new()
    $o.IntraOpNumThreads = 1
    $o.InterOpNumThreads = 1
    $o.ExecutionMode = 'ORT_SEQUENTIAL'
    $o.GraphOptimizationLevel = 'ORT_ENABLE_ALL'
    $o.AddSessionConfigEntry('session.intra_op.allow_spinning', '0')
    $o.OptimizedModelFilePath = $optimized
    # The prefix first: setting EnableProfiling starts the profiler with the prefix it has then.
    $o.ProfileOutputPathPrefix = Join-Path $OutputFolder "$name-"
    $o.EnableProfiling = $true
    $session = [Microsoft.ML.OnnxRuntime.InferenceSession]::new($model, $o)
    try {
        $inputs = [Collections.Generic.List[Microsoft.ML.OnnxRuntime.NamedOnnxValue]]::new()
        foreach ($n in $session.InputMetadata.Keys) { $inputs.Add($feed[$n]) }
        $outputs = [string[]]@($session.OutputMetadata.Keys | Select-Object -First 1)
        1..3 | ForEach-Object { $session.Run($inputs, $outputs).Dispose() }
        1..$Runs | ForEach-Object { $session.Run($inputs, $outputs).Dispose() }
        $profileFile = $session.EndProfiling()
    }
    finally { $session.Dispose(); $o.Dispose() }
    $events = Get-Content -Raw $profileFile | ConvertFrom-Json
    # Node events are named '<node>_kernel_time' and carry the op type; the last -Runs runs are timed (warm-up excluded).
    $modelRuns = @($events | Where-Object { $_.cat -eq 'Session' -and $_.name -eq 'model_run' })
    $timed = $modelRuns | Select-Object -Last $Runs
    $start = ($timed | Select-Object -First 1).ts
    $kernels = @($events | Where-Object { $_.cat -eq 'Node' -and $_.name -like '*_kernel_time' -and $_.ts -ge $start })
    $runTotal = ($timed | Measure-Object dur -Sum).Sum / $Runs
    $counts = @{}
    foreach ($entry in (Get-OnnxModel $optimized).OpTypes) { $counts[$entry.OpType] = $entry.Count }
    $kernels | Group-Object { $_.args.op_name } | ForEach-Object {
        $us = ($_.Group | Measure-Object dur -Sum).Sum / $Runs
        [pscustomobject]@{
            Model = $name; OpType = $_.Name; Nodes = $counts[$_.Name]
            'us per run' = [math]::Round($us, 0); Share = '{0:P1}' -f ($us / $runTotal)
        }
    } | Sort-Object 'us per run' -Descending
    [pscustomobject]@{ Model = $name; OpType = '(run)'; Nodes = ($counts.Values | Measure-Object -Sum).Sum; 'us per run' = [math]::Round($runTotal, 0); Share = '100%' }
}
