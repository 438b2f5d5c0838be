# -Target on the evaluation cmdlets: the quantized model computed by the PtqTools engine emulating a CPU class's ONNX
# Runtime int8 arithmetic. Nothing here depends on the CPU the tests run on: Vnni and Avx2 are both emulated, and
# Host is only checked to be one of them.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $calib = New-ResNetDataSet -Split train -Count 8
    $script:stats = Measure-ActivationRange -Path $ResNet18 -DataSet $calib -ThreadCount 2
    # Full-range weights (written for an exact class, as the default wrote them before targets): their pairs
    # saturate on AVX2. The default (Portable) writes weights whose pairs never do.
    $script:int8 = $stats | Invoke-Quantization -Target Vnni -SkipHostCheck -OutputPath (Join-Path $TestDrive 'r18.int8.onnx')
    # 7-bit weights (reduce range): no pair can saturate, 2 x 255 x 64 < 32768.
    $script:int7 = $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'r18.int7.onnx') -ReduceRange
    $script:data = New-ResNetDataSet -Split t10k -Count 3 -Skip 40
}

Describe 'Test-QuantizedModel -Target' {
    BeforeAll {
        $script:vnni = $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Vnni
        $script:avx2 = $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Avx2
    }

    It 'names the emulated class in the report, and none for ONNX Runtime on this machine' {
        $vnni.Target | Should -Be 'Vnni'
        $avx2.Target | Should -Be 'Avx2'
        $ort = $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0
        $ort.Target | Should -Be ''
        ($avx2 | Format-List | Out-String) | Should -Match 'Target\s+: Avx2 \(PtqTools engine\)'
        ($ort | Format-List | Out-String) | Should -Match 'Target\s+: ONNX Runtime on this machine'
    }

    It 'shows the saturation of full-range weights on AVX2 and none with 7-bit weights' {
        Write-Host ("full range: Vnni cosine {0} SQNR {1}; Avx2 cosine {2} SQNR {3}" -f $vnni.Cosine, $vnni.SqnrDb, $avx2.Cosine, $avx2.SqnrDb)
        $avx2.Cosine | Should -BeLessThan ($vnni.Cosine - 0.01)
        $avx2.SqnrDb | Should -BeLessThan ($vnni.SqnrDb - 3)
        $v7 = $int7 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Vnni
        $a7 = $int7 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Avx2
        $a7.Cosine | Should -Be $v7.Cosine
        $a7.SqnrDb | Should -Be $v7.SqnrDb
        $a7.MaxAbsError | Should -Be $v7.MaxAbsError
    }

    It 'emulates Avx512 like Avx2 and Amx and Arm64 like Vnni, and Host as one of them' {
        ($int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Avx512).SqnrDb | Should -Be $avx2.SqnrDb
        ($int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Amx).SqnrDb | Should -Be $vnni.SqnrDb
        ($int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Arm64).SqnrDb | Should -Be $vnni.SqnrDb
        $hostReport = $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Host
        $hostReport.Target | Should -BeIn 'Avx2', 'Avx512', 'Vnni', 'Amx', 'Arm64'   # Host, resolved to this machine's class
        $hostReport.SqnrDb | Should -BeIn @($vnni.SqnrDb, $avx2.SqnrDb)
    }

    It 'still times ONNX Runtime on this machine' {
        $r = $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 2 -Target Avx2
        $r.QuantizedLatencyMs | Should -BeGreaterThan 0
        $r.FloatLatencyMs | Should -BeGreaterThan 0
    }

    It 'refuses a class it does not know' {
        $e = Get-ErrorRecord { $int8 | Test-QuantizedModel -DataSet $data -LatencyRuns 0 -Target Sse -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ParameterArgumentValidationError*'
    }
}

Describe 'Invoke-ModelInference -Target' {
    It 'emulates the class on the PtqTools engine' {
        $exact = @(Invoke-ModelInference -Path $int8.OutputPath -DataSet $data -Engine PtqTools)
        $vnni = @(Invoke-ModelInference -Path $int8.OutputPath -DataSet $data -Engine PtqTools -Target Vnni)
        $avx2 = @(Invoke-ModelInference -Path $int8.OutputPath -DataSet $data -Engine PtqTools -Target Avx2)
        $avx2.Count | Should -Be 3
        $exact[0].Target | Should -Be ''
        $avx2[0].Target | Should -Be 'Avx2'
        foreach ($i in 0..2) {
            [Linq.Enumerable]::SequenceEqual([float[]]$exact[$i].Outputs[0], [float[]]$vnni[$i].Outputs[0]) | Should -BeTrue
            [Linq.Enumerable]::SequenceEqual([float[]]$exact[$i].Outputs[0], [float[]]$avx2[$i].Outputs[0]) | Should -BeFalse
        }
        ($avx2 | Format-Table | Out-String) | Should -Match 'PtqTools/Avx2'
    }

    It 'gives the same outputs with 7-bit weights whatever the class' {
        $vnni = @(Invoke-ModelInference -Path $int7.OutputPath -DataSet $data -Engine PtqTools -Target Vnni)
        $avx2 = @(Invoke-ModelInference -Path $int7.OutputPath -DataSet $data -Engine PtqTools -Target Avx2)
        foreach ($i in 0..2) { [Linq.Enumerable]::SequenceEqual([float[]]$vnni[$i].Outputs[0], [float[]]$avx2[$i].Outputs[0]) | Should -BeTrue }
    }

    It 'refuses -Target with ONNX Runtime, <Case>, before any work' -ForEach @(
        @{ Case = 'the default engine'; Engine = $null }
        @{ Case = '-Engine OnnxRuntime'; Engine = 'OnnxRuntime' }
    ) {
        $engineArgs = if ($Engine) { @{ Engine = $Engine } } else { @{} }
        # A model that does not exist: the option error comes first, no path is resolved and nothing is run.
        $missing = Join-Path $TestDrive 'none.onnx'
        $e = Get-ErrorRecord { Invoke-ModelInference -Path $missing -DataSet $data -Target Avx2 @engineArgs -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
        $e.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $e.Exception.Message | Should -Match '-Engine PtqTools'
        # A terminating error, as for any conflicting options: not one error per model piped in.
        $script:out = $null
        $e = Get-ErrorRecord { $script:out = $int8 | Invoke-ModelInference -DataSet $data -Target Vnni @engineArgs -ErrorAction SilentlyContinue }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
        $script:out | Should -BeNullOrEmpty
    }

    It 'refuses a class it does not know' {
        $e = Get-ErrorRecord { Invoke-ModelInference -Path $int8.OutputPath -DataSet $data -Engine PtqTools -Target Sse -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ParameterArgumentValidationError*'
    }
}

Describe 'Measure-LayerError -Target' {
    BeforeAll {
        $one = New-ResNetDataSet -Split t10k -Count 1 -Skip 60
        $script:lAvx2 = @($stats | Measure-LayerError -DataSet $one -ThreadCount 2 -Target Avx2)
        $script:lVnni = @($stats | Measure-LayerError -DataSet $one -ThreadCount 2 -Target Vnni)
        $script:lOrt = @($stats | Measure-LayerError -DataSet $one -ThreadCount 2)
    }

    It 'measures the same layers, naming the class' {
        $lAvx2.Count | Should -Be $lOrt.Count
        @($lAvx2 | Sort-Object Layer | ForEach-Object Layer) | Should -Be @($lOrt | Sort-Object Layer | ForEach-Object Layer)
        $lAvx2 | ForEach-Object { $_.Target | Should -Be 'Avx2' }
        $lOrt | ForEach-Object { $_.Target | Should -Be '' }
    }

    It 'finds no layer that saturates on AVX2 in the default (Portable) weights: the exact class''s figures' {
        # Measure-LayerError quantizes as Invoke-Quantization does by default; its pairs never leave int16, so the
        # saturating class computes every layer as the exact one does (full-range weights do not: see above).
        foreach ($v in $lVnni) {
            $a = $lAvx2 | Where-Object Layer -EQ $v.Layer
            $a.IsolatedSqnrDb | Should -Be $v.IsolatedSqnrDb -Because $v.Layer
            $a.AccumulatedSqnrDb | Should -Be $v.AccumulatedSqnrDb -Because $v.Layer
        }
    }

    It 'gives ONNX Runtime''s isolated figures with an exact class: the same tensors, the same meaning' {
        foreach ($v in $lVnni) {
            $o = $lOrt | Where-Object Layer -EQ $v.Layer
            $v.Tensor | Should -Be $o.Tensor
            $v.IsolatedSqnrDb | Should -Be $o.IsolatedSqnrDb -Because $v.Layer
            [Math]::Abs($v.AccumulatedSqnrDb - $o.AccumulatedSqnrDb) | Should -BeLessThan 0.5 -Because $v.Layer
        }
    }

    It 'refuses a class it does not know' {
        $e = Get-ErrorRecord { $stats | Measure-LayerError -DataSet $data -Target Sse -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ParameterArgumentValidationError*'
    }
}
