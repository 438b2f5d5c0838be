# Issue 17 against the built module: the architecture rules (Get-QuantizationRule, -SkipRule, decisions naming their
# rule) and the fidelity guard (held-out samples, the Fidelity object, -SkipFidelityCheck, warnings).
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    . (Join-Path $PSScriptRoot 'TinyModels.ps1')
    $script:work = Join-Path $TestDrive 'rules'
    $null = New-Item -ItemType Directory $work
    $script:Model = New-TinyCnn (Join-Path $work 'tiny.onnx') 3
    $script:Data = New-PtqDataSet (New-ImageFolder (Join-Path $work 'images') 20) -Resize 16
}

Describe 'Get-QuantizationRule' {
    It 'lists every rule with its kind and description, and finds them by pattern' {
        $rules = Get-QuantizationRule
        $rules.Name | Should -Contain 'AttentionMask'
        $rules.Name | Should -Contain 'ConstantDominatedRange'
        ($rules | Where-Object Kind -eq 'Statistics').Name | Should -Be 'ConstantDominatedRange'
        $rules | ForEach-Object { $_.Description | Should -Not -BeNullOrEmpty }
        (Get-QuantizationRule -Name 'Soft*').Name | Should -Be 'Softmax'
    }

    It 'names a rule that does not exist: UnknownRule' {
        $e = Get-ErrorRecord { Get-QuantizationRule -Name 'Sofmax' -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'UnknownRule,*'
        $e.CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }
}

Describe 'Invoke-Quantization -SkipRule' {
    It 'refuses an unknown rule before any work, naming the rules' {
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $Data -OutputPath (Join-Path $work 'x.onnx') -SkipRule Gelo -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'UnknownRule,*'
        $e.Exception.Message | Should -Match 'Gelu'
        Test-Path (Join-Path $work 'x.onnx') | Should -BeFalse
    }

    It 'records the rule set and the skipped rules in the options' {
        $r = Invoke-Quantization -Path $Model -DataSet $Data -OutputPath (Join-Path $work 'skip.onnx') -SkipRule Softmax, Gate -SkipFidelityCheck -Force
        $r.Options | Should -BeLike '*;rules=2,skip:Gate,Softmax*'
        (Get-OnnxModel (Join-Path $work 'skip.onnx')).QuantizationOptions | Should -Be $r.Options
    }
}

Describe 'The fidelity guard' {
    It 'checks the written model on the samples held out of calibration, and says so in the result' {
        $r = Invoke-Quantization -Path $Model -DataSet $Data -OutputPath (Join-Path $work 'guarded.onnx') -Force -WarningVariable warnings -WarningAction SilentlyContinue
        $r.Fidelity | Should -Not -BeNullOrEmpty
        $r.Fidelity.Samples | Should -Be 2          # samples 9 and 19 of 20
        $r.Fidelity.SampleSource | Should -BeLike '*held out of calibration*'
        $r.Fidelity.Status | Should -BeIn 'Passed', 'Searched', 'KeptFloat'
        $r.Fidelity.Speedup | Should -BeGreaterThan 0
        # Anything but a pass is a warning that carries the summary.
        if ($r.Fidelity.Status -ne 'Passed') { $warnings.Message | Should -Contain $r.Fidelity.Summary }
        # Calibration saw the other 18.
        $stats = Get-ModelLayer $Model | Measure-ActivationRange -DataSet $Data
        $stats[0].SampleCount | Should -Be 18
        $stats[0].HeldOut.HoldOutEvery | Should -Be 10
    }

    It 'holds out the same samples in the pipeline as in one step, so both write the same bytes' {
        $one = Invoke-Quantization -Path $Model -DataSet $Data -OutputPath (Join-Path $work 'one.onnx') -Force -WarningAction SilentlyContinue
        $piped = Get-ModelLayer $Model | Measure-ActivationRange -DataSet $Data |
            Invoke-Quantization -OutputPath (Join-Path $work 'piped.onnx') -Force -WarningAction SilentlyContinue
        $piped.Fidelity.Samples | Should -Be 2
        $piped.OutputSha256 | Should -Be $one.OutputSha256
    }

    It 'is not run with -SkipFidelityCheck' {
        $r = Invoke-Quantization -Path $Model -DataSet $Data -OutputPath (Join-Path $work 'skipped.onnx') -SkipFidelityCheck -Force
        $r.Fidelity | Should -BeNullOrEmpty
    }

    It 'warns when statistics come from a file without their data set' {
        $file = Join-Path $work 'ranges.json'
        Measure-ActivationRange -Path $Model -DataSet $Data | Export-ActivationRange -Path $file -Force
        $r = Import-ActivationRange -Path $file | Invoke-Quantization -OutputPath (Join-Path $work 'fromfile.onnx') -Force -WarningVariable warnings -WarningAction SilentlyContinue
        $r.Fidelity.Status | Should -Be 'NotChecked'
        ($warnings.Message -join "`n") | Should -Match 'Fidelity not checked.*-DataSet'
    }
}
