<#
.SYNOPSIS
    all-MiniLM-L6-v2: fp32 vs the dynamic and weight-only models PtqTools writes, in ONNX Runtime, all sessions in this
    one process and interleaved round by round (batch 1, -SequenceLength tokens, -Threads intra-op threads, graph
    optimizations on, as a user would load them). Prints one row per model (fidelity, speedup, size) and returns them.
    Token ids are whole-word lookups in the model's vocab.txt (real tokens; the tokenizer proper is not the point).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-bench-minilm'),
    [int] $SequenceLength = 128,
    [int] $Threads = 1,
    [int] $Rounds = 5,
    [int] $RunsPerRound = 20
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
# ONNX Runtime's managed API, from the module folder (the module loads it lazily).
# ONNX Runtime's managed API as the module loads it (its own load context, its natives): reachable by name here.
$null = [PtqTools.Loader.ModuleLoader]::ExposeDependency('Microsoft.ML.OnnxRuntime')
. (Join-Path $PSScriptRoot '../Pester/MiniLm.ps1')
$model = Get-MiniLmModel $OutputFolder

# Calibration sentences for the variants that use data (channel maxima): the first 32 licence sentences.
$calibFile = Join-Path $OutputFolder 'calibration.txt'
[IO.File]::WriteAllLines($calibFile, [string[]](Get-LicenceSentences 32))
$calib = New-PtqDataSet -Path $calibFile -VocabPath (Join-Path $OutputFolder 'vocab.txt')
$variants = @(
    @{ Name = 'dynamic int8 (MatMulInteger)'; File = 'dynamic.onnx'; Args = @{ Mode = 'Dynamic' } }
    @{ Name = 'dynamic int8, -OutlierThreshold 8'; File = 'dynamic-out8.onnx'; Args = @{ Mode = 'Dynamic'; OutlierThreshold = 8; DataSet = $calib } }
    @{ Name = 'dynamic int8, -OutlierThreshold 16'; File = 'dynamic-out16.onnx'; Args = @{ Mode = 'Dynamic'; OutlierThreshold = 16; DataSet = $calib } }
    @{ Name = 'dynamic int8, -OutlierThreshold 20'; File = 'dynamic-out20.onnx'; Args = @{ Mode = 'Dynamic'; OutlierThreshold = 20; DataSet = $calib } }
    @{ Name = 'dynamic int8, -Exclude MatMul_122'; File = 'dynamic-excl.onnx'; Args = @{ Mode = 'Dynamic'; Exclude = 'MatMul_122' } }
    @{ Name = 'weight-only int8 (Cast+Mul, folded at load)'; File = 'w8.onnx'; Args = @{ Mode = 'WeightOnly' } }
    @{ Name = 'weight-only int4 b32 (MatMulNBits)'; File = 'w4-32.onnx'; Args = @{ Mode = 'WeightOnly'; WeightBits = 4; BlockSize = 32 } }
    @{ Name = 'weight-only int4 b128 (MatMulNBits)'; File = 'w4-128.onnx'; Args = @{ Mode = 'WeightOnly'; WeightBits = 4; BlockSize = 128 } }
    @{ Name = 'weight-only int4 b32 symmetric, no zero points'; File = 'w4-32-sym.onnx'; Args = @{ Mode = 'WeightOnly'; WeightBits = 4; BlockSize = 32; WeightSymmetry = 'Symmetric'; WeightMethod = 'HQQ' } }
)
$results = foreach ($v in $variants) { $options = $v.Args; Invoke-Quantization -Path $model -OutputPath (Join-Path $OutputFolder $v.File) -Force @options }

# Token ids: [CLS] words [SEP], from the model's own vocabulary.
$vocab = @{}
$i = 0
foreach ($line in [IO.File]::ReadAllLines((Join-Path $OutputFolder 'vocab.txt'))) { if (-not $vocab.ContainsKey($line)) { $vocab[$line] = [long]$i }; $i++ }
$words = ('the quick brown fox jumps over the lazy dog while analysts quantize neural networks to run faster on ordinary ' +
    'processors and the results of each experiment are written to a table so that every figure can be checked again later') -split ' '
function New-Ids([int] $Length, [int] $Shift) {
    $ids = [long[]]::new($Length)
    $ids[0] = $vocab['[CLS]']; $ids[$Length - 1] = $vocab['[SEP]']
    for ($k = 1; $k -lt $Length - 1; $k++) { $w = $words[($k + $Shift) % $words.Count]; $ids[$k] = if ($vocab.ContainsKey($w)) { $vocab[$w] } else { $vocab['[UNK]'] } }
    , $ids
}

function New-Session([string] $Path) {
    $o = [Microsoft.ML.OnnxRuntime.SessionOptions]::new()
    $o.IntraOpNumThreads = $Threads
    $o.InterOpNumThreads = 1
    $o.ExecutionMode = 'ORT_SEQUENTIAL'
    $o.GraphOptimizationLevel = 'ORT_ENABLE_ALL'
    $o.AddSessionConfigEntry('session.intra_op.allow_spinning', '0')
    [Microsoft.ML.OnnxRuntime.InferenceSession]::new($Path, $o)
}

