BeforeDiscovery {
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:noCorpus = Test-SkipForPackage libonnx-testdata 'the conformance-corpus tests (RealModels.Tests.ps1)'
}

BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:Corpus = $OnnxTestData
}

Describe 'ONNX TensorProto samples (the conformance corpus layout)' -Skip:$noCorpus {
    It 'builds a data set from a test folder and quantizes the model on its own input_K.pb data' {
        $test = Join-Path $Corpus 'pytorch-converted/test_Conv2d'
        $model = Join-Path $test 'model.onnx'
        $ds = New-PtqDataSet -Path $test
        $ds.Kind | Should -Be 'TensorProto'
        $ds.Count | Should -Be 1
        $out = Join-Path $TestDrive 'conv2d.int8.onnx'
        # The corpus model is tiny: the speed rules would keep it in float (int8 would run slower), and the guard would
        # write the float model (its int8 file is 3x the float one); this test is about the data set, so it quantizes
        # anyway.
        $result = Get-ModelLayer $model | Invoke-Quantization -DataSet $ds -OutputPath $out -SkipRule ShallowConv, SlowRegion -SkipFidelityCheck
        $result.QuantizedLayerCount | Should -BeGreaterThan 0
        $report = $result | Test-QuantizedModel -DataSet $ds -LatencyRuns 1
        $report.Cosine | Should -BeGreaterThan 0.99
        $report.Cosine | Should -BeLessThan 1.0
    }

    It 'writes the float model, with the reasons and a warning, when the speed rules keep every layer in float' {
        $test = Join-Path $Corpus 'pytorch-converted/test_Conv2d'
        $ds = New-PtqDataSet -Path $test
        $out = Join-Path $TestDrive 'conv2d.kept.onnx'
        $result = Get-ModelLayer (Join-Path $test 'model.onnx') | Invoke-Quantization -DataSet $ds -OutputPath $out -WarningVariable warned -WarningAction SilentlyContinue
        $result.QuantizedLayerCount | Should -Be 0
        $result.Fidelity.Status | Should -Be 'KeptFloat'
        $result.Fidelity.Summary | Should -BeLike 'FLOAT MODEL WRITTEN: the rules *'
        ($warned | Out-String) | Should -BeLike '*FLOAT MODEL WRITTEN*'
        $result.Decisions | Where-Object OpType -eq 'Conv' | ForEach-Object { $_.Reason | Should -Match '\(rule (ShallowConv|SlowRegion)\)' }
        (Get-OnnxModel $out).OpTypes | Should -Not -Contain 'QuantizeLinear'
    }

    It 'feeds a two-input model with an int64 input' {
        $test = Join-Path $Corpus 'node/test_gather_0'
        $ds = New-PtqDataSet -Path (Join-Path $test 'test_data_set_0')
        $ds.Count | Should -Be 1
        # Gather has nothing to quantize, so the comparison is the float model against itself: identical outputs.
        $report = Test-QuantizedModel -FloatModel (Join-Path $test 'model.onnx') -QuantizedModel (Join-Path $test 'model.onnx') -DataSet $ds -LatencyRuns 1
        $report.SampleCount | Should -Be 1
        $report.MaxAbsError | Should -Be 0
    }

    It 'refuses a .pb file that is not a tensor, naming it' {
        $junk = Join-Path $TestDrive 'junk.pb'
        [IO.File]::WriteAllBytes($junk, [byte[]](255, 255, 255))
        $e = Get-ErrorRecord { New-PtqDataSet -Path $junk -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'TensorFileNotReadable,*'
        $e.Exception.Message | Should -BeLike '*junk.pb*'
    }
}

Describe 'Layers inside subgraphs' -Skip:$noCorpus {
    It 'lists, calibrates and quantizes a Loop body layer through the pipeline, named by its scope' {
        $test = Join-Path $Corpus 'node/test_loop11'
        $ds = New-PtqDataSet -Path (Join-Path $test 'test_data_set_0')
        $layers = @(Get-ModelLayer (Join-Path $test 'model.onnx') -Quantizable)
        $layers.Name | Should -Be @('Loop_0/body/Add_7')
        $layers[0].Scope | Should -Be 'Loop_0/body/'
        $stats = $layers | Measure-ActivationRange -DataSet $ds
        # The body's tensors are observed over every iteration (y_in runs -2 .. 8 over the five iterations).
        ($stats | Where-Object Tensor -eq 'Loop_0/body/y_in').Max | Should -Be 8
        $out = Join-Path $TestDrive 'loop11.int8.onnx'
        # A lone Add on a few values would run slower in int8 (SlowRegion); the test is about the Loop body, so it
        # quantizes anyway.
        $result = $stats | Invoke-Quantization -OutputPath $out -SkipRule SlowRegion
        $result.QuantizedLayers | Should -Be @('Loop_0/body/Add_7')
        ($result | Test-QuantizedModel -DataSet $ds -LatencyRuns 1).Cosine | Should -BeGreaterThan 0.999
    }
}

Describe 'Text data sets' {
    It 'tokenizes one sentence a line with a WordPiece vocabulary' {
        $vocab = Join-Path $TestDrive 'vocab.txt'
        Set-Content $vocab -Value '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'free', 'software', 'is', 'good', '##ly', '.'
        $text = Join-Path $TestDrive 'sentences.txt'
        Set-Content $text -Value 'Free software is good.', '', 'Software is goodly free software.', 'Unknown words.'
        $ds = New-PtqDataSet -Path $text -VocabPath $vocab
        $ds.Kind | Should -Be 'Text'
        $ds.Count | Should -Be 3                       # the empty line is skipped
        $ds.SampleShape | Should -Be @(1, 7)           # [CLS] free software is good . [SEP]
        $ds.MaxSequenceLength | Should -Be 128
        (New-PtqDataSet -Path $text -VocabPath $vocab -MaxSequenceLength 4 -Skip 1).SampleShape | Should -Be @(1, 4)
    }

    It 'refuses a missing vocabulary, naming it' {
        $text = Join-Path $TestDrive 'one.txt'
        Set-Content $text -Value 'Hello.'
        $e = Get-ErrorRecord { New-PtqDataSet -Path $text -VocabPath (Join-Path $TestDrive 'none.txt') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'VocabNotFound,*'
    }
}

Describe 'External data' -Skip:$noCorpus {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'TinyModels.ps1')   # the ONNX classes, to write a hostile model
        # The engine writes the conformance Conv2d model with its weights in a side file.
        $script:ExtFolder = Join-Path $TestDrive 'ext'
        $null = New-Item -ItemType Directory $ExtFolder
        $script:ExtModel = Join-Path $ExtFolder 'conv.onnx'
        $m = [PtqTools.Core.Onnx.OnnxModelIO]::Load((Join-Path $Corpus 'pytorch-converted/test_Conv2d/model.onnx'), $true)
        [PtqTools.Core.Onnx.ExternalData]::Save($m, $ExtModel, 16, [Threading.CancellationToken]::None)
    }

    It 'lists the layers of a model whose weights are in a side file' {
        Test-Path "$ExtModel.data" | Should -BeTrue
        $layers = Get-ModelLayer $ExtModel
        ($layers | Where-Object OpType -eq 'Conv').WeightShape.Count | Should -Be 4
    }

    It 'refuses an external-data location outside the model folder as a SecurityError' {
        $m = [Onnx.ModelProto]::Parser.ParseFrom([IO.File]::ReadAllBytes($ExtModel))
        foreach ($t in $m.Graph.Initializer) {
            foreach ($e in $t.ExternalData) { if ($e.Key -eq 'location') { $e.Value = '../conv.onnx.data' } }
        }
        $evil = Join-Path $ExtFolder 'evil.onnx'
        [IO.File]::WriteAllBytes($evil, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
        $err = Get-ErrorRecord { Get-OnnxModel $evil -ErrorAction Stop }
        $err.FullyQualifiedErrorId | Should -BeLike 'ExternalDataOutsideModelFolder,*'
        $err.CategoryInfo.Category | Should -Be 'SecurityError'
    }
}
