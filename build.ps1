#Requires -Version 7.4
<#
.SYNOPSIS
    The one front door of the PtqTools build.
.DESCRIPTION
    Build    publishes the module folder out/PtqTools (manifest, format file, help, the loader and cmdlet assemblies,
             dependencies/ with the engine and the natives of win-x64, linux-x64, linux-arm64 and osx-arm64).
    Test     builds, runs the xunit engine tests, then Pester against the built module in a fresh pwsh, and ends with
             the line "N passed, N failed". Exits non-zero when either runner fails.
    Demo     builds, then quantizes the pretrained ResNet18 and reports size, fidelity and latency.
    Install  builds and copies the module into the user's module path.
    Package  builds and writes out/package/PtqTools.<version>.nupkg, which Install-PSResource installs from a local
             repository (a folder registered with Register-PSResourceRepository).
    Bench    builds and runs the benchmarks (docs/benchmarks.md records the figures). -BenchSet Engine runs only the
             engine against the host's peak (issue 16: same-run int8/fp32 peak, kernels as a fraction of it, ResNet18
             and MiniLM latency against ONNX Runtime int8 and fp32, memory growth; out/bench/engine/engine-bench.md).
    Corpus   walks Debian's libonnx-testdata conformance corpus (load, list layers, save, identical ORT outputs) and
             writes the figures to docs/corpus.md.
    Accuracy builds and runs the demo on 5,000 Fashion-MNIST test images, 2 threads (the kNN figure of docs/benchmarks.md).
    Fuzz     runs the fuzz harness (tests/PtqTools.Fuzz): 10,000 mutated models (-FuzzCases, -FuzzSeed) through every
             model-reading path in a restarted worker process; exits non-zero on any crash, hang, memory blow-up or
             exception other than a PtqException (docs/reliability.md).
.EXAMPLE
    dotnet tool restore && dotnet pwsh ./build.ps1 -Task Test
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Demo', 'Install', 'Package', 'Bench', 'Corpus', 'Accuracy', 'Fuzz')]
    [string] $Task = 'Build',
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',
    [ValidateSet('All', 'Engine')]
    [string] $BenchSet = 'All',
    [int] $FuzzSeed = 1,
    [int] $FuzzCases = 10000
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$env:DOTNET_CLI_TELEMETRY_OPTOUT = '1'
$env:DOTNET_NOLOGO = '1'

$root = $PSScriptRoot
$out = Join-Path $root 'out'
$moduleDir = Join-Path $out 'PtqTools'
$manifest = Import-PowerShellDataFile (Join-Path $root 'PtqTools.psd1')
$nuget = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path ([Environment]::GetFolderPath('UserProfile')) '.nuget/packages' }

