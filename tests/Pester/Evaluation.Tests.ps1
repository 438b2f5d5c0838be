# Issue 7: task metrics with confidence intervals, per-layer error, accuracy-aware quantization, performance.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:calib = New-ResNetDataSet -Split train -Count 8
    $script:eval = New-ResNetDataSet -Split t10k -Count 24
    $script:small = New-ResNetDataSet -Split t10k -Count 3
    # Five layers only keep the runs short: the others stay float.
    $script:layers = Get-ModelLayer $ResNet18 | Where-Object Quantizable | Select-Object -First 5
    $script:stats = $layers | Measure-ActivationRange -DataSet $calib -ThreadCount 2
    $script:int8 = $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'r18.int8.onnx')
    $script:knn = { param($Outputs, $Labels) [PtqTools.Core.Evaluation.TaskMetrics]::KnnCorrect($Outputs, $Labels, 3) }
}

Describe 'Test-QuantizedModel -Metric' {
    It 'reports a task metric on the features with a paired interval' {
        $r = $int8 | Test-QuantizedModel -DataSet $eval -LatencyRuns 0 -ThreadCount 2 -Metric $knn -MetricName 'kNN-3'
        $r.MetricName | Should -Be 'kNN-3'
        $r.MetricDrop.SampleCount | Should -Be 24
        $r.FloatMetric | Should -BeGreaterThan 0.15     # ten classes: chance is 0.1
        [math]::Abs($r.MetricDrop.Drop - ($r.FloatMetric - $r.QuantizedMetric)) | Should -BeLessThan 1e-9
        $r.MetricDrop.DropLow | Should -BeLessOrEqual $r.MetricDrop.Drop
        $r.MetricDrop.DropHigh | Should -BeGreaterOrEqual $r.MetricDrop.Drop
        $r.MetricDrop.McNemarPValue | Should -BeGreaterThan 0
        $r.Outputs[0].Mse | Should -BeGreaterThan 0
        # ResNet18 gives features, not class scores: no top-1 accuracy.
        $r.AccuracyDrop | Should -BeNullOrEmpty
        ($r | Format-List | Out-String) | Should -Match 'MetricDrop\s+: -?\d\.\d{4} \(95% CI'
    }

    It 'says when padded tokens are left out of the figures, and only then' {
        # MiniLM has an attention_mask input and a per-token last_hidden_state: compared at the real tokens only.
        . (Join-Path $PSScriptRoot 'MiniLm.ps1')
        $model = Get-MiniLmModel (Join-Path $TestDrive 'minilm-pad')
        $text = Join-Path $TestDrive 'pad.txt'
        Set-Content $text -Value 'Free software is software that gives you the user the freedom to share it.', 'A second sentence.'
        $data = New-PtqDataSet -Path $text -VocabPath (Join-Path $TestDrive 'minilm-pad/vocab.txt')
        $r = Test-QuantizedModel -FloatModel $model -LiteralPath $model -DataSet $data -LatencyRuns 0
        $r.PaddingExcluded | Should -Match "'attention_mask' is 0"
        $r.Cosine | Should -Be 1
        ($r | Format-List | Out-String) | Should -Match 'PaddingExcluded\s+: padding excluded'
        $resnet = $int8 | Test-QuantizedModel -DataSet $small -LatencyRuns 0 -ThreadCount 2
        $resnet.PaddingExcluded | Should -Be ''
        ($resnet | Format-List | Out-String) | Should -Not -Match 'PaddingExcluded'
    }

    It 'takes a metric that returns one value' {
        $r = $int8 | Test-QuantizedModel -DataSet $small -LatencyRuns 0 -ThreadCount 2 -Metric { param($o) $o.Count }
        $r.FloatMetric | Should -Be 3
        $r.MetricDrop.DropLow | Should -BeNullOrEmpty
    }

    It 'reports a failing metric as MetricFailed' {
        $e = Get-ErrorRecord { $int8 | Test-QuantizedModel -DataSet $small -LatencyRuns 0 -Metric { throw 'broken' } -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'MetricFailed,*'
        $e.Exception.Message | Should -Match 'broken'
    }
}

Describe 'Measure-LayerError' {
    BeforeAll { $script:errors = $stats | Measure-LayerError -DataSet (New-ResNetDataSet -Split t10k -Count 2) -ThreadCount 2 }

    It 'emits one ranked object per quantized layer' {
        $errors.Count | Should -Be $int8.QuantizedLayerCount
        $errors | ForEach-Object Rank | Should -Be (1..$errors.Count)   # not $errors.Rank: arrays have a Rank
        $errors.Layer | Sort-Object | Should -Be ($int8.QuantizedLayers | Sort-Object)
        $sorted = $errors | Sort-Object IsolatedSqnrDb
        $sorted[0].Layer | Should -Be $errors[0].Layer
        $errors | ForEach-Object { $_.IsolatedSqnrDb | Should -BeGreaterThan 10 }
        ($errors | Where-Object OpType -eq 'Conv').WeightSqnrDb | ForEach-Object { $_ | Should -BeGreaterThan 20 }
        (Get-FormatData -TypeName PtqTools.Core.Model.LayerError) | Should -Not -BeNullOrEmpty
    }

    It 'refuses objects that are not statistics' {
        $e = Get-ErrorRecord { 'x' | Measure-LayerError -DataSet $eval -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'UnexpectedInput,*'
    }
}

Describe 'Invoke-Quantization -MaxAccuracyDrop' {
    It 'needs -EvaluationDataSet' {
        $e = Get-ErrorRecord { $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'a.onnx') -MaxAccuracyDrop 0.01 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'EvaluationDataSetRequired,*'
    }

    It 'writes the best model and says the goal was missed when time runs out' {
        $out = Join-Path $TestDrive 'aware.onnx'
        $r = $stats | Invoke-Quantization -OutputPath $out -MaxAccuracyDrop -0 -EvaluationDataSet $eval -Metric $knn `
            -TimeBudget ([TimeSpan]::FromTicks(1)) -WarningVariable warn -WarningAction SilentlyContinue
        Test-Path $out | Should -BeTrue
        if ($r.GoalMet) {
            $r.SearchSummary | Should -Match '^Goal met'
        } else {
            $r.SearchSummary | Should -Match '^GOAL MISSED: the time budget'
            $warn | Should -Not -BeNullOrEmpty
        }
        $r.CandidatesTried | Should -Be 1
        $r.AccuracyDrop.SampleCount | Should -Be 24
    }
}

Describe 'Measure-ModelPerformance' {
    It 'times fp32 and int8 with percentiles in order' {
        $p = Measure-ModelPerformance $ResNet18, $int8.OutputPath -Runs 5 -WarmupRuns 1 -ThreadCount 2
        $p.Count | Should -Be 2
        foreach ($m in $p) {
            $m.P50Ms | Should -BeGreaterThan 0
            $m.P50Ms | Should -BeLessOrEqual $m.P90Ms
            $m.P90Ms | Should -BeLessOrEqual $m.P99Ms
            $m.SamplesPerSecond | Should -BeGreaterThan 0
            $m.PeakMemoryBytes | Should -BeGreaterOrEqual 0
            $m.Threads | Should -Be 2
            $m.Input | Should -Match 'random'
        }
        $p[0].SizeBytes | Should -Be (Get-Item $ResNet18).Length
        # Resident growth: memory an earlier session freed may be reused, so only the sum is sure to grow.
        ($p | Measure-Object PeakMemoryBytes -Sum).Sum | Should -BeGreaterThan 0
    }

    It 'times an int8 model on the PtqTools engine beside ONNX Runtime, with the peak memory' {
        $full = Invoke-Quantization -Path $ResNet18 -DataSet $calib -OutputPath (Join-Path $TestDrive 'r18.full.int8.onnx')
        $ort = Measure-ModelPerformance $full.OutputPath -Runs 3 -WarmupRuns 1 -ThreadCount 2
        $own = Measure-ModelPerformance $full.OutputPath -Engine PtqTools -Runs 3 -WarmupRuns 1 -ThreadCount 2
        $ort.Engine | Should -Be 'OnnxRuntime'
        $own.Engine | Should -Be 'PtqTools'
        $own.KernelPath | Should -Not -BeNullOrEmpty
        foreach ($m in $ort, $own) {
            $m.P50Ms | Should -BeGreaterThan 0
            $m.P50Ms | Should -BeLessOrEqual $m.P99Ms
            # The peak is the whole process's (pwsh, the module, the model), so it is above what the model added.
            $m.PeakMemoryBytes | Should -BeGreaterThan 100MB
            $m.PeakMemoryBytes | Should -BeGreaterOrEqual $m.MemoryGrowthBytes
            $m.PeakMemoryMethod | Should -Be 'VmHWM'
        }
        # The float model runs too: its float Convs and Adds in ONNX Runtime, one node at a time.
        $f = Measure-ModelPerformance $ResNet18 -Engine PtqTools -Runs 1 -WarmupRuns 0 -ThreadCount 2
        $f.P50Ms | Should -BeGreaterThan 0
    }

    It 'times batches of text samples (several int64 inputs) on a model with a dynamic batch' {
        . (Join-Path $PSScriptRoot 'MiniLm.ps1')
        $model = Get-MiniLmModel (Join-Path $TestDrive 'minilm')
        $text = Join-Path $TestDrive 'perf.txt'
        Set-Content $text -Value 'Free software is software that gives you the user the freedom to share it.'
        $data = New-PtqDataSet -Path $text -VocabPath (Join-Path $TestDrive 'minilm/vocab.txt')
        $p = foreach ($b in 1, 4) { Measure-ModelPerformance $model -DataSet $data -BatchSize $b -Runs 3 -WarmupRuns 1 -ThreadCount 2 }
        $p.BatchSize | Should -Be 1, 4
        foreach ($m in $p) {
            $m.Input | Should -Match 'perf.txt'
            # Throughput is samples per second of the timed runs: batch x runs / total time.
            ($m.SamplesPerSecond * $m.MeanMs / 1000) | Should -BeGreaterThan ($m.BatchSize * 0.99)
            ($m.SamplesPerSecond * $m.MeanMs / 1000) | Should -BeLessThan ($m.BatchSize * 1.01)
        }
    }

    It 'refuses a batch the model cannot take' {
        $e = Get-ErrorRecord { Measure-ModelPerformance $ResNet18 -BatchSize 2 -Runs 1 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'BatchSizeNotSupported,*'
    }
}

Describe 'Export-QuantizationReport' {
    BeforeAll {
        $script:layerErrors = $stats | Measure-LayerError -DataSet (New-ResNetDataSet -Split t10k -Count 1) -ThreadCount 2
        $knn1 = { param($Outputs, $Labels) [PtqTools.Core.Evaluation.TaskMetrics]::KnnCorrect($Outputs, $Labels, 1) }
        $script:accuracy = $int8 | Test-QuantizedModel -DataSet $small -LatencyRuns 0 -ThreadCount 2 -Metric $knn1 -MetricName 'kNN-1'
        $script:all = @($int8; $accuracy; $layerErrors; $stats)
        $script:chromium = (Get-Command chromium -ErrorAction SilentlyContinue).Source
    }

    It 'writes a self-contained HTML page whose charts render in headless Chromium' {
        if ($reason = Get-MissingPackageReason chromium) { Set-ItResult -Skipped -Because $reason; return }
        $chromium = $ChromiumPath
        $html = Join-Path $TestDrive 'report.html'
        $file = $all | Export-QuantizationReport $html
        $file.FullName | Should -Be $html
        $text = Get-Content -Raw $html
        $text | Should -Not -Match '(src|href)="https?:'                # nothing fetched
        $profile = Join-Path $TestDrive "chromium-$([guid]::NewGuid())"
        $null = New-Item -ItemType Directory $profile
        $dom = & $chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking `
            --disable-component-update --disable-sync "--user-data-dir=$profile" --virtual-time-budget=5000 --dump-dom "file://$html" 2>$null | Out-String
        # Set by the page's script after load, from the images the browser decoded: the SQNR chart, the range chart
        # and one histogram per calibrated tensor (at most 24; these 5 layers have fewer tensors).
        $tensors = @($stats | Where-Object { $_.Histogram.Count -gt 0 })
        $tensors.Count | Should -BeGreaterThan 0
        $tensors.Count | Should -BeLessOrEqual 24
        $dom | Should -Match "data-histograms-rendered=`"$($tensors.Count)/$($tensors.Count)`""
        $dom | Should -Match "data-charts-rendered=`"$(2 + $tensors.Count)/$(2 + $tensors.Count)`""
        $dom | Should -Match 'Activation histograms'
        foreach ($t in $tensors) { $dom | Should -Match ('<figcaption>' + [regex]::Escape([Net.WebUtility]::HtmlEncode($t.Tensor)) + ':') }
        $dom | Should -Match 'Per-layer SQNR'
        $dom | Should -Match 'kNN-1'
        foreach ($l in $layerErrors) { $dom | Should -Match ([regex]::Escape($l.Layer)) }
    }

    It 'writes Markdown and JSON views of the same objects' {
        $md = Join-Path $TestDrive 'report.md'
        $json = Join-Path $TestDrive 'report.json'
        $null = $all | Export-QuantizationReport $md -Format Markdown
        $null = $all | Export-QuantizationReport $json -Format Json
        $mdText = Get-Content -Raw $md
        $mdText | Should -Match '## Layers'
        $mdText | Should -Match ([regex]::Escape($layerErrors[0].Layer))
        $back = Get-Content -Raw $json | ConvertFrom-Json
        $back.Layers.Count | Should -Be $layerErrors.Count
        $back.Statistics.Count | Should -Be $stats.Count
        $back.Accuracy[0].MetricName | Should -Be 'kNN-1'
    }

    It 'refuses to overwrite without -Force and writes nothing with -WhatIf' {
        $html = Join-Path $TestDrive 'twice.html'
        $null = $layerErrors | Export-QuantizationReport $html
        $e = Get-ErrorRecord { $layerErrors | Export-QuantizationReport $html -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputExists,*'
        $layerErrors | Export-QuantizationReport (Join-Path $TestDrive 'whatif.html') -WhatIf
        Test-Path (Join-Path $TestDrive 'whatif.html') | Should -BeFalse
    }
}
