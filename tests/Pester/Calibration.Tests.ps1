BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    # Eight Fashion-MNIST training images prepared for ResNet18; the reference run calibrates all of them at once.
    $script:data = New-ResNetDataSet -Split train -Count 8
    $script:single = Measure-ActivationRange -Path $ResNet18 -DataSet $data -Method Entropy -ThreadCount 1
}

Describe 'Calibration methods' {
    It 'has format views for the output of <_>' -ForEach 'Import-ActivationRange', 'Merge-ActivationRange' {
        Get-FormatData -TypeName (Get-Command $_).OutputType[0].Name | Should -Not -BeNullOrEmpty
    }

    It 'computes every method in one pass, with a histogram of the values' {
        $single.Count | Should -Be 34
        foreach ($s in $single) {
            @($s.Ranges.Method) | Should -Be @('MinMax', 'MovingAverageMinMax', 'Percentile', 'Entropy', 'Mse', 'Auto')
            ($s.Histogram | Measure-Object -Sum).Sum | Should -Be $s.ElementCount
            $s.Method | Should -Be 'Entropy'
            $s.RangeMax | Should -Be ($s.Ranges | Where-Object Method -EQ 'Entropy').RangeMax
        }
    }

    It 'finds Entropy thresholds inside the observed range (it does not collapse to MinMax)' {
        $clipped = @($single | Where-Object { $_.RangeMax -lt 0.9 * $_.Max })
        $clipped.Count | Should -BeGreaterThan ($single.Count / 2)
    }

    It 'gives Auto the lowest simulated error of all methods' {
        foreach ($s in $single) {
            $auto = ($s.Ranges | Where-Object Method -EQ 'Auto').Error
            $auto | Should -Be (($s.Ranges | Where-Object Method -NE 'Auto').Error | Measure-Object -Minimum).Minimum
        }
    }
}

Describe 'A calibration split across parallel runspaces and merged' {
    BeforeAll {
        $module = $env:PTQTOOLS_MODULE
        $testData = Join-Path $PSScriptRoot 'TestData.ps1'
        # Four shards of two images each, calibrated in parallel runspaces.
        $script:shards = 0..3 | ForEach-Object -ThrottleLimit 2 -Parallel {
            Import-Module $using:module
            . $using:testData
            $part = New-ResNetDataSet -Split train -Count 2 -Skip ($_ * 2)
            Measure-ActivationRange -Path $ResNet18 -DataSet $part -Method Entropy -ThreadCount 1
        }
        $script:merged = $shards | Merge-ActivationRange
    }

    It 'gives what one run over all the data gives' {
        $shards.Count | Should -Be (4 * $single.Count)
        $merged.Count | Should -Be $single.Count
        foreach ($one in $single) {
            $m = $merged | Where-Object Tensor -EQ $one.Tensor
            $m.SampleCount | Should -Be 8
            $m.Min | Should -Be $one.Min
            $m.Max | Should -Be $one.Max
            $m.HistogramExponent | Should -Be $one.HistogramExponent
            $m.HistogramStart | Should -Be $one.HistogramStart
            ($m.Histogram -join ',') | Should -Be ($one.Histogram -join ',')
            foreach ($method in 'MinMax', 'Percentile', 'Entropy', 'Mse', 'Auto') {
                $a = $one.Ranges | Where-Object Method -EQ $method
                $b = $m.Ranges | Where-Object Method -EQ $method
                "$method $($b.RangeMin) $($b.RangeMax)" | Should -Be "$method $($a.RangeMin) $($a.RangeMax)"
            }
            $m.RangeMax | Should -Be $one.RangeMax
        }
    }

    It 'switches the method of merged statistics without running the model' {
        $mse = $shards | Merge-ActivationRange -Method Mse
        foreach ($m in $mse) {
            $m.Method | Should -Be 'Mse'
            $m.RangeMax | Should -Be ($m.Ranges | Where-Object Method -EQ 'Mse').RangeMax
        }
    }

    It 'refuses shards of different models with ModelMismatch' {
        $other = $shards[0].PSObject.Copy()
        $other.ModelSha256 = '00' * 32
        $e = Get-ErrorRecord { @($shards[1], $other) | Merge-ActivationRange -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelMismatch,*'
    }
}

Describe 'Export-ActivationRange and Import-ActivationRange' {
    It 'round-trips the statistics and quantizes from the file' {
        $file = Join-Path $TestDrive 'ranges.json'
        $single | Export-ActivationRange -Path $file -PassThru | Should -BeOfType System.IO.FileInfo
        $json = Get-Content -Raw $file | ConvertFrom-Json
        $json.Schema | Should -Be 'PtqTools.ActivationRange'
        $json.Version | Should -Be 1
        $json.ModelSha256 | Should -Be (Get-FileHash $ResNet18).Hash
        $back = Import-ActivationRange -Path $file -ModelPath $ResNet18
        $back.Count | Should -Be $single.Count
        foreach ($one in $single) {
            $b = $back | Where-Object Tensor -EQ $one.Tensor
            $b.RangeMin | Should -Be $one.RangeMin
            $b.RangeMax | Should -Be $one.RangeMax
            ($b.Histogram -join ',') | Should -Be ($one.Histogram -join ',')
        }
        $result = $back | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'q.onnx')
        $result.QuantizedLayerCount | Should -BeGreaterThan 0
    }

    It 'refuses another model with ModelMismatch, naming the hashes' {
        $file = Join-Path $TestDrive 'ranges2.json'
        $single | Export-ActivationRange -Path $file
        $copy = Join-Path $TestDrive 'changed.onnx'
        Copy-Item $ResNet18 $copy
        [IO.File]::AppendAllText($copy, ' ')
        $e = Get-ErrorRecord { Import-ActivationRange -Path $file -ModelPath $copy -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelMismatch,*'
        $e.Exception.Message | Should -Match (Get-FileHash $ResNet18).Hash
    }

    It 'writes nothing with -WhatIf, and refuses to overwrite without -Force' {
        $file = Join-Path $TestDrive 'whatif.json'
        $single | Export-ActivationRange -Path $file -WhatIf
        Test-Path $file | Should -BeFalse
        $single | Export-ActivationRange -Path $file
        $e = Get-ErrorRecord { $single | Export-ActivationRange -Path $file -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputExists,*'
        $single | Export-ActivationRange -Path $file -Force
    }

    It 'refuses a file that is not an activation range file' {
        $file = Join-Path $TestDrive 'other.json'
        '{"Schema":"something else","Version":1}' | Set-Content $file
        $e = Get-ErrorRecord { Import-ActivationRange -Path $file -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ActivationRangeFileInvalid,*'
    }
}

Describe 'Measure-ActivationRange -SkipInvalid' {
    # Skipping samples whose activations overflow is tested in xunit (SkipInvalidTests) on a small model.
    BeforeAll { $script:layers = Get-ModelLayer $ResNet18 | Select-Object -First 3 }

    It 'reports NoValidSamples when every sample is rejected' {
        $small = New-PtqDataSet -InputObject ([float[]]::new(12)), ([float[]]::new(12)) -Shape 3, 2, 2
        (Get-ErrorRecord { $layers | Measure-ActivationRange -DataSet $small -ErrorAction Stop }).FullyQualifiedErrorId | Should -BeLike 'DataShapeMismatch,*'
        (Get-ErrorRecord { $layers | Measure-ActivationRange -DataSet $small -SkipInvalid -ErrorAction Stop -WarningAction SilentlyContinue }).FullyQualifiedErrorId | Should -BeLike 'NoValidSamples,*'
    }
}
