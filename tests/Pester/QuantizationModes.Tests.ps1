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
        $r.QuantizedLayerCount | Should -Be 39   # 36 MatMul and the 3 embedding tables
        $r.Decisions | Where-Object { $_ -like '*(Gather): dynamic: 8-bit table*' } | Should -HaveCount 3
        $r.Decisions.Count | Should -Be ($r.QuantizedLayerCount + $r.FloatLayerCount + $r.FoldedLayerCount)
        $r.Decisions | Where-Object { $_ -like '*dynamic: int8 weights per column*' } | Should -HaveCount 36
        $m = Get-OnnxModel (Join-Path $work 'dyn.onnx')
        ($m.OpTypes | Where-Object OpType -eq 'DynamicQuantizeLinear').Count | Should -Be 36
        ($m.OpTypes | Where-Object OpType -eq 'MatMulInteger').Count | Should -Be 36
        $m.QuantizationOptions | Should -BeLike 'mode=dynamic*'
    }

    It 'writes an int4 MatMulNBits model, smaller than the int8 one' {
        $r4 = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -WeightBits 4 -BlockSize 64 -OutputPath $work
        $r4.OutputPath | Should -BeLike '*all-MiniLM-L6-v2.int4.onnx'
        $r4.Format | Should -Be 'MatMulNBits'
        $r8 = Invoke-Quantization -Path $MiniLm -Mode WeightOnly -OutputPath (Join-Path $work 'w8.onnx')
        $r8.Format | Should -Be 'Cast+Mul'
        $r4.OutputSizeBytes | Should -BeLessThan $r8.OutputSizeBytes
        ((Get-OnnxModel $r4.OutputPath).OpTypes | Where-Object OpType -eq 'MatMulNBits').Count | Should -Be 36
    }

    It 'keeps -Exclude layers in float by name, pattern and op type, and says which entry matched' {
        $r = Get-ModelLayer $MiniLm | Invoke-Quantization -Mode Dynamic -Exclude 'MatMul_122', 'MatMul_2*' -OutputPath (Join-Path $work 'excl.onnx')
        $r.Decisions | Where-Object { $_ -like "MatMul_122 (MatMul): excluded (-Exclude 'MatMul_122')*" } | Should -HaveCount 1
        $r.Decisions | Where-Object { $_ -like "MatMul_2* (MatMul): excluded (-Exclude pattern 'MatMul_2*')*" } | Should -Not -BeNullOrEmpty
        $r.QuantizedLayers | Should -Not -Contain 'MatMul_122'
        $r.Options | Should -BeLike '*;exclude=MatMul_122,MatMul_2*'
        $none = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -Exclude 'MatMul', 'Gather' -OutputPath (Join-Path $work 'none.onnx') -ErrorAction Stop }
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
        @{ Name = '16-bit QOperator'; Options = @{ ActivationType = 'UInt16'; Format = 'QOperator' } }
        @{ Name = 'reduce-range int4'; Options = @{ Mode = 'WeightOnly'; WeightBits = 4; ReduceRange = $true } }
        @{ Name = 'uint8 int4'; Options = @{ Mode = 'WeightOnly'; WeightBits = 4; WeightType = 'UInt8' } }
        @{ Name = 'int8 activations with uint8 QOperator weights'; Options = @{ ActivationType = 'Int8'; WeightType = 'UInt8'; Format = 'QOperator' } }
        @{ Name = 'overrides in Dynamic mode'; Options = @{ Mode = 'Dynamic'; TensorOverride = @{ x = @{ Min = 0; Max = 1 } } } }
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
        ($ops | Where-Object OpType -eq 'QLinearAdd').Count | Should -Be 9
        $ops | Where-Object OpType -eq 'Conv' | Should -BeNullOrEmpty
        $r.SizeRatio | Should -BeLessOrEqual 0.255
    }

    It 'encodes ResNet18''s convolution weights for the kernel -ConvKernel names, with the same outputs' {
        $data = New-ResNetDataSet -Split train -Count 4
        $stats = Get-ModelLayer $ResNet18 | Measure-ActivationRange -DataSet $data
        $gemm = $stats | Invoke-Quantization -ConvKernel Gemm -OutputPath (Join-Path $work 'conv-gemm.onnx')
        $sym = $stats | Invoke-Quantization -ConvKernel Symmetric -OutputPath (Join-Path $work 'conv-sym.onnx')
        $gemm.Options | Should -BeLike '*;conv-kernel=gemm;*'
        $sym.Options | Should -BeLike '*;conv-kernel=symmetric;*'
        $gemm.OutputSha256 | Should -Not -Be $sym.OutputSha256
        $convs = @($sym.Decisions | Where-Object { $_ -like '*(Conv): int8*' })
        $convs.Count | Should -BeGreaterThan 15
        $gemm.Decisions | Where-Object { $_ -like '*(Conv): int8*zero point -1*' } | Should -HaveCount $convs.Count
        $sym.Decisions | Where-Object { $_ -like '*zero point -1*' } | Should -BeNullOrEmpty
        # The same weight values: ONNX Runtime and the PtqTools engine give the same outputs for both files.
        $probe = New-ResNetDataSet -Split t10k -Count 2
        foreach ($engine in 'OnnxRuntime', 'PtqTools') {
            $a = @(Invoke-ModelInference -Path $gemm.OutputPath -DataSet $probe -Engine $engine)
            $b = @(Invoke-ModelInference -Path $sym.OutputPath -DataSet $probe -Engine $engine)
            foreach ($i in 0, 1) { ([float[]]$a[$i].Outputs[0]) | Should -Be ([float[]]$b[$i].Outputs[0]) }
        }
        # Auto is the target's choice: the symmetric kernel for the default (Portable), the GEMM for Amx.
        $auto = $stats | Invoke-Quantization -OutputPath (Join-Path $work 'conv-auto.onnx')
        $auto.OutputSha256 | Should -Be $sym.OutputSha256
        $amx = $stats | Invoke-Quantization -Target Amx -SkipHostCheck -OutputPath (Join-Path $work 'conv-amx.onnx')
        $amx.Options | Should -BeLike '*;conv-kernel=gemm;target=amx*'
    }

    It 'computes the outlier input channels of dynamic MatMuls in float with -OutlierThreshold' {
        $text = Join-Path $work 'outlier-calibration.txt'
        Set-Content $text (Get-LicenceSentences 8)
        $data = New-PtqDataSet -Path $text -VocabPath (Join-Path $work 'vocab.txt')
        $r = Invoke-Quantization -Path $MiniLm -Mode Dynamic -OutlierThreshold 16 -DataSet $data -OutputPath (Join-Path $work 'dyn-outliers.onnx')
        $r.Options | Should -BeLike '*;outliers=>16x-median'
        $split = @($r.Decisions | Where-Object { $_ -like '*(MatMul): dynamic*outlier input channel*computed in float*' })
        $split.Count | Should -BeGreaterThan 0
        $r.QuantizedLayerCount | Should -Be 39
        $ops = (Get-OnnxModel $r.OutputPath).OpTypes
        ($ops | Where-Object OpType -eq 'MatMulInteger').Count | Should -Be 36
        # The 12 attention MatMuls (activation x activation) stay float, and one small float MatMul per split layer.
        ($ops | Where-Object OpType -eq 'MatMul').Count | Should -Be (12 + $split.Count)
    }

    It 'writes uint8 asymmetric reduce-range weights in Dynamic mode' {
        $r = Invoke-Quantization -Path $MiniLm -Mode Dynamic -WeightType UInt8 -WeightSymmetry Asymmetric -ReduceRange -OutputPath (Join-Path $work 'dyn-u8.onnx')
        $r.Options | Should -BeLike '*weights=uint8,asymmetric,per-channel,reduce-range*'
        $r.Decisions | Where-Object { $_ -like '*dynamic: uint8 weights per column*' } | Should -HaveCount 36
        ((Get-OnnxModel $r.OutputPath).OpTypes | Where-Object OpType -eq 'MatMulInteger').Count | Should -Be 36
    }

    It 'applies -TensorOverride to named tensors, and refuses a bad one before any work' {
        $data = New-ResNetDataSet -Split train -Count 2
        $r = Invoke-Quantization -Path $ResNet18 -DataSet $data -TensorOverride @{ Input247 = @{ Type = 'UInt16' }; ReLU385_Output_0 = @{ Min = 0; Max = 8 } } -OutputPath (Join-Path $work 'ovr.onnx')
        $r.Options | Should -BeLike '*;overrides=Input247:{type=uint16},ReLU385_Output_0:{range=`[0,8`]}'
        (Get-OnnxModel $r.OutputPath).QuantizationOptions | Should -Be $r.Options
        foreach ($case in @(
                @{ Id = 'OverrideTensorNotQuantized'; Override = @{ nothere = @{ Min = 0; Max = 1 } } }
                @{ Id = 'InvalidTensorOverride'; Override = @{ Input247 = @{ Mn = 0 } } }
                @{ Id = 'InvalidTensorOverride'; Override = @{ Input247 = @{ Scale = 'big' } } }
                @{ Id = 'InvalidTensorOverride'; Override = @{ Input247 = @{ Scale = 0.1; ZeroPoint = 999 } } })) {
            $target = Join-Path $work 'ovr-bad.onnx'
            $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -DataSet $data -TensorOverride $case.Override -OutputPath $target -ErrorAction Stop }
            $e.FullyQualifiedErrorId | Should -BeLike "$($case.Id),*"
            $e.CategoryInfo.Category | Should -Be 'InvalidArgument'
            Test-Path $target | Should -BeFalse
        }
    }

    It 'refuses the algorithms where they cannot run, before any work' {
        $stats = Get-ModelLayer $ResNet18 | Select-Object -First 2 | Measure-ActivationRange -DataSet (New-ResNetDataSet -Split train -Count 1)
        $e = Get-ErrorRecord { $stats | Invoke-Quantization -Equalize -OutputPath (Join-Path $work 'eq.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'EqualizeNeedsCalibration,*'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -SmoothQuant 0.5 -OutputPath (Join-Path $work 'sq.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetRequired,*'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -SmoothQuant 0.5 -OutputPath (Join-Path $work 'sq.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -OutlierThreshold 16 -OutputPath (Join-Path $work 'ot.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetRequired,*'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode WeightOnly -OutlierThreshold 16 -OutputPath (Join-Path $work 'ot.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
        Test-Path (Join-Path $work 'ot.onnx') | Should -BeFalse
        $e = Get-ErrorRecord { Invoke-Quantization -Path $MiniLm -Mode Dynamic -BiasCorrection -OutputPath (Join-Path $work 'bc.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'InvalidOptionCombination,*'
        Join-Path $work 'eq.onnx', 'sq.onnx', 'bc.onnx' | Test-Path | Should -Not -Contain $true
    }

    It 'equalizes and calibrates ResNet18 in one step, and records it' {
        $r = Invoke-Quantization -Path $ResNet18 -DataSet (New-ResNetDataSet -Split train -Count 2) -Equalize -BiasCorrection -OutputPath (Join-Path $work 'cle.onnx') -Verbose 4>&1
        $verbose = $r | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }
        @($verbose | Where-Object Message -like 'Equalized *').Count | Should -Be 9   # the Conv-Relu-Conv pairs of the basic blocks
        $result = $r | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $result.Options | Should -BeLike '*;equalize=cle;bias-correction*'
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

BeforeDiscovery {
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:noCorpus = Test-SkipForPackage libonnx-testdata 'Invoke-Quantization on an LSTM (a conformance model)'
}

Describe 'Invoke-Quantization on an LSTM' -Skip:$noCorpus {
    BeforeAll {
        $moduleDir = Split-Path (Get-Module PtqTools).Path
        Add-Type -Path (Join-Path $moduleDir 'dependencies/Google.Protobuf.dll'), (Join-Path $moduleDir 'dependencies/OnnxSharp.dll')
        # The conformance model's W, R and B are test-data inputs: frozen here as initializers.
        $dir = Join-Path $OnnxTestData 'node/test_lstm_with_initial_bias'
        $m = [Onnx.ModelProto]::Parser.ParseFrom([IO.File]::ReadAllBytes("$dir/model.onnx"))
        $inputs = @($m.Graph.Input)
        for ($i = 1; $i -lt $inputs.Count; $i++) {
            $t = [Onnx.TensorProto]::Parser.ParseFrom([IO.File]::ReadAllBytes("$dir/test_data_set_0/input_$i.pb"))
            $t.Name = $inputs[$i].Name
            $m.Graph.Initializer.Add($t)
            $null = $m.Graph.Input.Remove($inputs[$i])
        }
        $script:Lstm = Join-Path $work 'lstm.onnx'
        [IO.File]::WriteAllBytes($Lstm, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
        # X is [1, 3, 3]: one time step of 3 sequences, which the data set's batch-first samples give as [3, 3].
        $random = [Random]::new(3)
        $script:Samples = New-PtqDataSet -InputObject (1..4 | ForEach-Object { , [float[]](1..9 | ForEach-Object { $random.NextDouble() * 4 - 2 }) }) -Shape 3, 3
    }

    It 'writes it as com.microsoft DynamicQuantizeLSTM in Dynamic mode, close to the float model' {
        $r = Invoke-Quantization -Path $Lstm -Mode Dynamic -OutputPath (Join-Path $work 'lstm.dynamic.onnx')
        $r.QuantizedLayerCount | Should -Be 1
        $r.Decisions | Should -BeLike '*(LSTM): dynamic: com.microsoft DynamicQuantizeLSTM, int8 W and R per gate row*'
        ((Get-OnnxModel $r.OutputPath).OpTypes | Where-Object OpType -eq 'DynamicQuantizeLSTM').Count | Should -Be 1
        $report = $r | Test-QuantizedModel -DataSet $Samples -LatencyRuns 0
        $report.Cosine | Should -BeGreaterThan 0.999
    }

    It 'stores its weights in 8 bits in WeightOnly mode and keeps it float in Static mode, with the reasons' {
        $w = Invoke-Quantization -Path $Lstm -Mode WeightOnly -OutputPath (Join-Path $work 'lstm.w8.onnx')
        $w.Decisions | Should -BeLike '*(LSTM): weight-only: int8 W and R per gate row, dequantized by Cast and Mul*'
        ((Get-OnnxModel $w.OutputPath).OpTypes | Where-Object OpType -eq 'LSTM').Count | Should -Be 1
        ($w | Test-QuantizedModel -DataSet $Samples -LatencyRuns 0).Cosine | Should -BeGreaterThan 0.999
        $layer = Get-ModelLayer $Lstm | Where-Object OpType -eq 'LSTM'
        $layer.Quantizable | Should -BeFalse
        $layer.Reason | Should -BeLike 'kept in float: static mode: ONNX Runtime has no LSTM kernel for calibrated int8 activations*'
    }
}