function Invoke-Native {
    param([string] $File, [string[]] $Arguments)
    & $File @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$File $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

function Invoke-Build {
    Install-TestPackages 'gcc', 'gcc-mingw-w64-x86-64'
    Write-Host "== Build PtqTools $($manifest.ModuleVersion) ($Configuration)"
    # Packages used by the build and tests but not compiled against: Pester, and the pretrained ResNet18.
    Invoke-Native dotnet @('restore', (Join-Path $root 'tools/tools.proj'), '--verbosity', 'quiet')
    $publish = Join-Path $out 'publish'
    if (Test-Path $publish) { Remove-Item $publish -Recurse -Force }
    # Portable (no runtime identifier): AnyCPU assemblies and every package's runtimes/<rid>/native.
    Invoke-Native dotnet @('publish', (Join-Path $root 'src/PtqTools/PtqTools.csproj'), '-c', $Configuration,
        '-o', $publish, '--verbosity', 'quiet', '-p:ErrorOnDuplicatePublishOutputFiles=false')

    if (Test-Path $moduleDir) { Remove-Item $moduleDir -Recurse -Force }
    $null = New-Item -ItemType Directory -Path $moduleDir, (Join-Path $moduleDir 'en-US')
    Copy-Item (Join-Path $root 'PtqTools.psd1'), (Join-Path $root 'LICENSE') $moduleDir
    Copy-Item (Join-Path $root 'module/*.ps1xml') $moduleDir
    # Scripts shipped in the module folder: PtqTools.Remoting.ps1 (dot-sourced: fan-out over PowerShell remoting)
    # and Invoke-PtqBatch.ps1 (run with pwsh -File: the scheduler wrapper of Update-QuantizedModel).
    Copy-Item (Join-Path $root 'module/*.ps1') $moduleDir
    Copy-ModuleAssemblies -Publish $publish

    Import-Module (Join-Path $root 'tools/HelpBuilder.psm1') -Force
    $null = ConvertTo-MamlHelp -SourcePath (Join-Path $root 'docs/en-US') -OutputPath (Join-Path $moduleDir 'en-US/PtqTools.dll-Help.xml')
    $null = ConvertTo-AboutHelp -SourcePath (Join-Path $root 'docs/en-US') -OutputFolder (Join-Path $moduleDir 'en-US')
    Write-Host "Module folder: $moduleDir"
}

# The module folder's layout (docs/platforms.md): PtqTools.Loader.dll, then PtqTools.dll, the cmdlets, are what pwsh
# loads; the engine and its managed dependencies go to dependencies/, which the module's own AssemblyLoadContext
# loads (src/PtqTools.Loader/ModuleLoader.cs), and the natives of each platform to dependencies/runtimes/<rid>/native, which that context
# resolves for the running platform. pwsh brings its own PowerShell assemblies.
$script:PackageRids = 'win-x64', 'linux-x64', 'linux-arm64', 'osx-arm64'
function Copy-ModuleAssemblies([string] $Publish) {
    $deps = Join-Path $moduleDir 'dependencies'
    $null = New-Item -ItemType Directory $deps
    Copy-Item (Join-Path $Publish 'PtqTools.dll'), (Join-Path $Publish 'PtqTools.Loader.dll') $moduleDir
    if (Test-Path (Join-Path $Publish 'PtqTools.pdb')) { Copy-Item (Join-Path $Publish 'PtqTools.pdb') $moduleDir }
    if (Test-Path (Join-Path $Publish 'PtqTools.Core.pdb')) { Copy-Item (Join-Path $Publish 'PtqTools.Core.pdb') $deps }
    Get-ChildItem $Publish -File -Filter *.dll |
        Where-Object { $_.Name -notin 'PtqTools.dll', 'PtqTools.Loader.dll' -and $_.Name -notlike 'System.Management.Automation*' -and $_.Name -notlike '*.Tests.dll' } |
        Copy-Item -Destination $deps
    # A native the build left flat beside the engine (the own kernels where no runtimes/<rid> folder holds them).
    Get-ChildItem $Publish -File | Where-Object Extension -in '.so', '.dylib' | Copy-Item -Destination $deps
    foreach ($rid in $script:PackageRids) {
        $target = Join-Path $deps "runtimes/$rid/native"
        $null = New-Item -ItemType Directory $target -Force
        # SkiaSharp and HarfBuzzSharp ship one universal macOS library under runtimes/osx (x64 and arm64 slices).
        $sources = @(Join-Path $Publish "runtimes/$rid/native")
        if ($rid -like 'osx-*') { $sources += Join-Path $Publish 'runtimes/osx/native' }
        foreach ($source in $sources | Where-Object { Test-Path $_ }) {
            # Import libraries (.lib) link C code against a DLL; nothing loads them.
            Get-ChildItem $source -File | Where-Object Extension -ne '.lib' | Copy-Item -Destination $target
        }
        $natives = @(Get-ChildItem $target -File).Name
        foreach ($name in 'onnxruntime', 'libSkiaSharp', 'libHarfBuzzSharp') {
            $file = if ($rid -like 'win-*') { "$name.dll" } elseif ($rid -like 'osx-*') { "lib$($name -replace '^lib').dylib" } else { "lib$($name -replace '^lib').so" }
            if ($file -notin $natives) { throw "The publish output has no $file for $rid (looked in $($sources -join ', '))." }
        }
    }
}

function Invoke-Package {
    # The release notes, written for users, are the manifest's own (CHANGELOG.md is the developers' history).
    $package = Join-Path $out 'package'
    if (Test-Path $package) { Remove-Item $package -Recurse -Force }
    $null = New-Item -ItemType Directory $package
    $repoName = "PtqToolsBuild$PID"
    Register-PSResourceRepository -Name $repoName -Uri $package -Trusted
    try { Publish-PSResource -Path $moduleDir -Repository $repoName -SkipDependenciesCheck }
    finally { Unregister-PSResourceRepository -Name $repoName }
    Get-ChildItem $package -Filter *.nupkg | ForEach-Object { Write-Host "Package: $($_.FullName)" }
}

function Get-TrxCounts([string] $Path) {
    [xml] $trx = Get-Content -Raw $Path
    $c = $trx.TestRun.ResultSummary.Counters
    [pscustomobject]@{ Passed = [int]$c.passed; Failed = [int]$c.failed + [int]$c.error + [int]$c.timeout + [int]$c.aborted; Skipped = [int]$c.notExecuted }
}

# Debian packages the tests read (Fashion-MNIST, the ONNX conformance corpus), chromium, which renders the HTML
# report in a test, openssh-server, whose sshd the remoting test starts twice on 127.0.0.1 as two hosts, and wine64,
# which runs the module's Windows build in the Windows test (tests/Pester/Windows.Tests.ps1):
# installed here when missing, so that the README's test command does its own set-up on a fresh Debian machine.
# Where they cannot be installed (no apt, not root) the run goes on and says so.
# Also the compilers of the native kernels (gcc for linux-x64, mingw-w64 for win-x64), before every build.
function Install-TestPackages([string[]] $packages = @('dataset-fashion-mnist', 'libonnx-testdata', 'chromium', 'openssh-server', 'qemu-user-static', 'gcc-aarch64-linux-gnu', 'wine64')) {
    if (-not $IsLinux -or -not (Get-Command dpkg -ErrorAction SilentlyContinue)) { return }
    # Installed means 'install ok installed': a removed package whose configuration files remain answers dpkg -s too.
    $missing = @($packages | Where-Object { (& dpkg-query -W -f '${Status}' $_ 2> $null) -ne 'install ok installed' })
    if ($missing.Count -eq 0) { return }
    $apt = Get-Command apt-get -ErrorAction SilentlyContinue
    $uid = (& id -u) -as [int]
    if (-not $apt -or $uid -ne 0) {
        Write-Warning "Debian packages $($missing -join ', ') are missing and cannot be installed here (apt-get as root is needed): the tests that need them are skipped, each with the reason."
        return
    }
    Write-Host "== Installing Debian packages: $($missing -join ', ')"
    $env:DEBIAN_FRONTEND = 'noninteractive'
    # The tests start their own sshd (own ports, keys and config) and never use a system one: a policy-rc.d, where
    # the machine has none, keeps openssh-server's postinst from starting the ssh service while it is installed.
    $policy = '/usr/sbin/policy-rc.d'
    $ownPolicy = -not (Test-Path $policy)
    if ($ownPolicy) { Set-Content -Path $policy -Value "#!/bin/sh`nexit 101"; & chmod 755 $policy }
    try {
        & apt-get update -qq *> $null
        & apt-get install -y -qq @missing *> $null
        if ($LASTEXITCODE -ne 0) { Write-Warning "apt-get install $($missing -join ' ') failed (exit code $LASTEXITCODE): the tests that need them are skipped, each with the reason." }
    } finally { if ($ownPolicy) { Remove-Item $policy -Force } }
}

function Invoke-Test {
    Install-TestPackages
    Invoke-Build
    Invoke-Package   # the packaging test installs this nupkg
    $results = Join-Path $out 'test-results'
    if (Test-Path $results) { Remove-Item $results -Recurse -Force }
    $null = New-Item -ItemType Directory $results

    # The host's CPU class first: what ONNX Runtime's int8 kernels compute here (tests about a class use explicit
    # targets and the engine's emulation, so the suite holds on every class; this line says which one ran it).
    $class = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -Command "Add-Type -Path '$(Join-Path $moduleDir 'dependencies/PtqTools.Core.dll')'; `$c = [PtqTools.Core.Quantization.QuantTargets]::HostClass; '{0} ({1})' -f `$c, [PtqTools.Core.Quantization.QuantTargets]::Describe(`$c)"
    Write-Host "== Host CPU class: $class"

    Write-Host '== xunit (engine)'
    & dotnet test (Join-Path $root 'tests/PtqTools.Core.Tests/PtqTools.Core.Tests.csproj') -c $Configuration `
        --logger 'trx;LogFileName=xunit.trx' --logger 'console;verbosity=normal' --results-directory $results
    $xunitExit = $LASTEXITCODE
    $trxFile = Join-Path $results 'xunit.trx'
    $xunit = if (Test-Path $trxFile) { Get-TrxCounts $trxFile } else { [pscustomobject]@{ Passed = 0; Failed = 1; Skipped = 0 } }

    Write-Host '== Pester (built module, fresh pwsh)'
    $pesterJson = Join-Path $results 'pester.json'
    & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File (Join-Path $root 'tests/Pester/Invoke-PesterSuite.ps1') `
        -ModulePath (Join-Path $moduleDir 'PtqTools.psd1') -PesterPath (Join-Path $nuget 'pester/5.7.1/tools/Pester.psd1') -ResultPath $pesterJson
    $pesterExit = $LASTEXITCODE
    $pester = if (Test-Path $pesterJson) { Get-Content -Raw $pesterJson | ConvertFrom-Json } else { [pscustomobject]@{ Passed = 0; Failed = 1; Skipped = 0 } }

    $passed = $xunit.Passed + $pester.Passed
    $failed = $xunit.Failed + $pester.Failed
    if ($failed -eq 0 -and ($xunitExit -ne 0 -or $pesterExit -ne 0)) { $failed = 1 }
    # Skipped: tests that cannot run here, e.g. a Debian package that could not be installed (each printed its reason).
    $skipped = [int]$xunit.Skipped + [int]$pester.Skipped
    Write-Host "xunit: $($xunit.Passed) passed, $($xunit.Failed) failed, $($xunit.Skipped) skipped; Pester: $($pester.Passed) passed, $($pester.Failed) failed, $($pester.Skipped) skipped"
    Write-Host "Skipped: $skipped (each printed its reason above)"
    Write-Host "$passed passed, $failed failed"
    if ($failed -gt 0) { exit 1 }
}

switch ($Task) {
    'Build' { Invoke-Build }
    'Test' { Invoke-Test }
    'Demo' {
        Invoke-Build
        & (Join-Path $root 'docs/examples/Invoke-Demo.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1') -OutputFolder (Join-Path $out 'demo')
    }
    'Install' {
        Invoke-Build
        $userModules = ($env:PSModulePath -split [IO.Path]::PathSeparator | Where-Object { $_ -like "$([Environment]::GetFolderPath('UserProfile'))*" } | Select-Object -First 1)
        if (-not $userModules) { $userModules = Join-Path ([Environment]::GetFolderPath('UserProfile')) '.local/share/powershell/Modules' }
        $target = Join-Path $userModules "PtqTools/$($manifest.ModuleVersion)"
        if (Test-Path $target) { Remove-Item $target -Recurse -Force }
        $null = New-Item -ItemType Directory $target -Force
        Copy-Item (Join-Path $moduleDir '*') $target -Recurse
        Write-Host "Installed PtqTools $($manifest.ModuleVersion) to $target; run: Import-Module PtqTools"
    }
    'Package' { Invoke-Build; Invoke-Package }
    'Corpus' {
        $env:PTQ_CORPUS_REPORT = Join-Path $root 'docs/corpus.md'
        try {
            Invoke-Native dotnet @('test', (Join-Path $root 'tests/PtqTools.Core.Tests/PtqTools.Core.Tests.csproj'), '-c', $Configuration,
                '--filter', 'FullyQualifiedName~CorpusWalkTests', '--logger', 'console;verbosity=normal')
        } finally { Remove-Item Env:PTQ_CORPUS_REPORT }
        Write-Host "Figures written to $(Join-Path $root 'docs/corpus.md')"
    }
    'Accuracy' {
        Invoke-Build
        & (Join-Path $root 'docs/examples/Invoke-Demo.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1') -OutputFolder (Join-Path $out 'accuracy') `
            -EvaluationImages 5000 -ThreadCount 2 -LatencyRuns 20
    }
    'Fuzz' {
        Invoke-Native dotnet @('build', (Join-Path $root 'tests/PtqTools.Fuzz/PtqTools.Fuzz.csproj'), '-c', $Configuration, '--verbosity', 'quiet')
        # ResNet18 (restored by the test project's PackageDownload) is 0.5% of the cases, the synthetic models 10%.
        Invoke-Native dotnet @('restore', (Join-Path $root 'tests/PtqTools.Core.Tests/PtqTools.Core.Tests.csproj'), '--verbosity', 'quiet')
        Invoke-Native dotnet @((Join-Path $root "tests/PtqTools.Fuzz/bin/$Configuration/net10.0/PtqTools.Fuzz.dll"), 'run', '--seed', $FuzzSeed,
            '--cases', $FuzzCases, '--resnet', '0.005', '--synthetic', '0.1', '--out', (Join-Path $out 'fuzz'))
    }
    'Bench' {
        if ($BenchSet -eq 'Engine') {
            # Issue 16: a few minutes; the Markdown section it writes goes into docs/benchmarks.md as is.
            Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
                'hardware', '--out', (Join-Path $out 'bench/engine'))
            # Where ONNX Runtime's int8 convolution pays (the ShallowConv rule; out/bench/engine/conv-depth.md).
            Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
                'convdepth', '--out', (Join-Path $out 'bench/engine'))
            return
        }
        Invoke-Build
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Invoke-Benchmarks.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1')
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Measure-CalibrationCost.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1')
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Compare-CalibrationMethods.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1')
        # Evaluation (issue 7): accuracy-aware MiniLM, and latency/memory over threads, batches and engines.
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Invoke-MiniLmAccuracyAware.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1') -OutputFolder (Join-Path $out 'bench/minilm-aware')
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Measure-ModelPerformance.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1') -OutputFolder (Join-Path $out 'bench/performance')
        # CPU targets (issue 19): the overflow fixes on ResNet18 and MiniLM as AVX2 and exact CPUs compute them, and
        # what emulating AVX2 costs the engine on the ground truth's int8 ResNet18 (exact and emulated interleaved).
        & (Join-Path $root 'tests/PtqTools.Benchmarks/Compare-OverflowFixes.ps1') -ModulePath (Join-Path $moduleDir 'PtqTools.psd1')
        Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
            'emulation', (Join-Path $root '../shared/ground-truth/ort-1.31.1-avx2/resnet18_int8_default/model.onnx'), '40', '1')
        # The engine against this host's peak (issue 16; out/bench/engine/engine-bench.md).
        Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
            'hardware', '--out', (Join-Path $out 'bench/engine'))
        Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
            'convdepth', '--out', (Join-Path $out 'bench/engine'))
        # Int8 kernels vs ONNX Runtime (BenchmarkDotNet; reports in out/bench/kernels/results).
        Invoke-Native dotnet @('run', '-c', 'Release', '--project', (Join-Path $root 'tests/PtqTools.Benchmarks/KernelBenchmarks'), '--',
            '--filter', '*', '--artifacts', (Join-Path $out 'bench/kernels'))
    }
}
