# The module's Windows build, run where it is meant to run: imported into a win-x64 PowerShell 7.6.9 (the
# self-contained host tests/PtqTools.WinHost) under wine, it lists, calibrates, quantizes and tests a conformance
# model and a small CNN (WindowsScenario.ps1); the same scenario then runs on Linux in this pwsh, and both must write
# the same files. Skipped, with the reason, where wine is not installed (build.ps1 -Task Test installs Debian's wine64).
#
# The Windows module folder is the module under test itself (one package for every platform: its win-x64 natives are
# in dependencies/runtimes/win-x64/native), or $env:PTQTOOLS_WINDOWS_MODULE (a manifest path) when set.
BeforeAll {
    . (Join-Path $PSScriptRoot 'WindowsHost.ps1')
    $script:wine = Get-WineLoader
    $corpus = '/usr/share/libonnx-testdata/data/pytorch-converted/test_Conv2d'
    $script:skipReason = if (-not $wine) { "wine is not installed (Debian's wine64: /usr/lib/wine/wine64; build.ps1 -Task Test installs it as root)" }
        elseif (-not (Test-Path $corpus)) { "the conformance model $corpus is missing (Debian's libonnx-testdata; build.ps1 -Task Test installs it as root)" }
    if (-not $skipReason) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $linuxModule = $env:PTQTOOLS_MODULE
        $script:windowsModule = if ($env:PTQTOOLS_WINDOWS_MODULE) { $env:PTQTOOLS_WINDOWS_MODULE } else { $linuxModule }
        if (-not (Test-Path (Join-Path (Split-Path $windowsModule) 'dependencies/runtimes/win-x64/native/onnxruntime.dll'))) {
            throw "The module folder $(Split-Path $windowsModule) has no win-x64 natives (dependencies/runtimes/win-x64/native)."
        }
        $hostExe = Install-WinHost
        $script:prepareTime = $clock.Elapsed

        # The inputs, written once for both runs: a conformance model with its sample, a small CNN and 6 PNG images.
        Import-Module $linuxModule -Force
        . (Join-Path $PSScriptRoot 'TinyModels.ps1')
        $script:inputs = Join-Path $TestDrive 'inputs'
        $null = New-Item -ItemType Directory $inputs
        Copy-Item $corpus $inputs -Recurse
        $null = New-TinyCnn (Join-Path $inputs 'tiny-cnn.onnx') 3
        $null = New-ImageFolder (Join-Path $inputs 'images') 6

        $scenario = Join-Path $PSScriptRoot 'WindowsScenario.ps1'
        $winOut = Join-Path $TestDrive 'windows'
        $clock.Restart()
        $script:wineRun = Invoke-WineHost $wine $hostExe $scenario @('-ModulePath', (ConvertTo-WinePath $windowsModule),
            '-InputFolder', (ConvertTo-WinePath $inputs), '-OutputFolder', (ConvertTo-WinePath $winOut))
        $script:wineTime = $clock.Elapsed
        Stop-Wine $wine
        $script:windows = if (Test-Path (Join-Path $winOut 'result.json')) { Get-Content -Raw (Join-Path $winOut 'result.json') | ConvertFrom-Json }

        $linuxOut = Join-Path $TestDrive 'linux'
        & $scenario -ModulePath $linuxModule -InputFolder $inputs -OutputFolder $linuxOut 3> $null
        $script:linux = Get-Content -Raw (Join-Path $linuxOut 'result.json') | ConvertFrom-Json
        $script:outputs = @{ windows = $winOut; linux = $linuxOut }
        Write-Host "Windows module: $windowsModule; prepared in $($prepareTime.TotalSeconds.ToString('0.0')) s, wine run $($wineTime.TotalSeconds.ToString('0.0')) s"
    }
}

