<#
.SYNOPSIS
    Runs Update-QuantizedModel for a scheduler: a JSON log, a summary line, and an exit code.
.DESCRIPTION
    Shipped in the PtqTools module folder, for Windows Task Scheduler, systemd timers and cron:

        pwsh -NoProfile -File <module folder>/Invoke-PtqBatch.ps1 -Path /srv/models -OutputFolder /srv/int8

    It imports the PtqTools module it is shipped with and takes every parameter of Update-QuantizedModel (they are
    copied from the cmdlet, so Get-Help Update-QuantizedModel documents them). Without -LogPath the log is
    <OutputFolder>/batch-log.json.

    Exit codes: 0 when every model is quantized or up to date; 1 when one or more models failed (the log and the
    error stream name them, with their error ids) or another error was written (a path not found, a log that
    could not be written); 2 when the run itself failed (invalid options, an output folder
    or log folder that cannot be used); 143 when SIGTERM ended it (the log then says Stopped).
    See Get-Help about_PtqTools_Batch.
.EXAMPLE
    pwsh -NoProfile -File /usr/local/share/powershell/Modules/PtqTools/0.1.0/Invoke-PtqBatch.ps1 -Path /srv/models -OutputFolder /srv/int8
#>
[CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', DefaultParameterSetName = 'Path')]
param()
dynamicparam {
    Import-Module (Join-Path $PSScriptRoot 'PtqTools.psd1')
    $common = [System.Management.Automation.Cmdlet]::CommonParameters + [System.Management.Automation.Cmdlet]::OptionalCommonParameters
    $parameters = [System.Management.Automation.RuntimeDefinedParameterDictionary]::new()
    foreach ($p in (Get-Command Update-QuantizedModel -Module PtqTools).Parameters.Values) {
        if ($p.Name -in $common) { continue }
        $parameters.Add($p.Name, [System.Management.Automation.RuntimeDefinedParameter]::new($p.Name, $p.ParameterType, $p.Attributes))
    }
    $parameters
}
end {
    $run = @{} + $PSBoundParameters
    if (-not $run.ContainsKey('LogPath')) { $run.LogPath = Join-Path $run.OutputFolder 'batch-log.json' }
    $results = [System.Collections.Generic.List[object]]::new()
    try {
        Update-QuantizedModel @run -ErrorAction Continue -ErrorVariable runErrors | ForEach-Object { $results.Add($_) }
    } catch {
        # A terminating error: the run did not complete (the log, when one was written, has the models done).
        Write-Error -ErrorRecord $_ -ErrorAction Continue
        exit 2
    }
    if ($WhatIfPreference -or $run.WhatIf) { exit 0 }
    $failed = @($results | Where-Object Status -EQ 'Failed').Count
    $results | Format-Table | Out-Host
    Write-Host ('{0} models: {1} quantized, {2} up to date, {3} failed, {4} skipped; log: {5}' -f $results.Count,
        @($results | Where-Object Status -EQ 'Quantized').Count, @($results | Where-Object Status -EQ 'UpToDate').Count,
        $failed, @($results | Where-Object Status -EQ 'Skipped').Count, $run.LogPath)
    # A failed model, and any other error of the run (a path not found, a log that could not be written).
    if ($failed -gt 0 -or $runErrors.Count -gt 0) { exit 1 }
    exit 0
}
