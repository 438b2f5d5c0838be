# What Windows.Tests.ps1 needs to run the module's Windows build under wine; dot-source it. Everything it writes is
# cached under out/ (the host, the interim Windows module folder, the wine prefix) and rebuilt only when its inputs
# change, so that the suite pays for it once.
$script:RepoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
$script:WineCache = Join-Path $RepoRoot 'out'

# The wine loader of Debian's wine64 (/usr/lib/wine/wine64; the 'wine' package would add wine64 to PATH), or $null.
function Get-WineLoader {
    foreach ($candidate in '/usr/lib/wine/wine64', (Get-Command wine64, wine -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1 -ExpandProperty Source)) {
        if ($candidate -and (Test-Path $candidate)) { return $candidate }
    }
    $null
}

# True when no file of $Inputs is newer than $Stamp (written after the last successful build).
function Test-UpToDate([string] $Stamp, [IO.FileInfo[]] $Inputs) {
    if (-not (Test-Path $Stamp)) { return $false }
    $built = (Get-Item $Stamp).LastWriteTimeUtc
    -not ($Inputs | Where-Object { $_.LastWriteTimeUtc -gt $built } | Select-Object -First 1)
}

function Invoke-Dotnet([string[]] $Arguments) {
    $text = & dotnet @Arguments 2>&1
    if ($LASTEXITCODE -ne 0) { throw "dotnet $($Arguments -join ' ') failed with exit code ${LASTEXITCODE}:`n$($text -join "`n")" }
}

# tests/PtqTools.WinHost published (self-contained win-x64, PowerShell 7.6.9) into out/winhost; returns the exe.
function Install-WinHost {
    $project = Join-Path $RepoRoot 'tests/PtqTools.WinHost'
    $target = Join-Path $WineCache 'winhost'
    $exe = Join-Path $target 'PtqTools.WinHost.exe'
    $stamp = Join-Path $target 'published.stamp'
    $inputs = @(Get-ChildItem $project -File) + @(Get-Item (Join-Path $RepoRoot 'Directory.Build.props'))
    if (-not (Test-UpToDate $stamp $inputs)) {
        if (Test-Path $target) { Remove-Item $target -Recurse -Force }
        Invoke-Dotnet @('publish', (Join-Path $project 'PtqTools.WinHost.csproj'), '-c', 'Release', '-o', $target, '--verbosity', 'quiet')
        Set-Content -Path $stamp -Value (Get-Date -AsUTC -Format o)
    }
    $exe
}

# INTERIM, until build.ps1 writes one portable module folder (issue 18, item 1): a Windows module folder made from
# src/PtqTools published for win-x64 (managed assemblies, onnxruntime.dll, libSkiaSharp.dll, libHarfBuzzSharp.dll) and
# the text files of the built Linux module folder (manifest, format and types files, scripts, help). Returns the
# manifest's path.
function New-WindowsModuleFolder([string] $LinuxModuleFolder) {
    $target = Join-Path $WineCache 'windows/PtqTools'
    $stamp = Join-Path $WineCache 'windows/published.stamp'
    $inputs = @(Get-ChildItem (Join-Path $RepoRoot 'src') -Recurse -File -Include *.cs, *.csproj, *.c, *.h) +
        @(Get-ChildItem $LinuxModuleFolder -Recurse -File) + @(Get-Item (Join-Path $RepoRoot 'Directory.*.props'))
    if (-not (Test-UpToDate $stamp $inputs)) {
        $publish = Join-Path $WineCache 'windows/publish'
        foreach ($folder in $publish, $target) { if (Test-Path $folder) { Remove-Item $folder -Recurse -Force } }
        Invoke-Dotnet @('publish', (Join-Path $RepoRoot 'src/PtqTools/PtqTools.csproj'), '-c', 'Release', '-r', 'win-x64', '--self-contained', 'false',
            '-o', $publish, '--verbosity', 'quiet', '-p:ErrorOnDuplicatePublishOutputFiles=false')
        $null = New-Item -ItemType Directory $target
        Get-ChildItem $LinuxModuleFolder | Where-Object { $_.PSIsContainer -or $_.Extension -notin '.dll', '.so', '.pdb' } |
            Copy-Item -Destination $target -Recurse
        # pwsh brings its own PowerShell assemblies; the Linux kernel library (.so) is no Windows binary.
        Get-ChildItem $publish -File | Where-Object { $_.Extension -eq '.dll' -and $_.Name -notlike 'System.Management.Automation*' } |
            Copy-Item -Destination $target
        Set-Content -Path $stamp -Value (Get-Date -AsUTC -Format o)
    }
    Join-Path $target 'PtqTools.psd1'
}

# A Windows path for a Linux one: wine maps drive Z: to /.
function ConvertTo-WinePath([string] $Path) { 'Z:' + ($Path -replace '/', '\') }

# Runs the host under wine with a script and its arguments; returns exit code and text. The prefix is out/wine-prefix
# (made on first use, about 0.7 GB); no display is needed. DOTNET_EnableWriteXorExecute=0: under wine 8.0 .NET's
# double-mapped code memory breaks when a collected DynamicMethod is freed (PowerShell makes many): 'Internal CLR
# error (0x80131506)' in DynamicResolver+DestroyScout.Finalize, in a script of [GC]::Collect() and DynamicMethods
# alone, without the module. Windows itself needs no such setting.
function Invoke-WineHost([string] $Wine, [string] $HostExe, [string] $Script, [string[]] $Arguments, [int] $TimeoutSeconds = 300) {
    $start = [Diagnostics.ProcessStartInfo]::new($Wine)
    $start.ArgumentList.Add($HostExe)
    $start.ArgumentList.Add((ConvertTo-WinePath $Script))
    foreach ($a in $Arguments) { $start.ArgumentList.Add($a) }
    $start.RedirectStandardOutput = $true
    $start.RedirectStandardError = $true
    $start.UseShellExecute = $false
    $environment = @{ WINEPREFIX = (Join-Path $WineCache 'wine-prefix'); WINEDEBUG = '-all'; DISPLAY = $null; DOTNET_EnableWriteXorExecute = '0'
        DOTNET_CLI_TELEMETRY_OPTOUT = '1'; POWERSHELL_TELEMETRY_OPTOUT = '1'; PTQTOOLS_MODULE = $null; PTQTOOLS_CACHE = $null; PSModulePath = $null }
    foreach ($k in $environment.Keys) {
        if ($null -eq $environment[$k]) { $null = $start.Environment.Remove($k) } else { $start.Environment[$k] = $environment[$k] }
    }
    $process = [Diagnostics.Process]::Start($start)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    # A wine program that waits for ever (a dialog nobody sees) must not hold up the suite.
    if (-not $process.WaitForExit($TimeoutSeconds * 1000)) {
        $process.Kill($true)
        Stop-Wine $Wine
        $null = $process.WaitForExit(10000)
        return [pscustomobject]@{ ExitCode = -1; Text = "wine did not finish within $TimeoutSeconds s`n$($stdout.Result)`n$($stderr.Result)" }
    }
    $process.WaitForExit()
    [pscustomobject]@{ ExitCode = $process.ExitCode; Text = ($stdout.Result + $stderr.Result).TrimEnd() }
}

# Ends the prefix's wineserver (it would linger a few seconds after the last program).
function Stop-Wine([string] $Wine) {
    $server = Join-Path (Split-Path $Wine) 'wineserver64'
    if (-not (Test-Path $server)) { $server = Join-Path (Split-Path $Wine) 'wineserver' }
    if (Test-Path $server) {
        $env:WINEPREFIX = Join-Path $WineCache 'wine-prefix'
        try { & $server -k 2>&1 | Out-Null } finally { Remove-Item Env:WINEPREFIX }
    }
}