# Inputs for one sequence (NamedOnnxValue: PowerShell cannot call the Span-returning OrtValue accessors).
function New-Feed([long[]] $Ids) {
    $dims = [int[]]@(1, $Ids.Length)
    $mask = [long[]]::new($Ids.Length); for ($k = 0; $k -lt $Ids.Length; $k++) { $mask[$k] = 1 }
    @{
        input_ids = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('input_ids', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new($Ids, $dims))
        attention_mask = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('attention_mask', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new($mask, $dims))
        token_type_ids = [Microsoft.ML.OnnxRuntime.NamedOnnxValue]::CreateFromTensor('token_type_ids', [Microsoft.ML.OnnxRuntime.Tensors.DenseTensor[long]]::new([long[]]::new($Ids.Length), $dims))
    }
}

$runOptions = [Microsoft.ML.OnnxRuntime.RunOptions]::new()
# Runs one sequence; returns last_hidden_state when -Read, else nothing (the timed loop).
function Invoke-Model($Session, $Feed, [switch] $Read) {
    $inputs = [Collections.Generic.List[Microsoft.ML.OnnxRuntime.NamedOnnxValue]]::new()
    foreach ($n in $Session.InputMetadata.Keys) { $inputs.Add($Feed[$n]) }
    $out = $Session.Run($inputs, [string[]]@($Session.OutputMetadata.Keys | Select-Object -First 1), $runOptions)
    try { if ($Read) { , [Linq.Enumerable]::ToArray([Collections.Generic.IEnumerable[float]]$out[0].AsTensor[float]()) } } finally { $out.Dispose() }
}

function Get-Cosine([float[]] $A, [float[]] $B) {
    $dot = 0.0; $aa = 0.0; $bb = 0.0
    for ($k = 0; $k -lt $A.Length; $k++) { $dot += $A[$k] * $B[$k]; $aa += $A[$k] * $A[$k]; $bb += $B[$k] * $B[$k] }
    $dot / [math]::Sqrt($aa * $bb)
}

function Get-MeanPool([float[]] $H, [int] $Tokens) {
    $width = $H.Length / $Tokens
    $p = [float[]]::new($width)
    for ($t = 0; $t -lt $Tokens; $t++) { for ($j = 0; $j -lt $width; $j++) { $p[$j] += $H[$t * $width + $j] / $Tokens } }
    , $p
}

$sessions = [ordered]@{ fp32 = New-Session $model }
foreach ($k in 0..($variants.Count - 1)) { $sessions[$variants[$k].Name] = New-Session $results[$k].OutputPath }

# Fidelity over three sequences the length of the timed one.
$feeds = foreach ($shift in 0, 7, 19) { New-Feed (New-Ids $SequenceLength $shift) }
$reference = foreach ($f in $feeds) { , (Invoke-Model $sessions.fp32 $f -Read) }
$fidelity = @{}
foreach ($name in @($sessions.Keys) | Where-Object { $_ -ne 'fp32' }) {
    $hidden = @(); $embedding = @()
    for ($k = 0; $k -lt $feeds.Count; $k++) {
        $q = Invoke-Model $sessions[$name] $feeds[$k] -Read
        $hidden += Get-Cosine $reference[$k] $q
        $embedding += Get-Cosine (Get-MeanPool $reference[$k] $SequenceLength) (Get-MeanPool $q $SequenceLength)
    }
    $fidelity[$name] = @{ Hidden = ($hidden | Measure-Object -Minimum).Minimum; Embedding = ($embedding | Measure-Object -Minimum).Minimum }
}

# Latency: warm up, then rounds that visit every session in turn; median of the rounds' means.
$feed = $feeds[0]
foreach ($s in $sessions.Values) { 1..5 | ForEach-Object { $null = Invoke-Model $s $feed } }
$times = @{}
foreach ($name in $sessions.Keys) { $times[$name] = [Collections.Generic.List[double]]::new() }
for ($r = 0; $r -lt $Rounds; $r++) {
    foreach ($name in $sessions.Keys) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        for ($k = 0; $k -lt $RunsPerRound; $k++) { $null = Invoke-Model $sessions[$name] $feed }
        $times[$name].Add($clock.Elapsed.TotalMilliseconds / $RunsPerRound)
    }
}
$median = @{}
foreach ($name in $sessions.Keys) { $median[$name] = ($times[$name] | Sort-Object)[[int][math]::Floor($Rounds / 2)] }

# Bytes of the MatMul weights: fp32 initializers vs what replaced them (codes, scales, zero points).
$fpSize = (Get-Item $model).Length
$rows = @([pscustomobject]@{
        Model = "MiniLM-L6 b1 s$SequenceLength"; Variant = 'fp32'; Mode = 'Float'; Format = '-'; Threads = $Threads
        'ms (ORT)' = [math]::Round($median.fp32, 2); Speedup = 1.0; 'hidden cos' = '1'; 'embedding cos' = '1'; 'size %' = 100.0
    })
for ($k = 0; $k -lt $variants.Count; $k++) {
    $name = $variants[$k].Name
    $rows += [pscustomobject]@{
        Model = "MiniLM-L6 b1 s$SequenceLength"; Variant = $name; Mode = $results[$k].Mode; Format = $results[$k].Format; Threads = $Threads
        'ms (ORT)' = [math]::Round($median[$name], 2)
        Speedup = [math]::Round($median.fp32 / $median[$name], 2)
        'hidden cos' = '{0:F4}' -f $fidelity[$name].Hidden
        'embedding cos' = '{0:F4}' -f $fidelity[$name].Embedding
        'size %' = [math]::Round(100.0 * $results[$k].OutputSizeBytes / $fpSize, 1)
    }
}
foreach ($s in $sessions.Values) { $s.Dispose() }
$rows
