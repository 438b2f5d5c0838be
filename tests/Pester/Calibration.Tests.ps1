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

    It 'gives the same with thread jobs that save their shard to a file, as about_PtqTools_Calibration shows' {
        # The page's example: each job calibrates its part and exports it; the files are imported and merged.
        $folder = Join-Path $TestDrive 'shards'
        $null = New-Item -ItemType Directory $folder
        $jobs = 0..3 | ForEach-Object {
            Start-ThreadJob -ThrottleLimit 2 -ArgumentList $_, $env:PTQTOOLS_MODULE, (Join-Path $PSScriptRoot 'TestData.ps1'), $folder -ScriptBlock {
                param($shard, $module, $testData, $folder)
                Import-Module $module
                . $testData
                $part = New-ResNetDataSet -Split train -Count 2 -Skip ($shard * 2)
                Measure-ActivationRange -Path $ResNet18 -DataSet $part -Method Entropy -ThreadCount 1 |
                    Export-ActivationRange -Path (Join-Path $folder "shard-$shard.json") -PassThru
            }
        }
        $files = $jobs | Receive-Job -Wait -AutoRemoveJob
        @($files).Count | Should -Be 4
        $fromFiles = Import-ActivationRange -Path (Join-Path $folder 'shard-*.json') -ModelPath $ResNet18 | Merge-ActivationRange
        $fromFiles.Count | Should -Be $single.Count
        foreach ($one in $single) {
            $m = $fromFiles | Where-Object Tensor -EQ $one.Tensor
            $m.SampleCount | Should -Be 8
            $m.Min | Should -Be $one.Min
            $m.Max | Should -Be $one.Max
            ($m.Histogram -join ',') | Should -Be ($one.Histogram -join ',')
            "$($m.RangeMin) $($m.RangeMax)" | Should -Be "$($one.RangeMin) $($one.RangeMax)"
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

Describe 'New-PtqDataSet -Shuffle, -Seed and -BatchSize' {
    It 'reads a random subset in an order fixed by the seed' {
        $idx = Join-Path $FashionMnist 'train-images-idx3-ubyte.gz'
        $a = New-PtqDataSet -Path $idx -Channels 1 -MaxSamples 6 -Shuffle -Seed 11
        $b = New-PtqDataSet -Path $idx -Channels 1 -MaxSamples 6 -Shuffle -Seed 11
        $c = New-PtqDataSet -Path $idx -Channels 1 -MaxSamples 6 -Shuffle -Seed 12
        $a.Shuffle | Should -BeTrue
        $a.Seed | Should -Be 11
        $order = { param($ds) @([PtqTools.Core.Data.DataSetReader]::Indices($ds)) }
        $first = & $order $a
        $first.Count | Should -Be 6
        ($first -join ',') | Should -Be ((& $order $b) -join ',')
        ($first -join ',') | Should -Not -Be ((& $order $c) -join ',')
        ($first -join ',') | Should -Not -Be '0,1,2,3,4,5'
        # The order the model sees is the data set's: Invoke-ModelInference names each sample.
        $r = New-ResNetDataSet -Split train -Count 3
        $shuffled = New-PtqDataSet -Path $idx -Resize 224 -Scale 1 -PreprocessModel $ResNetPreprocess -MaxSamples 3 -Shuffle -Seed 11
        $ids = @(Invoke-ModelInference -Path $ResNet18 -DataSet $shuffled -ThreadCount 1 | ForEach-Object Index)
        ($ids -join ',') | Should -Be ((@([PtqTools.Core.Data.DataSetReader]::Indices($shuffled))) -join ',')
    }

    It 'records a drawn seed when none is given, so the order can be repeated' {
        $ds = New-PtqDataSet -Path (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz') -Channels 1 -MaxSamples 4 -Shuffle
        $again = New-PtqDataSet -Path (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz') -Channels 1 -MaxSamples 4 -Shuffle -Seed $ds.Seed
        ([PtqTools.Core.Data.DataSetReader]::Indices($ds) -join ',') | Should -Be ([PtqTools.Core.Data.DataSetReader]::Indices($again) -join ',')
    }

    It 'refuses -BatchSize on a model whose batch dimension is fixed, naming the fix' {
        $ds = New-PtqDataSet -Path (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz') -Resize 224 -Scale 1 -PreprocessModel $ResNetPreprocess -MaxSamples 2 -BatchSize 2
        $ds.BatchSize | Should -Be 2
        $e = Get-ErrorRecord { Get-ModelLayer $ResNet18 -Name Convolution249 | Measure-ActivationRange -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'BatchSizeNotSupported,*'
        $e.Exception.Message | Should -Match '-BatchSize 1'
    }
}

Describe 'Batched calibration of MiniLM (dynamic batch dimension)' {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'MiniLm.ps1')
        $work = Join-Path $TestDrive 'minilm'
        $script:MiniLm = Get-MiniLmModel $work
        $text = Join-Path $work 'sentences.txt'
        # Licence sentences cut to 12 tokens, so that they share one shape and can be batched.
        @('This program is free software: you can redistribute it and/or modify it.',
            'You should have received a copy of the GNU General Public License along with this program.',
            'The licenses for most software and other practical works are designed to take away your freedom.',
            'When we speak of free software, we are referring to freedom, not price.',
            'Developers that use the GNU GPL protect your rights with two steps.',
            'Some devices are designed to deny users access to install or run modified versions.',
            'Each licensee is addressed as you, and the recipients may be individuals or organizations.',
            'To modify a work means to copy from or adapt all or part of the work.') | Set-Content $text
        $script:layers = Get-ModelLayer $MiniLm | Where-Object Name -In 'MatMul_36', 'MatMul_120', 'Add_50'
        $one = New-PtqDataSet -Path $text -VocabPath (Join-Path $work 'vocab.txt') -MaxSequenceLength 12
        $four = New-PtqDataSet -Path $text -VocabPath (Join-Path $work 'vocab.txt') -MaxSequenceLength 12 -BatchSize 4
        $script:single = $layers | Measure-ActivationRange -DataSet $one -ThreadCount 1
        $script:batched = $layers | Measure-ActivationRange -DataSet $four -ThreadCount 1 -Verbose 4>&1
    }

    It 'runs batches of 4 and gives what one sentence at a time gives' {
        $verbose = @($batched | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] })
        $stats = @($batched | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] })
        $stats.Count | Should -Be $single.Count
        $stats.Count | Should -BeGreaterThan 0
        foreach ($s in $single) {
            $b = $stats | Where-Object Tensor -EQ $s.Tensor
            $b.SampleCount | Should -Be 8
            $b.ElementCount | Should -Be $s.ElementCount
            $b.Min | Should -BeGreaterOrEqual ($s.Min - 1e-3 * [math]::Abs($s.Min) - 1e-5)
            $b.Max | Should -BeLessOrEqual ($s.Max + 1e-3 * [math]::Abs($s.Max) + 1e-5)
            [math]::Abs($b.Max - $s.Max) | Should -BeLessOrEqual (1e-3 * [math]::Abs($s.Max) + 1e-5)
        }
        # -Verbose names each tensor observed.
        foreach ($s in $single) { ($verbose.Message -join "`n") | Should -Match ([regex]::Escape("Observing '$($s.Tensor)'")) }
    }
}

