# Dynamic and weight-only modes, -Exclude and option validation through Invoke-Quantization on the built module.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    . (Join-Path $PSScriptRoot 'MiniLm.ps1')
    $script:work = Join-Path ([IO.Path]::GetTempPath()) "ptq-modes-$PID"
    $script:MiniLm = Get-MiniLmModel $work
}

AfterAll {
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}

Describe 'Invoke-Quantization -Mode' {
    It 'writes a dynamic int8 model without calibration data, with every layer''s reason' {
        $r = Invoke-Quantization -Path $MiniLm -Mode Dynamic -OutputPath (Join-Path $work 'dyn.onnx')
        $r.Mode | Should -Be 'Dynamic'
        $r.Format | Should -Be 'MatMulInteger'
        $r.QuantizedLayerCount | Should -Be 36
        $r.Decisions.Count | Should -Be ($r.QuantizedLayerCount + $r.FloatLayerCount + $r.FoldedLayerCount)
        $r.Decisions | Where-Object { $_ -like '*dynamic: int8 weights per column*' } | Should -HaveCount 36
        $m = Get-OnnxModel (Join-Path $work 'dyn.onnx')
        $m.OpTypes | Should -Contain 'DynamicQuantizeLinear:36'
        $m.OpTypes | Should -Contain 'MatMulInteger:36'
        $m.QuantizationOptions | Should -BeLike 'mode=dynamic*'
    }

    It 'writes an int4 MatMulNBits model, smaller than the int8 one' {
        $r4 = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -WeightBits 4 -BlockSize 64 -OutputPath $work
        $r4.OutputPath | Should -BeLike '*all-MiniLM-L6-v2.int4.onnx'
        $r4.Format | Should -Be 'MatMulNBits'
        $r8 = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -OutputPath (Join-Path $work 'w8.onnx')
        $r8.Format | Should -Be 'QDQ'
        $r4.OutputSizeBytes | Should -BeLessThan $r8.OutputSizeBytes
        (Get-OnnxModel $r4.OutputPath).OpTypes | Should -Contain 'MatMulNBits:36'
    }

    It 'keeps -Exclude layers in float by name, pattern and op type, and says which entry matched' {
        $r = Get-ModelLayer $MiniLm | Invoke-Quantization -Mode Dynamic -Exclude 'MatMul_122', 'MatMul_2*' -OutputPath (Join-Path $work 'excl.onnx')
        $r.Decisions | Where-Object { $_ -like "MatMul_122 (MatMul): excluded (-Exclude 'MatMul_122')*" } | Should -HaveCount 1
        $r.Decisions | Where-Object { $_ -like "MatMul_2* (MatMul): excluded (-Exclude pattern 'MatMul_2*')*" } | Should -Not -BeNullOrEmpty
        $r.QuantizedLayers | Should -Not -Contain 'MatMul_122'
        $r.Options | Should -BeLike '*;exclude=MatMul_122,MatMul_2*'
        $none = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -Exclude 'MatMul' -OutputPath (Join-Path $work 'none.onnx') -ErrorAction Stop }
        $none.FullyQualifiedErrorId | Should -BeLike 'NothingToQuantize,*'
    }

    It 'keeps the layers that left the pipeline in float' {
        $r = Get-ModelLayer $MiniLm | Where-Object Name -EQ 'MatMul_36' | Invoke-Quantization -Mode WeightOnly -OutputPath (Join-Path $work 'one.onnx')
        $r.QuantizedLayers | Should -Be @('MatMul_36')
    }

    It 'refuses <Name> before any work' -ForEach @(
        @{ Name = 'dynamic int8 activations'; Options = @{ Mode = 'Dynamic'; ActivationType = 'Int8' } }
        @{ Name = 'static int4'; Options = @{ WeightBits = 4 } }
        @{ Name = 'int4 per tensor'; Options = @{ Mode = 'WeightOnly'; WeightBits = 4; PerTensor = $true } }
        @{ Name = 'an odd block size'; Options = @{ Mode = 'WeightOnly'; WeightBits = 4; BlockSize = 48 } }
    ) {
        $target = Join-Path $work 'refused.onnx'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -OutputPath $target @Options -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -Match '^InvalidOption(Combination)?,'
        $e.Exception.Message | Should -Not -BeNullOrEmpty
        Test-Path $target | Should -BeFalse
    }

    It 'writes ResNet18 as QLinear operators with -Format QOperator' {
        $data = New-ResNetDataSet -Split train -Count 4
        $r = Invoke-Quantization -Path $ResNet18 -DataSet $data -Format QOperator -OutputPath (Join-Path $work 'qop.onnx')
        $r.Format | Should -Be 'QOperator'
        $r.Options | Should -BeLike 'format=QOperator;*'
        $ops = (Get-OnnxModel $r.OutputPath).OpTypes
        $ops | Should -Contain 'QLinearAdd:9'
        $ops | Where-Object { $_ -like 'Conv:*' } | Should -BeNullOrEmpty
        $r.SizeRatio | Should -BeLessOrEqual 0.255
    }

    It 'refuses QOperator outside Static mode' {
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -Format QOperator -OutputPath (Join-Path $work 'x.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
    }

    It 'still needs -DataSet in Static mode' {
        $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -OutputPath (Join-Path $work 'r.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetRequired,*'
    }

    It 'gives the same bytes for the same inputs' {
        $a = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -WeightBits 4 -OutputPath (Join-Path $work 'a.onnx')
        $b = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -WeightBits 4 -OutputPath (Join-Path $work 'b.onnx')
        $a.OutputSha256 | Should -Be $b.OutputSha256
    }
}
