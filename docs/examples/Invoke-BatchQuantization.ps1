<#
.SYNOPSIS
    Quantizes every model in a folder, in parallel, for scheduled (unattended) runs.
.DESCRIPTION
    For each *.onnx file in -ModelFolder, the calibration data is the data set description saved beside it as
    <name>.dataset.xml (New-PtqDataSet ... | Export-Clixml <name>.dataset.xml). Models are calibrated and quantized
    in parallel runspaces (ForEach-Object -Parallel) into -OutputFolder as <name>.int8.onnx.

    An output is up to date, and skipped, when its metadata records the SHA-256 of the current source model and the
    options this run would use (Invoke-Quantization writes both into the model: Get-OnnxModel shows them as
    QuantizedFrom and QuantizationOptions). So a second run over unchanged models does no work, and a changed model
    or changed options are quantized again. The options include the CPU class the models are written for (-Target;
    Portable by default, right on every class), so a model written for another class is quantized again too.

    Writes a JSON log (one record per model and a summary) and prints a summary table. Exits 1 when any model failed,
    0 otherwise, so a scheduler sees the failure.
.EXAMPLE
    pwsh -File ./Invoke-BatchQuantization.ps1 -ModelFolder /srv/models -OutputFolder /srv/models-int8
.EXAMPLE
    # A nightly cron entry (crontab -e):
    # 0 2 * * * pwsh -NoProfile -File /opt/ptq/Invoke-BatchQuantization.ps1 -ModelFolder /srv/models -OutputFolder /srv/int8 >> /var/log/ptq.log 2>&1
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModelFolder,
    [Parameter(Mandatory)] [string] $OutputFolder,
    [ValidateSet('UInt8', 'Int8')] [string] $ActivationType = 'UInt8',
    [switch] $PerTensor,
    # The CPU class the models are written for (Invoke-Quantization -Target); Host is this machine's, resolved once.
    [ValidateSet('Portable', 'Avx2', 'Avx512', 'Vnni', 'Amx', 'Arm64', 'Host')] [string] $Target = 'Portable',
    [ValidateRange(1, 64)] [int] $ThrottleLimit = 2,
    [string] $ModulePath = 'PtqTools',
    [string] $LogPath
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
$module = (Get-Module PtqTools).Path
$null = New-Item -ItemType Directory -Force $OutputFolder
if (-not $LogPath) { $LogPath = Join-Path $OutputFolder 'batch-log.json' }

# The options string the engine records in the models it writes, for the options of this run (the engine assembly
# loads lazily, when a cmdlet first needs it: load it here).
Add-Type -LiteralPath (Join-Path (Split-Path $module) 'PtqTools.Core.dll')
$options = [PtqTools.Core.Quantization.QuantizationOptions]::new()
$options.ActivationType = $ActivationType
$options.PerChannel = -not $PerTensor
# The resolved target is part of the recorded options: a model written for another class is quantized again.
$Target = [PtqTools.Core.Quantization.QuantTargets]::Resolve([PtqTools.Core.Quantization.QuantTarget]$Target).ToString()
$options.Target = $Target
$expected = $options.ToString()

$clock = [Diagnostics.Stopwatch]::StartNew()
$records = Get-ChildItem -LiteralPath $ModelFolder -Filter *.onnx -File | Sort-Object Name | ForEach-Object -ThrottleLimit $ThrottleLimit -Parallel {
    $model = $_
    $start = [Diagnostics.Stopwatch]::StartNew()
    $record = [ordered]@{ Model = $model.FullName; Output = $null; Status = $null; Seconds = 0; SizeRatio = $null; Error = $null; ErrorId = $null }
    try {
        Import-Module $using:module
        $output = Join-Path $using:OutputFolder ($model.BaseName + '.int8.onnx')
        $record.Output = $output
        $hash = (Get-FileHash -LiteralPath $model.FullName -Algorithm SHA256).Hash
        $current = if (Test-Path -LiteralPath $output) { Get-OnnxModel -LiteralPath $output -ErrorAction SilentlyContinue }
        if ($current -and $current.QuantizedFrom -eq $hash -and $current.QuantizationOptions -eq $using:expected) {
            $record.Status = 'UpToDate'
        } else {
            $dataFile = Join-Path $model.DirectoryName ($model.BaseName + '.dataset.xml')
            if (-not (Test-Path -LiteralPath $dataFile)) { throw "No calibration data: '$dataFile' does not exist (save one with New-PtqDataSet ... | Export-Clixml)." }
            $data = Import-Clixml -LiteralPath $dataFile
            $quantize = @{ OutputPath = $output; ActivationType = $using:ActivationType; PerTensor = $using:PerTensor; Target = $using:Target; Force = $true; ThreadCount = 1 }
            $result = Invoke-Quantization -Path $model.FullName -DataSet $data @quantize
            $record.Status = 'Quantized'
            $record.SizeRatio = $result.SizeRatio
        }
    } catch {
        $record.Status = 'Failed'
        $record.Error = $_.Exception.Message
        $record.ErrorId = $_.FullyQualifiedErrorId
    }
    $record.Seconds = [math]::Round($start.Elapsed.TotalSeconds, 2)
    [pscustomobject]$record
}
$records = @($records)
$summary = [ordered]@{
    Date = (Get-Date).ToUniversalTime().ToString('o')
    Options = $expected
    Models = $records.Count
    Quantized = @($records | Where-Object Status -eq 'Quantized').Count
    UpToDate = @($records | Where-Object Status -eq 'UpToDate').Count
    Failed = @($records | Where-Object Status -eq 'Failed').Count
    Seconds = [math]::Round($clock.Elapsed.TotalSeconds, 2)
}
[ordered]@{ Summary = $summary; Models = $records } | ConvertTo-Json -Depth 4 | Set-Content -LiteralPath $LogPath
$records | Format-Table @{ n = 'Model'; e = { Split-Path -Leaf $_.Model } }, Status, Seconds, SizeRatio, ErrorId -AutoSize | Out-Host
Write-Host ("{0} models: {1} quantized, {2} up to date, {3} failed in {4:N1} s; log: {5}" -f
    $summary.Models, $summary.Quantized, $summary.UpToDate, $summary.Failed, $summary.Seconds, $LogPath)
if ($summary.Failed -gt 0) { exit 1 }
exit 0