Describe 'New-PtqDataSet -ScriptBlock: a lazy data source' {
    BeforeAll {
        $script:layers = Get-ModelLayer $ResNet18 -Name Convolution249
        $script:prepared = New-ResNetDataSet -Split train -Count 3
        # Three prepared ResNet18 samples, as flat arrays, for the scripts below to yield.
        $reader = [PtqTools.Core.Data.SampleReader]::new($prepared)
        $script:arrays = @($reader.Read([Threading.CancellationToken]::None) | ForEach-Object { , $_.Data })
        $reader.Dispose()
    }

    It 'is not run when the data set is made' {
        $script:ran = $false
        $ds = New-PtqDataSet -ScriptBlock { $script:ran = $true } -Shape 3, 224, 224
        $ds.Kind | Should -Be 'Script'
        $ds.Count | Should -Be 0
        $ran | Should -BeFalse
    }

    It 'streams what the script yields into the calibration: the same statistics as the same arrays given up front' {
        $fromArrays = $layers | Measure-ActivationRange -DataSet (New-PtqDataSet -InputObject $arrays -Shape 3, 224, 224) -ThreadCount 1
        $source = $arrays
        $ds = New-PtqDataSet -ScriptBlock { foreach ($a in $source) { , $a } } -Shape 3, 224, 224
        $fromScript = $layers | Measure-ActivationRange -DataSet $ds -ThreadCount 1
        $fromScript.Count | Should -Be $fromArrays.Count
        foreach ($s in $fromArrays) {
            $t = $fromScript | Where-Object Tensor -EQ $s.Tensor
            $t.SampleCount | Should -Be 3
            $t.Max | Should -Be $s.Max
            ($t.Histogram -join ',') | Should -Be ($s.Histogram -join ',')
        }
    }

    It 'runs on the pipeline thread, in the caller''s scope, and is stopped by -MaxSamples (an endless generator)' {
        $script:threads = [Collections.Generic.List[int]]::new()
        $script:yielded = 0
        $first = $arrays[0]
        $ds = New-PtqDataSet -ScriptBlock {
            while ($true) { $script:threads.Add([Environment]::CurrentManagedThreadId); $script:yielded++; , $first }
        } -Shape 3, 224, 224 -MaxSamples 4
        $stats = $layers | Measure-ActivationRange -DataSet $ds -ThreadCount 1
        $stats[0].SampleCount | Should -Be 4
        # Lazy: an endless generator cannot be collected up front, so ending at all shows the samples were taken as
        # the script wrote them, and the script was stopped. (The stop is asynchronous: the script may write a few
        # more objects, which are not taken, before it ends; how many depends on the machine's load.)
        $yielded | Should -BeGreaterOrEqual 4
        @($threads | Sort-Object -Unique) | Should -Be @([Environment]::CurrentManagedThreadId)
    }

    It 'reports a sample of the wrong size as DataShapeMismatch, or skips and counts it with -SkipInvalid' {
        $good = $arrays[0]
        $ds = New-PtqDataSet -ScriptBlock { , $good; , [float[]](1, 2, 3); , $good } -Shape 3, 224, 224
        $e = Get-ErrorRecord { $layers | Measure-ActivationRange -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataShapeMismatch,*'
        $stats = $layers | Measure-ActivationRange -DataSet $ds -SkipInvalid -WarningVariable warnings -WarningAction SilentlyContinue
        $stats[0].SampleCount | Should -Be 2
        "$warnings" | Should -Match '1 of 3 samples were skipped'
    }

    It 'reports a script that fails as ScriptDataSourceFailed' {
        $good = $arrays[0]
        $ds = New-PtqDataSet -ScriptBlock { , $good; throw 'no more data' } -Shape 3, 224, 224
        $e = Get-ErrorRecord { $layers | Measure-ActivationRange -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ScriptDataSourceFailed,*'
        $e.Exception.Message | Should -Match 'no more data'
    }

    It 'survives Export-Clixml as plain data: the script''s text is run' {
        $ds = New-PtqDataSet -ScriptBlock { 1..2 | ForEach-Object { , [float[]]::new(3 * 224 * 224) } } -Shape 3, 224, 224
        $file = Join-Path $TestDrive 'script.dataset.xml'
        $ds | Export-Clixml $file
        $back = Import-Clixml $file
        $back.ScriptText | Should -Match 'ForEach-Object'
        $stats = $layers | Measure-ActivationRange -DataSet $back -ThreadCount 1
        $stats[0].SampleCount | Should -Be 2
        ($stats | Where-Object Tensor -EQ 'Input247').Max | Should -Be 0   # the zeros the script wrote
    }

    It 'is refused by commands that read stored samples, and by -Shuffle' {
        $ds = New-PtqDataSet -ScriptBlock { , $arrays[0] } -Shape 3, 224, 224
        $e = Get-ErrorRecord { Invoke-ModelInference -Path $ResNet18 -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ScriptDataSetNotSupported,*'
        (Get-Command New-PtqDataSet).Parameters['Shuffle'].ParameterSets.Keys | Should -Not -Contain 'Script'
    }
}

Describe 'Operation of Measure-ActivationRange' {
    BeforeAll {
        $reader = [PtqTools.Core.Data.SampleReader]::new((New-ResNetDataSet -Split train -Count 1))
        $script:sample = @($reader.Read([Threading.CancellationToken]::None))[0].Data
        $reader.Dispose()
    }

    It 'reports progress with the samples per second' {
        $ps = [powershell]::Create()
        $null = $ps.AddScript({
                param($module, $testData)
                Import-Module $module
                . $testData
                $ProgressPreference = 'Continue'
                Get-ModelLayer $ResNet18 -Name Convolution249 | Measure-ActivationRange -DataSet (New-ResNetDataSet -Split train -Count 3) -ThreadCount 1
            }).AddArgument($env:PTQTOOLS_MODULE).AddArgument((Join-Path $PSScriptRoot 'TestData.ps1'))
        $null = $ps.Invoke()
        $records = @($ps.Streams.Progress | Where-Object Activity -Like 'Measuring activation ranges*')
        $ps.Dispose()
        $running = @($records | Where-Object RecordType -EQ 'Processing')
        $running.Count | Should -BeGreaterThan 0
        $running[-1].StatusDescription | Should -Match '^3 of 3 samples, \d+(\.\d+)?/s$'
        $running[-1].PercentComplete | Should -Be 100
        $records[-1].RecordType | Should -Be 'Completed'
    }

    It 'stops within a second on Ctrl+C while a script source streams' {
        $ps = [powershell]::Create()
        $null = $ps.AddScript({
                param($module, $model, $sample)
                Import-Module $module
                $ds = New-PtqDataSet -ScriptBlock { while ($true) { , $sample } } -Shape 3, 224, 224
                Measure-ActivationRange -Path $model -DataSet $ds -ThreadCount 1
            }).AddArgument($env:PTQTOOLS_MODULE).AddArgument($ResNet18).AddArgument($sample)
        $handle = $ps.BeginInvoke()
        Start-Sleep -Seconds 5
        $handle.IsCompleted | Should -BeFalse
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $ps.Stop()
        $clock.Stop()
        $ps.InvocationStateInfo.State | Should -Be 'Stopped'
        $ps.Dispose()
        # The bound of the 'Stopping' test in PtqTools.Tests.ps1: generous for a shared machine.
        $clock.Elapsed.TotalSeconds | Should -BeLessThan 2
    }
}
