<#
.SYNOPSIS
    Runs every Pester test in this folder against the built module, in this (fresh) pwsh process, and writes the
    pass/fail counts as JSON for build.ps1.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string] $PesterPath,
    [Parameter(Mandatory)] [string] $ResultPath,
    [string[]] $Path = @($PSScriptRoot)
)
$ErrorActionPreference = 'Stop'
$env:NO_COLOR = '1'
$PSStyle.OutputRendering = 'PlainText'
$env:PTQTOOLS_MODULE = (Resolve-Path $ModulePath).Path
# A cache of prepared models of the suite's own, so that a run starts from nothing.
$env:PTQTOOLS_CACHE = Join-Path ([IO.Path]::GetTempPath()) "ptqtools-pester-cache-$PID"
Import-Module $PesterPath -Force

$config = New-PesterConfiguration
$config.Run.Path = $Path
$config.Run.PassThru = $true
$config.Output.Verbosity = 'Detailed'
$config.Output.RenderMode = 'Plaintext'
$config.TestResult.Enabled = $true
$config.TestResult.OutputPath = [IO.Path]::ChangeExtension($ResultPath, '.xml')
$result = Invoke-Pester -Configuration $config

$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
[pscustomobject]@{ Passed = $result.PassedCount; Failed = $failed; Skipped = $result.SkippedCount } |
    ConvertTo-Json | Set-Content -Path $ResultPath
Remove-Item $env:PTQTOOLS_CACHE -Recurse -Force -ErrorAction SilentlyContinue
exit ([int]($failed -gt 0))
