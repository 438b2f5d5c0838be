# Issue 14: a refactor keeps the bytes. The same matrix of quantizations (tests/Pester/WrittenBytes/Write-Cases.ps1:
# every mode, format, target, calibration method and algorithm, on a small CNN, MiniLM, ResNet18 and the five
# architecture models) runs with the module built from the baseline commit and with the module under test, on this
# host, in two fresh pwsh processes; every written model must be byte-identical. Both runs see this host's floats, so
# the comparison holds on every CPU class. A change that means to change the bytes moves the baseline in
# WrittenBytes/baseline.txt, and says why in its commit.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TinyModels.ps1')
    . (Join-Path $PSScriptRoot 'MiniLm.ps1')
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    Import-Module $env:PTQTOOLS_MODULE -Force
    $script:repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
    $script:baseline = (Get-Content (Join-Path $PSScriptRoot 'WrittenBytes/baseline.txt') | Where-Object { $_ -match '^[0-9a-f]{40}$' } | Select-Object -First 1)
    $script:skipReason = $null
    $git = Get-Command git -ErrorAction SilentlyContinue
    if (-not $git) { $script:skipReason = 'git is not installed: the baseline commit cannot be checked out' }
    elseif ((& git -C $repo cat-file -t $baseline 2> $null) -ne 'commit') { $script:skipReason = "this clone does not hold the baseline commit $baseline (a shallow clone?)" }
    if ($skipReason) { return }

    # The baseline module, built once per commit (out/written-bytes/<commit>/out/PtqTools).
    $baseRoot = Join-Path $repo "out/written-bytes/$baseline"
    $script:baseModule = Join-Path $baseRoot 'out/PtqTools/PtqTools.psd1'
    if (-not (Test-Path $baseModule)) {
        if (Test-Path $baseRoot) { Remove-Item -Recurse -Force $baseRoot }
        $null = New-Item -ItemType Directory $baseRoot
        & git -C $repo archive --format=tar $baseline | & tar -x -C $baseRoot
        if ($LASTEXITCODE -ne 0) { throw "git archive $baseline failed" }
        # The baseline's own build (its build.ps1 and project files), quietly; the shared ground truth is not needed.
        $log = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File (Join-Path $baseRoot 'build.ps1') -Task Build 2>&1
        if (-not (Test-Path $baseModule)) { throw "The baseline build failed:`n$($log | Select-Object -Last 30 | Out-String)" }
    }

    # The inputs, written once and read by both runs.
    $script:inputs = Join-Path $TestDrive 'inputs'
    $null = New-Item -ItemType Directory $inputs
    $null = New-TinyCnn (Join-Path $inputs 'tiny.onnx') 3
    $null = New-ImageFolder (Join-Path $inputs 'images') 20
    $null = Get-MiniLmModel $inputs
    Set-Content -Path (Join-Path $inputs 'sentences.txt') -Value (Get-LicenceSentences 8)
    Copy-Item $ResNet18, $ResNetPreprocess $inputs
    Copy-Item -Recurse (Join-Path $PSScriptRoot '../data/fashion-mnist-sample') (Join-Path $inputs 'fashion')
    $made = & dotnet run --project (Join-Path $repo 'tests/PtqTools.TestModels') -c Release -- $inputs bert11 crnn textdir vad dbnet 2>&1
    if ($LASTEXITCODE -ne 0) { throw "tests/PtqTools.TestModels failed:`n$($made | Out-String)" }

    # Both runs at once, each in a fresh pwsh.
    $cases = Join-Path $PSScriptRoot 'WrittenBytes/Write-Cases.ps1'
    $pwsh = Join-Path $PSHOME 'pwsh.dll'
    $script:baseOut = Join-Path $TestDrive 'baseline'
    $script:newOut = Join-Path $TestDrive 'current'
    $module = $env:PTQTOOLS_MODULE
    $runs = @(
        Start-Job { $env:PTQTOOLS_CACHE = Join-Path $using:TestDrive 'cache-baseline'; & dotnet $using:pwsh -NoProfile -NonInteractive -File $using:cases -ModulePath $using:baseModule -InputFolder $using:inputs -OutputFolder $using:baseOut 2>&1 }
        Start-Job { $env:PTQTOOLS_CACHE = Join-Path $using:TestDrive 'cache-current'; & dotnet $using:pwsh -NoProfile -NonInteractive -File $using:cases -ModulePath $using:module -InputFolder $using:inputs -OutputFolder $using:newOut 2>&1 }
    )
    $script:runLog = $runs | Wait-Job | Receive-Job | Out-String
    $runs | Remove-Job
    $script:baseCases = Get-Content -Raw (Join-Path $baseOut 'cases.json') | ConvertFrom-Json -AsHashtable
    $script:newCases = Get-Content -Raw (Join-Path $newOut 'cases.json') | ConvertFrom-Json -AsHashtable
}

Describe 'Written bytes against the baseline commit' {
    It 'runs every case of the matrix with both modules' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $baseCases.Count | Should -BeGreaterThan 35 -Because $runLog
        @($newCases.Keys) | Should -Be @($baseCases.Keys)
        # Every case wrote a model with the baseline: a case that fails in both would compare nothing.
        $baseCases.GetEnumerator() | Where-Object { $_.Value -notlike '*.onnx' } | ForEach-Object { "$($_.Key): $($_.Value)" } | Should -BeNullOrEmpty
    }

    It 'writes the same bytes as the baseline for every case' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $differ = foreach ($case in $baseCases.Keys) {
            if ($newCases[$case] -ne $baseCases[$case] -or $baseCases[$case] -notlike '*.onnx') { "$case`: $($newCases[$case]) (baseline: $($baseCases[$case]))"; continue }
            $a = (Get-FileHash (Join-Path $baseOut $baseCases[$case]) -Algorithm SHA256).Hash
            $b = (Get-FileHash (Join-Path $newOut $newCases[$case]) -Algorithm SHA256).Hash
            if ($a -ne $b) { "$case`: $b, baseline $a" }
        }
        $differ | Should -BeNullOrEmpty
    }
}
