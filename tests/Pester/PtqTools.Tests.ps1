BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    . (Join-Path $PSScriptRoot 'TinyModels.ps1')   # SkiaSharp, to draw test images
}

Describe 'The module' {
    It 'exports exactly the cmdlets of the manifest' {
        $manifest = Import-PowerShellDataFile $env:PTQTOOLS_MODULE
        (Get-Command -Module PtqTools).Name | Sort-Object | Should -Be ($manifest.CmdletsToExport | Sort-Object)
    }

    It 'has a format view for the output type of <_>' -ForEach @(
        'Get-OnnxModel', 'Get-ModelLayer', 'New-PtqDataSet', 'Measure-ActivationRange', 'Invoke-Quantization', 'Test-QuantizedModel',
        'Measure-LayerError', 'Measure-ModelPerformance', 'Export-QuantizationReport', 'Invoke-ModelInference'
    ) {
        $type = (Get-Command $_).OutputType[0].Name
        $type | Should -Not -BeNullOrEmpty
        Get-FormatData -TypeName $type | Should -Not -BeNullOrEmpty
    }

    It 'declares -WhatIf and -Confirm on the cmdlet that writes files' {
        (Get-Command Invoke-Quantization).Parameters.Keys | Should -Contain 'WhatIf'
        (Get-Command Invoke-Quantization).Parameters.Keys | Should -Contain 'Confirm'
    }
}

