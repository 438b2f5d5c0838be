# -Target: the CPU class a model is written for, host detection forced to each class, the recorded target, and the
# host check after writing. No test depends on the class of the CPU it runs on.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:work = Join-Path ([IO.Path]::GetTempPath()) "ptq-targets-$PID"
    $null = New-Item -ItemType Directory -Force $work
    $script:calibration = New-ResNetDataSet -Split train -Count 4
    $script:stats = Get-ModelLayer $ResNet18 | Measure-ActivationRange -DataSet $calibration
    $script:ranges = Join-Path $work 'ranges.json'
    $stats | Export-ActivationRange -Path $ranges -Force
    $script:pwsh = Join-Path $PSHOME 'pwsh.dll'

    # Quantizes the saved statistics in a fresh pwsh whose host detection is forced to $Class, and returns the result.
    function Invoke-AsHost([string] $Class, [string] $Target, [string] $Name) {
        $out = Join-Path $work $Name
        $script = "Import-Module '$env:PTQTOOLS_MODULE'; Import-ActivationRange -Path '$ranges' | Invoke-Quantization -Target $Target -SkipHostCheck -OutputPath '$out' -Force -WarningAction SilentlyContinue | ConvertTo-Json -Depth 3"
        $env:PTQTOOLS_CPU_CLASS = $Class
        try { $json = & dotnet $pwsh -NoProfile -NonInteractive -Command $script 2>&1 }
        finally { Remove-Item Env:PTQTOOLS_CPU_CLASS }
        $LASTEXITCODE | Should -Be 0 -Because ($json -join "`n")
        ($json -join "`n") | ConvertFrom-Json
    }
}

AfterAll {
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}

Describe 'Invoke-Quantization -Target' {
    It 'writes for <Class> under -Target Host exactly the bytes of -Target <Class>, whatever the real CPU' -ForEach @(
        @{ Class = 'Avx2' }, @{ Class = 'Avx512' }, @{ Class = 'Vnni' }, @{ Class = 'Amx' }, @{ Class = 'Arm64' }
    ) {
        $asHost = Invoke-AsHost $Class 'Host' "host-$Class.onnx"
        $asHost.Target | Should -Be $Class
        $asHost.HostClass | Should -Be $Class
        $explicit = $stats | Invoke-Quantization -Target $Class -SkipHostCheck -OutputPath (Join-Path $work "explicit-$Class.onnx") -Force
        $explicit.Target | Should -Be $Class
        $asHost.OutputSha256 | Should -Be $explicit.OutputSha256
        (Get-OnnxModel $explicit.OutputPath).QuantizationTarget | Should -Be $Class
        $explicit.Options | Should -BeLike "*;target=$($Class.ToLowerInvariant())*"
        if ($Class -in 'Avx2', 'Avx512') {
            $explicit.OverflowFix | Should -Be 'Channels'
            @($explicit.PairSafeLayers).Count | Should -BeGreaterThan 0
        }
        else {
            $explicit.OverflowFix | Should -BeNullOrEmpty
            @($explicit.PairSafeLayers).Count | Should -Be 0
        }
    }

    It 'writes the same Portable file on every host class, and the Avx2 file holds the same weights' {
        $hashes = foreach ($class in 'Avx2', 'Amx', 'Arm64') { (Invoke-AsHost $class 'Portable' "portable-$class.onnx").OutputSha256 }
        @($hashes | Select-Object -Unique).Count | Should -Be 1
        $portable = $stats | Invoke-Quantization -SkipHostCheck -OutputPath (Join-Path $work 'portable.onnx') -Force
        $portable.Target | Should -Be 'Portable'
        $portable.OutputSha256 | Should -Be $hashes[0]
        # Portable and Avx2 differ only in the recorded target: the decisions are the same.
        $avx2 = $stats | Invoke-Quantization -Target Avx2 -SkipHostCheck -OutputPath (Join-Path $work 'avx2.onnx') -Force
        ($avx2.Decisions -join "`n") | Should -Be (($portable.Decisions -join "`n") -replace 'portable \(right on every CPU class\)', 'x86-64 AVX2 without VNNI')
    }

    It 'refuses a forced host class that is not one, naming the variable' {
        $env:PTQTOOLS_CPU_CLASS = 'Pentium'
        try {
            $out = & dotnet $pwsh -NoProfile -NonInteractive -Command "Import-Module '$env:PTQTOOLS_MODULE'; try { Import-ActivationRange -Path '$ranges' | Invoke-Quantization -Target Host -OutputPath '$work/never.onnx' -ErrorAction Stop } catch { `$_.FullyQualifiedErrorId; `$_.CategoryInfo.Category; `$_.Exception.Message }" 2>&1
        }
        finally { Remove-Item Env:PTQTOOLS_CPU_CLASS }
        $out[0] | Should -BeLike 'InvalidCpuClass,*'
        $out[1] | Should -Be 'InvalidArgument'
        $out[2] | Should -BeLike '*PTQTOOLS_CPU_CLASS*Pentium*'
        Test-Path "$work/never.onnx" | Should -BeFalse
    }

    It 'names the layers still at risk and warns with -OverflowFix None, and fixes only the first with FirstLayer' {
        $none = $stats | Invoke-Quantization -Target Avx2 -OverflowFix None -SkipHostCheck -OutputPath (Join-Path $work 'none.onnx') -Force -WarningVariable warned -WarningAction SilentlyContinue
        @($none.OverflowLayers).Count | Should -BeGreaterThan 0
        @($none.PairSafeLayers).Count | Should -Be 0
        ($warned -join ' ') | Should -BeLike '*pair sums can leave int16*-OverflowFix Channels*'
        $none.Decisions | Where-Object { $_ -like '*WARNING: u8 x s8 pair sums can leave int16*' } | Should -HaveCount @($none.OverflowLayers).Count
        $first = $stats | Invoke-Quantization -Target Avx2 -OverflowFix FirstLayer -SkipHostCheck -OutputPath (Join-Path $work 'first.onnx') -Force -WarningAction SilentlyContinue
        @($first.PairSafeLayers) | Should -HaveCount 1
        $first.Decisions | Where-Object { $_ -like '*7-bit weights*' } | Should -HaveCount 1
        $rr = $stats | Invoke-Quantization -Target Avx2 -OverflowFix ReduceRange -SkipHostCheck -OutputPath (Join-Path $work 'rr.onnx') -Force
        @($rr.OverflowLayers).Count | Should -Be 0
        @($rr.PairSafeLayers).Count | Should -Be @($none.OverflowLayers).Count
    }

    It 'checks the written model on this host and records it' {
        $r = $stats | Invoke-Quantization -DataSet $calibration -OutputPath (Join-Path $work 'checked.onnx') -Force -WarningVariable warned
        $r.HostCheck.Status | Should -Be 'Passed'
        $r.HostCheck.Samples | Should -Be 4
        $r.HostCheck.SampleSource | Should -BeLike '*calibration*'
        $r.HostCheck.MinCosine | Should -BeGreaterOrEqual 0.9999
        $warned | Should -BeNullOrEmpty
        # Without -DataSet the samples are drawn from the calibrated range of the model input.
        $s = $stats | Invoke-Quantization -OutputPath (Join-Path $work 'checked2.onnx') -Force
        $s.HostCheck.Status | Should -Be 'Passed'
        $s.HostCheck.SampleSource | Should -BeLike '*calibrated range*'
        ($r | Format-List | Out-String) | Should -BeLike '*HostCheck*Passed on*'
    }
}
