<#
.SYNOPSIS
    The scenario Windows.Tests.ps1 runs twice, once in a Windows PowerShell under wine and once in the test's own
    pwsh on Linux: imports the module, then lists, calibrates, quantizes and tests each model of the input folder,
    and writes what it saw (platform, the ONNX Runtime library loaded, the files' SHA-256) as JSON.
.PARAMETER ModulePath
    The module manifest to import (the Windows module folder's under wine).
.PARAMETER InputFolder
    Written by the test: test_Conv2d/ (a conformance model with its test_data_set_*), tiny-cnn.onnx and images/.
.PARAMETER OutputFolder
    Where this run writes its models, range files, cache and result.json; created when missing.
#>
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string] $InputFolder,
    [Parameter(Mandatory)] [string] $OutputFolder
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$null = New-Item -ItemType Directory -Path $OutputFolder -Force
# The run's own cache: an inherited PTQTOOLS_CACHE is a Linux path, which means nothing to the Windows run.
$env:PTQTOOLS_CACHE = Join-Path $OutputFolder 'cache'
Import-Module $ModulePath -Force

function Get-LineEnding([string] $Path) {
    $text = Get-Content -Raw -LiteralPath $Path
    if ($text -match "`r`n") { if ($text -match "[^`r]`n") { 'Mixed' } else { 'CRLF' } } elseif ($text -match "`n") { 'LF' } else { 'None' }
}
function Get-TextHash([string] $Text) {
    [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData([Text.Encoding]::UTF8.GetBytes($Text)))
}
$models = @(
    @{ Name = 'conformance'; Model = Join-Path $InputFolder 'test_Conv2d/model.onnx'
        Data = { New-PtqDataSet -LiteralPath (Join-Path $InputFolder 'test_Conv2d') } }
    @{ Name = 'cnn'; Model = Join-Path $InputFolder 'tiny-cnn.onnx'
        Data = { New-PtqDataSet -LiteralPath (Join-Path $InputFolder 'images') -Resize 16 -Mean 0.5, 0.5, 0.5 -Std 0.25, 0.25, 0.25 } }
)
$runs = foreach ($m in $models) {
    $summary = Get-OnnxModel -LiteralPath $m.Model
    $layers = @(Get-ModelLayer -LiteralPath $m.Model)
    $data = & $m.Data
    $stats = @($layers | Where-Object Quantizable | Measure-ActivationRange -DataSet $data)
    $ranges = Join-Path $OutputFolder "$($m.Name).ranges.json"
    $stats | Export-ActivationRange -Path $ranges -Force
    $output = Join-Path $OutputFolder "$($m.Name).int8.onnx"
    # An explicit target: the bytes written do not depend on the CPU that runs this.
    $quantized = $stats | Invoke-Quantization -OutputPath $output -DataSet $data -Target Portable -Force
    $test = $quantized | Test-QuantizedModel -DataSet $data -LatencyRuns 0
    # The int8 model on the module's own engine: its native kernels (ptqkernels.dll on Windows, built by mingw-w64;
    # libptqkernels.so on Linux) where the CPU runs them, and the outputs bit for bit.
    $engine = @(Invoke-ModelInference -LiteralPath $output -DataSet $data -Engine PtqTools -ThreadCount 1)
    $engineBytes = [byte[]]@($engine | ForEach-Object { foreach ($o in $_.Outputs) { foreach ($v in $o) { [BitConverter]::GetBytes([float]$v) } } } | ForEach-Object { $_ })
    [ordered]@{
        Name = $m.Name
        ModelSha256 = $summary.Sha256
        Layers = $layers.Count
        Quantizable = @($layers | Where-Object Quantizable).Count
        Tensors = $stats.Count
        Samples = $data.Count
        Int8Sha256 = (Get-FileHash -LiteralPath $output -Algorithm SHA256).Hash
        QuantizedFrom = (Get-OnnxModel -LiteralPath $output).QuantizedFrom
        # The range file names the model's path and the time it was written: both differ between the runs.
        RangesSha256 = Get-TextHash ((Get-Content -Raw -LiteralPath $ranges) -replace '"(ModelPath|Created)":"[^"]*"', '"$1":""')
        RangesLineEndings = Get-LineEnding $ranges
        Cosine = $test.Cosine
        EngineKernelPath = $engine[0].KernelPath
        EngineOutputsSha256 = [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($engineBytes))
    }
}
# The batch cmdlet on a folder (its JSON log, then a second run that finds everything current), the report as JSON
# and Markdown, and the cache: text written on every platform with LF line endings.
$batch = Join-Path $OutputFolder 'batch'
$null = New-Item -ItemType Directory $batch -Force
Copy-Item (Join-Path $InputFolder 'tiny-cnn.onnx') $batch
& $models[1].Data | Export-Clixml (Join-Path $batch 'tiny-cnn.dataset.xml')
$log = Join-Path $OutputFolder 'batch.log.json'
$first = Update-QuantizedModel -LiteralPath $batch -OutputFolder (Join-Path $OutputFolder 'batch-int8') -LogPath $log -Target Portable
$second = Update-QuantizedModel -LiteralPath $batch -OutputFolder (Join-Path $OutputFolder 'batch-int8') -Target Portable
$report = Join-Path $OutputFolder 'cnn.report'
$null = $test | Export-QuantizationReport -Path "$report.json" -Format Json -Force
$null = $test | Export-QuantizationReport -Path "$report.md" -Format Markdown -Force
# Replacing an output that another handle holds open (as a viewer or a virus scanner would): Linux renames over it;
# Windows cannot, and the cmdlet must say so with its error id.
$open = [IO.File]::Open((Join-Path $OutputFolder 'cnn.int8.onnx'), 'Open', 'Read', 'Read')
$replace = try {
    $null = $stats | Invoke-Quantization -OutputPath (Join-Path $OutputFolder 'cnn.int8.onnx') -DataSet $data -Target Portable -Force -SkipFidelityCheck
    'Replaced'
} catch { $_.FullyQualifiedErrorId + ': ' + $_.Exception.Message } finally { $open.Dispose() }
# On Windows a path in another case names the same file: the source is never overwritten, and an output folder that
# is the source folder in another case is still the output folder (its int8 models are no sources). Windows only: on
# Linux those are other paths.
$caseOutput = $caseBatch = 'NotRun'
if ($IsWindows) {
    $case = Join-Path $OutputFolder 'case'
    $null = New-Item -ItemType Directory $case -Force
    Copy-Item (Join-Path $batch '*') $case
    $source = Join-Path $case 'tiny-cnn.onnx'
    $sourceHash = (Get-FileHash -LiteralPath $source).Hash
    $caseOutput = try {
        $null = Invoke-Quantization -LiteralPath $source -DataSet $data -OutputPath $source.ToUpperInvariant() -Target Portable -Force -SkipFidelityCheck
        'Written'
    } catch { $_.FullyQualifiedErrorId }
    if ((Get-FileHash -LiteralPath $source).Hash -ne $sourceHash) { $caseOutput += ', source overwritten' }
    $null = Update-QuantizedModel -LiteralPath $case -OutputFolder $case -Target Portable -SkipFidelityCheck
    $caseBatch = (@(Update-QuantizedModel -LiteralPath $case -OutputFolder $case.ToUpperInvariant() -Target Portable -SkipFidelityCheck) |
        ForEach-Object { "$(Split-Path -Leaf $_.SourcePath) $($_.Status)" }) -join ', '
}
$batchRun = [ordered]@{
    First = "$($first.Status)"; Second = "$($second.Status)"
    Int8Sha256 = (Get-FileHash -LiteralPath $first.OutputPath -Algorithm SHA256).Hash
    LogLineEndings = Get-LineEnding $log
    ReportJsonLineEndings = Get-LineEnding "$report.json"
    ReportMarkdownLineEndings = Get-LineEnding "$report.md"
    ReplaceOpenFile = $replace
    CacheFolder = (Get-PtqCache -Summary).Folder
    CaseOutput = $caseOutput
    CaseBatch = $caseBatch
}

$loaded = [Diagnostics.Process]::GetCurrentProcess().Modules |
    Where-Object { $_.ModuleName -match '^(lib)?onnxruntime\.(dll|so)' } | Select-Object -First 1
[ordered]@{
    IsWindows = $IsWindows
    IsLinux = $IsLinux
    PSVersion = "$($PSVersionTable.PSVersion)"
    OS = [Runtime.InteropServices.RuntimeInformation]::OSDescription
    Runtime = [Runtime.InteropServices.RuntimeInformation]::FrameworkDescription
    RuntimeIdentifier = [Runtime.InteropServices.RuntimeInformation]::RuntimeIdentifier
    ModuleBase = (Get-Module PtqTools).ModuleBase
    OnnxRuntimeLibrary = if ($loaded) { $loaded.FileName }
    OnnxRuntimeVersion = if ($loaded) { $loaded.FileVersionInfo.FileVersion }
    Models = @($runs)
    Batch = $batchRun
} | ConvertTo-Json -Depth 4 | Set-Content -LiteralPath (Join-Path $OutputFolder 'result.json')