Describe 'Get-OnnxModel' {
    It 'summarizes ResNet18' {
        $m = Get-OnnxModel -Path $ResNet18
        $m.Opset | Should -Be 8
        $m.IrVersion | Should -Be 3
        $m.Sha256 | Should -Be (Get-FileHash $ResNet18 -Algorithm SHA256).Hash
        $m.SizeBytes | Should -Be (Get-Item $ResNet18).Length
        $m.Inputs.Name | Should -Be 'Input247'
        $m.Inputs[0].ElementType | Should -Be 'float32'
        $m.Inputs[0].Shape | Should -Be @('1', '3', '224', '224')
        "$($m.Inputs)" | Should -Be 'Input247: float32[1,3,224,224]'
        $m.ParameterCount | Should -BeGreaterThan 11000000
        $convs = ($m.OpTypes | Where-Object OpType -eq 'Conv').Count
        ($m.OpTypes | Where-Object OpType -eq 'BatchNormalization').Count | Should -Be $convs   # every Conv has its BatchNormalization
    }

    It 'takes FileInfo objects from Get-ChildItem' {
        $m = Get-ChildItem $ResNet18 | Get-OnnxModel
        $m.Path | Should -Be (Get-Item $ResNet18).FullName
    }

    It 'refuses a file that is not ONNX with ModelNotOnnx' {
        $bad = Join-Path $TestDrive 'bad.onnx'
        [IO.File]::WriteAllBytes($bad, [byte[]](1..200 | ForEach-Object { ($_ * 37) % 256 }))
        $e = Get-ErrorRecord { Get-OnnxModel $bad -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelNotOnnx,*'
        $e.CategoryInfo.Category | Should -Be 'InvalidData'
        $e.TargetObject | Should -Be $bad
    }

    It 'refuses a truncated model' {
        $cut = Join-Path $TestDrive 'cut.onnx'
        $bytes = [IO.File]::ReadAllBytes($ResNet18)
        [IO.File]::WriteAllBytes($cut, $bytes[0..99999])
        $e = Get-ErrorRecord { Get-OnnxModel $cut -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelNotOnnx,*'
    }

    It 'reports a missing file as PathNotFound' {
        $e = Get-ErrorRecord { Get-OnnxModel (Join-Path $TestDrive 'nope.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'PathNotFound,*'
        $e.CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'refuses paths outside the file system' {
        $e = Get-ErrorRecord { Get-OnnxModel -LiteralPath 'Env:PATH' -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'NotFileSystemPath,*'
    }
}

Describe 'Get-ModelLayer' {
    BeforeAll { $script:layers = Get-ModelLayer $ResNet18 }

    It 'lists the prepared graph: BatchNormalization folded into Conv' {
        $layers.OpType | Should -Not -Contain 'BatchNormalization'
        $convs = ((Get-OnnxModel $ResNet18).OpTypes | Where-Object OpType -eq 'Conv').Count
        ($layers | Where-Object OpType -eq 'Conv').Count | Should -Be $convs
        $first = $layers | Where-Object Name -eq 'Convolution249'
        $first.WeightShape | Should -Be @(64, 3, 7, 7)
        $first.ParameterCount | Should -Be (64 * 3 * 7 * 7 + 64)   # weights plus the bias the folding added
        $first.Quantizable | Should -BeTrue
    }

    It 'explains why a layer is not quantized by itself' {
        $relu = $layers | Where-Object OpType -eq 'Relu' | Select-Object -First 1
        $relu.Quantizable | Should -BeFalse
        $relu.Reason | Should -Match 'folded'
    }

    It 'filters by name wildcard, op type and quantizability' {
        (Get-ModelLayer $ResNet18 -Name 'Convolution2*').Name | Sort-Object | Should -Be @('Convolution249', 'Convolution257', 'Convolution263', 'Convolution271', 'Convolution277', 'Convolution285', 'Convolution291', 'Convolution295')
        $adds = ((Get-OnnxModel $ResNet18).OpTypes | Where-Object OpType -eq 'Add').Count
        (Get-ModelLayer $ResNet18 -OpType Add).Count | Should -Be $adds
        (Get-ModelLayer $ResNet18 -Quantizable).Quantizable | Should -Not -Contain $false
    }

    It 'survives Export-Clixml and ConvertTo-Json as plain data' {
        $file = Join-Path $TestDrive 'layers.xml'
        $layers | Export-Clixml $file
        $back = Import-Clixml $file
        $back.Count | Should -Be $layers.Count
        $back[0].Name | Should -Be $layers[0].Name
        ($layers[0] | ConvertTo-Json | ConvertFrom-Json).WeightShape | Should -Be $layers[0].WeightShape
    }
}

Describe 'New-PtqDataSet' {
    It 'reads IDX images with their labels' {
        $ds = New-PtqDataSet (Join-Path $FashionMnist 't10k-images-idx3-ubyte.gz') -MaxSamples 10 -Resize 32
        $ds.Kind | Should -Be 'Idx'
        $ds.Count | Should -Be 10
        $ds.HasLabels | Should -BeTrue
        $ds.ClassCount | Should -Be 10
        $ds.SampleShape | Should -Be @(3, 32, 32)
    }

    It 'reads an image folder whose sub-folders are classes, as NHWC grayscale' {
        $folder = Join-Path $TestDrive 'images'
        foreach ($class in 'cat', 'dog') {
            $null = New-Item -ItemType Directory (Join-Path $folder $class) -Force
            foreach ($i in 1..2) {
                $bmp = [SkiaSharp.SKBitmap]::new(20, 10)
                $bmp.Erase([SkiaSharp.SKColor]::new(200, 100, 50))
                $data = [SkiaSharp.SKImage]::FromBitmap($bmp).Encode([SkiaSharp.SKEncodedImageFormat]::Png, 100)
                [IO.File]::WriteAllBytes((Join-Path $folder "$class/$i.png"), $data.ToArray())
            }
        }
        $ds = New-PtqDataSet $folder -Resize 16 -Channels 1 -Layout NHWC
        $ds.Kind | Should -Be 'ImageFolder'
        $ds.Count | Should -Be 4
        $ds.Classes | Should -Be @('cat', 'dog')
        $ds.SampleShape | Should -Be @(16, 16, 1)
    }

    It 'refuses an image folder holding a file that is not an image' {
        $folder = Join-Path $TestDrive 'mixed'
        $null = New-Item -ItemType Directory $folder -Force
        Set-Content (Join-Path $folder 'notes.txt') 'not an image'
        $e = Get-ErrorRecord { New-PtqDataSet $folder -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetFileNotImage,*'
        $e.TargetObject | Should -Match 'notes.txt'
    }

    It 'takes arrays from PowerShell with a shape' {
        $samples = 1..3 | ForEach-Object { , [float[]](1..12) }
        $ds = New-PtqDataSet -InputObject $samples -Shape 3, 4
        $ds.Kind | Should -Be 'Array'
        $ds.Count | Should -Be 3
        $ds.SampleShape | Should -Be @(3, 4)
    }

    It 'refuses arrays that do not fit the shape' {
        $e = Get-ErrorRecord { New-PtqDataSet -InputObject (, [float[]](1..5)) -Shape 2, 2 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataShapeMismatch,*'
    }
}

Describe 'The pipeline on ResNet18' {
    BeforeAll {
        $script:calib = New-ResNetDataSet -Split train -Count 16
        $script:eval = New-ResNetDataSet -Split t10k -Count 24
        $script:stats = Get-ModelLayer $ResNet18 | Measure-ActivationRange -DataSet $calib
        $script:out = Join-Path $TestDrive 'resnet18.int8.onnx'
        $script:result = $stats | Invoke-Quantization -OutputPath $out
    }

    It 'measures a range for every tensor the quantized layers need' {
        $stats.Count | Should -BeGreaterThan 30
        $input = $stats | Where-Object Tensor -eq 'Input247'
        $input.SampleCount | Should -Be 16
        $input.Min | Should -BeLessThan 0                       # mean image subtracted
        ($stats | Where-Object Tensor -like 'ReLU*').Min | Should -Not -BeLessThan 0
        $stats | ForEach-Object { $_.ModelSha256 | Should -Be (Get-FileHash $ResNet18).Hash }
    }

    It 'writes an int8 model at most 26% of the float size' {
        Test-Path $out | Should -BeTrue
        $result.SizeRatio | Should -BeLessOrEqual 0.26
        $result.OutputSizeBytes | Should -Be (Get-Item $out).Length
        $result.QuantizedLayerCount | Should -BeGreaterThan 30
        (Get-OnnxModel $out).QuantizedFrom | Should -Be (Get-FileHash $ResNet18).Hash
    }

    It 'keeps the float model close: cosine >= 0.99 on images not used for calibration' {
        $report = $result | Test-QuantizedModel -DataSet $eval -LatencyRuns 3
        $report.SampleCount | Should -Be 24
        $report.Cosine | Should -BeGreaterOrEqual 0.99
        $report.SqnrDb | Should -BeGreaterThan 15
        $report.FloatLatencyMs | Should -BeGreaterThan 0
        $report.SizeRatio | Should -Be $result.SizeRatio
    }

    It 'gives the same bytes from statistics that went through Export-Clixml and ConvertTo-Json' {
        $file = Join-Path $TestDrive 'stats.xml'
        $stats | Export-Clixml $file
        $fromXml = Import-Clixml $file | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'xml.onnx')
        $fromJson = $stats | ConvertTo-Json -Depth 4 | ConvertFrom-Json | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'json.onnx')
        $fromXml.OutputSha256 | Should -Be $result.OutputSha256
        $fromJson.OutputSha256 | Should -Be $result.OutputSha256
    }

    It 'keeps layers that left the pipeline in float' {
        $some = Get-ModelLayer $ResNet18 | Where-Object { $_.OpType -ne 'Conv' -or $_.Name -ne 'Convolution249' } |
            Measure-ActivationRange -DataSet $calib
        $partial = $some | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'partial.onnx')
        $partial.QuantizedLayers | Should -Not -Contain 'Convolution249'
        $partial.Decisions | Where-Object Layer -eq 'Convolution249' | ForEach-Object Reason | Should -Be 'not in the pipeline: kept in float'
        $partial.QuantizedLayerCount | Should -Be ($result.QuantizedLayerCount - 1)
    }

    It 'writes nothing with -WhatIf' {
        $target = Join-Path $TestDrive 'whatif.onnx'
        $stats | Invoke-Quantization -OutputPath $target -WhatIf
        Test-Path $target | Should -BeFalse
    }

    It 'refuses to overwrite without -Force, and overwrites with it' {
        $e = Get-ErrorRecord { $stats | Invoke-Quantization -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputExists,*'
        $e.CategoryInfo.Category | Should -Be 'ResourceExists'
        ($stats | Invoke-Quantization -OutputPath $out -Force).OutputSha256 | Should -Be $result.OutputSha256
    }

    It 'never writes over the source model' {
        $copy = Join-Path $TestDrive 'source.onnx'
        Copy-Item $ResNet18 $copy
        $hash = (Get-FileHash $copy).Hash
        $e = Get-ErrorRecord { Invoke-Quantization -Path $copy -DataSet $calib -OutputPath $copy -Force -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputIsSource,*'
        (Get-FileHash $copy).Hash | Should -Be $hash
    }

    It 'refuses statistics of another model' {
        $other = $ResNetPreprocess
        $stats | ForEach-Object { $_.ModelPath = $other }
        try {
            $e = Get-ErrorRecord { $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'mismatch.onnx') -ErrorAction Stop }
        } finally { $stats | ForEach-Object { $_.ModelPath = $ResNet18 } }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelChanged,*'
        Test-Path (Join-Path $TestDrive 'mismatch.onnx') | Should -BeFalse
    }
}

Describe 'Bad input ends in a clear error and no output file' {
    It 'a data set whose shape does not fit the model: DataShapeMismatch' {
        $small = New-PtqDataSet (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz') -MaxSamples 4   # 3x28x28
        $target = Join-Path $TestDrive 'shape.onnx'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -DataSet $small -OutputPath $target -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataShapeMismatch,*'
        $e.Exception.Message | Should -Match '\[3,28,28\]'
        $e.Exception.Message | Should -Match '\[1,3,224,224\]'
        Test-Path $target | Should -BeFalse
    }

    It 'a corrupt model: ModelNotOnnx' {
        $bad = Join-Path $TestDrive 'corrupt.onnx'
        $bytes = [IO.File]::ReadAllBytes($ResNet18)
        for ($i = 0; $i -lt 64; $i++) { $bytes[$i] = 0xFF }
        [IO.File]::WriteAllBytes($bad, $bytes)
        $target = Join-Path $TestDrive 'corrupt.int8.onnx'
        $ds = New-ResNetDataSet -Split train -Count 2
        $e = Get-ErrorRecord { Invoke-Quantization -Path $bad -DataSet $ds -OutputPath $target -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelNotOnnx,*'
        Test-Path $target | Should -BeFalse
    }

    It 'a missing model: PathNotFound' {
        $ds = New-ResNetDataSet -Split train -Count 2
        $e = Get-ErrorRecord { Invoke-Quantization -Path (Join-Path $TestDrive 'missing.onnx') -DataSet $ds -OutputPath (Join-Path $TestDrive 'm.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'PathNotFound,*'
    }

    It 'an output folder that does not exist: OutputFolderNotFound' {
        $stats = Get-ModelLayer $ResNet18 -Name Convolution249 | Measure-ActivationRange -DataSet (New-ResNetDataSet -Split train -Count 2)
        $e = Get-ErrorRecord { $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'no/such/dir/x.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputFolderNotFound,*'
    }
}

Describe 'Stopping' {
    It 'stops a long calibration promptly and leaves no output file' {
        $target = Join-Path $TestDrive 'stopped.onnx'
        $ps = [powershell]::Create()
        $null = $ps.AddScript({
                param($module, $model, $fashion, $prep, $target)
                Import-Module $module
                $ds = New-PtqDataSet (Join-Path $fashion 'train-images-idx3-ubyte.gz') -Resize 224 -Scale 1 -PreprocessModel $prep
                Invoke-Quantization -Path $model -DataSet $ds -OutputPath $target
            }).AddArgument($env:PTQTOOLS_MODULE).AddArgument($ResNet18).AddArgument($FashionMnist).AddArgument($ResNetPreprocess).AddArgument($target)
        $handle = $ps.BeginInvoke()
        Start-Sleep -Seconds 6
        $handle.IsCompleted | Should -BeFalse
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $ps.Stop()
        $clock.Stop()
        $clock.Elapsed.TotalSeconds | Should -BeLessThan 2
        $ps.InvocationStateInfo.State | Should -Be 'Stopped'
        $ps.Dispose()
        Test-Path $target | Should -BeFalse
        Get-ChildItem $TestDrive -Filter '*.tmp' -Force | Should -BeNullOrEmpty
    }
}

Describe 'Pipeline binding of New-PtqDataSet and plain-data layers' {
    It 'takes samples one per piped array' {
        $samples = 1..4 | ForEach-Object { , [float[]](1..6) }
        $ds = $samples | New-PtqDataSet -Shape 2, 3 -Label 0, 1, 0, 1
        $ds.Count | Should -Be 4
        $ds.ClassCount | Should -Be 2
    }

    It 'takes .npy files from Get-ChildItem' {
        $folder = Join-Path $TestDrive 'npy'
        $null = New-Item -ItemType Directory $folder -Force
        foreach ($i in 1..2) {
            # float32 .npy of 3 samples of 4 values each, written by hand: header padded to 64 bytes.
            $header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"
            $header = $header.PadRight(64 - 10 - 1) + "`n"
            $bytes = [byte[]](0x93) + [Text.Encoding]::ASCII.GetBytes('NUMPY') + [byte[]](1, 0) + [BitConverter]::GetBytes([uint16]$header.Length) +
                [Text.Encoding]::ASCII.GetBytes($header) + (1..12 | ForEach-Object { [BitConverter]::GetBytes([float]$_) })
            [IO.File]::WriteAllBytes((Join-Path $folder "shard$i.npy"), $bytes)
        }
        $ds = Get-ChildItem $folder -Filter *.npy | New-PtqDataSet
        $ds.Kind | Should -Be 'Npy'
        $ds.Count | Should -Be 6
        $ds.SampleShape | Should -Be @(4)
    }

    It 'calibrates from layers that went through Export-Csv' {
        $csv = Join-Path $TestDrive 'layers.csv'
        Get-ModelLayer $ResNet18 -Name Convolution249 | Export-Csv $csv
        $stats = Import-Csv $csv | Measure-ActivationRange -DataSet (New-ResNetDataSet -Split train -Count 2)
        $stats.Tensor | Should -Contain 'Input247'
        $stats.Layers | Select-Object -Unique | Should -Be 'Convolution249'
    }

    It '-WhatIf neither calibrates nor writes' {
        $target = Join-Path $TestDrive 'preview.onnx'
        # Samples the model cannot take: calibrating them would fail with DataShapeMismatch.
        $unfit = New-PtqDataSet (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz') -MaxSamples 2
        Invoke-Quantization -Path $ResNet18 -DataSet $unfit -OutputPath $target -WhatIf -ErrorAction Stop
        Test-Path $target | Should -BeFalse
        { Invoke-Quantization -Path $ResNet18 -DataSet $unfit -OutputPath $target -ErrorAction Stop } | Should -Throw -ErrorId 'DataShapeMismatch*'
    }
}