Describe 'The Windows build under wine' {
    It 'runs the scenario in a win-x64 PowerShell 7.6.9 with $IsWindows, loading onnxruntime.dll from the module folder' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $wineRun.ExitCode | Should -Be 0 -Because $wineRun.Text
        $windows | Should -Not -BeNullOrEmpty -Because "the Windows run wrote no result.json:`n$($wineRun.Text)"
        $windows.IsWindows | Should -BeTrue
        $windows.IsLinux | Should -BeFalse
        $windows.PSVersion | Should -Be '7.6.9'
        $windows.RuntimeIdentifier | Should -Be 'win-x64'
        $windows.ModuleBase | Should -BeLike 'Z:\*'
        $windows.OnnxRuntimeLibrary | Should -BeLike "$($windows.ModuleBase)\*onnxruntime.dll"
        $linux.IsWindows | Should -BeFalse
        $linux.OnnxRuntimeLibrary | Should -BeLike '*libonnxruntime.so'
    }

    It 'lists and calibrates the <_> model as on Linux' -ForEach 'conformance', 'cnn' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $w = $windows.Models | Where-Object Name -EQ $_
        $l = $linux.Models | Where-Object Name -EQ $_
        $w | Should -Not -BeNullOrEmpty
        $w.ModelSha256 | Should -Be $l.ModelSha256
        $w.Layers | Should -Be $l.Layers
        $w.Quantizable | Should -BeGreaterThan 0
        $w.Quantizable | Should -Be $l.Quantizable
        $w.Samples | Should -Be $l.Samples
        $w.Tensors | Should -Be $l.Tensors
        # Statistics: the same numbers in the same text (paths and times aside), with the same line endings.
        $w.RangesSha256 | Should -Be $l.RangesSha256
        $w.RangesLineEndings | Should -Be $l.RangesLineEndings
    }

    It 'writes the <_> int8 model byte for byte as on Linux, and tests it alike' -ForEach 'conformance', 'cnn' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $w = $windows.Models | Where-Object Name -EQ $_
        $l = $linux.Models | Where-Object Name -EQ $_
        $files = foreach ($side in 'windows', 'linux') { Join-Path $outputs[$side] "$_.int8.onnx" }
        $hashes = $files | ForEach-Object { (Get-FileHash -LiteralPath $_ -Algorithm SHA256).Hash }
        $hashes[0] | Should -Be $hashes[1]
        $w.Int8Sha256 | Should -Be $hashes[0]
        $l.Int8Sha256 | Should -Be $hashes[1]
        $w.QuantizedFrom | Should -Be $l.ModelSha256
        $w.Cosine | Should -BeGreaterThan 0.99
        [math]::Abs($w.Cosine - $l.Cosine) | Should -BeLessOrEqual 1e-4
    }

    It 'runs the <_> int8 model on the engine''s native kernels on Windows (the mingw-w64 DLL) with the outputs of Linux, bit for bit' -ForEach 'conformance', 'cnn' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $w = $windows.Models | Where-Object Name -EQ $_
        $l = $linux.Models | Where-Object Name -EQ $_
        # Every x64 CPU that runs this suite has AVX2, so the native library serves one of its paths on both sides;
        # which one is the host's business, and both sides see the same CPU.
        $l.EngineKernelPath | Should -BeLike 'Native*'
        $w.EngineKernelPath | Should -Be $l.EngineKernelPath
        $w.EngineOutputsSha256 | Should -Be $l.EngineOutputsSha256
    }

    It 'runs the batch cmdlet, writes text with LF line endings and keeps its cache in the run''s folder, as on Linux' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $w = $windows.Batch
        $l = $linux.Batch
        $w.First | Should -Be 'Quantized'
        $w.Second | Should -Be 'UpToDate'
        $w.Int8Sha256 | Should -Be $l.Int8Sha256
        $w.Int8Sha256 | Should -Be ($windows.Models | Where-Object Name -EQ 'cnn').Int8Sha256
        foreach ($side in $w, $l) {
            $side.LogLineEndings | Should -Be 'LF'
            $side.ReportJsonLineEndings | Should -Be 'LF'
            $side.ReportMarkdownLineEndings | Should -Be 'LF'
        }
        $w.CacheFolder | Should -Be ((ConvertTo-WinePath $outputs.windows) + '\cache')
    }

    It 'replaces an output another handle holds open on Linux, and on Windows says why it cannot' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $linux.Batch.ReplaceOpenFile | Should -Be 'Replaced'
        $windows.Batch.ReplaceOpenFile | Should -BeLike 'OutputNotWritable,*another program has open*'
    }

    It 'takes a path in another case for the same file on Windows: the source is not overwritten, the output folder stays one' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $windows.Batch.CaseOutput | Should -BeLike 'OutputIsSource,*'
        $windows.Batch.CaseBatch | Should -Be 'tiny-cnn.onnx UpToDate'
    }
}
