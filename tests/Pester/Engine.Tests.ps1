BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
}

Describe 'Invoke-ModelInference' {
    BeforeAll {
        # A small int8 ResNet18 made the way a user makes one: 8 calibration images, default options.
        $calib = New-ResNetDataSet -Split train -Count 8
        $script:int8 = Join-Path $TestDrive 'resnet18.int8.onnx'
        $null = Invoke-Quantization -Path $ResNet18 -DataSet $calib -OutputPath $int8
        $script:data = New-ResNetDataSet -Split t10k -Count 3 -Skip 50
    }

    It 'has a format view for its output type' {
        $type = (Get-Command Invoke-ModelInference).OutputType[0].Name
        Get-FormatData -TypeName $type | Should -Not -BeNullOrEmpty
    }

    It 'runs the int8 model on the PtqTools engine with the same outputs as ONNX Runtime' {
        $ort = @(Invoke-ModelInference -Path $int8 -DataSet $data)
        $own = @(Invoke-ModelInference -Path $int8 -DataSet $data -Engine PtqTools -ThreadCount 2)
        $ort.Count | Should -Be 3
        $own.Count | Should -Be 3
        $ort[0].Engine | Should -Be 'OnnxRuntime'
        $own[0].Engine | Should -Be 'PtqTools'
        $own[0].KernelPath | Should -Not -BeNullOrEmpty
        foreach ($i in 0..2) {
            $own[$i].OutputNames | Should -Be $ort[$i].OutputNames
            $a = [float[]]$ort[$i].Outputs[0]; $b = [float[]]$own[$i].Outputs[0]
            $a.Count | Should -Be 512
            # The output is dequantized int8: its values are a grid whose spacing (the smallest gap) is one step.
            $sorted = $a | Sort-Object -Unique
            $step = (1..($sorted.Count - 1) | ForEach-Object { $sorted[$_] - $sorted[$_ - 1] } | Measure-Object -Minimum).Minimum
            $diff = 0..($a.Count - 1) | ForEach-Object { [Math]::Abs($a[$_] - $b[$_]) / $step }
            Write-Host ("sample {0}: step {1}, identical {2} of 512, max {3:F2} steps" -f $i, $step, @($diff | Where-Object { $_ -lt 1e-3 }).Count, ($diff | Measure-Object -Maximum).Maximum)
            ($diff | Measure-Object -Maximum).Maximum | Should -BeLessOrEqual 1.001
            @($diff | Where-Object { $_ -lt 1e-3 }).Count | Should -BeGreaterThan 450
        }
    }

    It 'runs in parallel runspaces with different thread counts, each run with its own threads and the serial outputs' {
        # The kernels' threads are each run's own value (no process-wide setting to race on): three runspaces at once,
        # on 1, 2 and 3 threads, each inferring and timing; each reports its own count and the outputs of a serial run.
        $module = $env:PTQTOOLS_MODULE
        $serial = (Invoke-ModelInference -Path $int8 -DataSet $data -Engine PtqTools -ThreadCount 1 | ForEach-Object { [string]::Join(',', $_.Outputs[0]) }) -join ';'
        $runs = 1, 2, 3 | ForEach-Object -ThrottleLimit 3 -Parallel {
            Import-Module $using:module
            $results = @()
            $timed = @()
            foreach ($rep in 1..2) {
                $results += @(Invoke-ModelInference -Path $using:int8 -DataSet $using:data -Engine PtqTools -ThreadCount $_)
                $timed += Measure-ModelPerformance -Path $using:int8 -DataSet $using:data -Engine PtqTools -ThreadCount $_ -WarmupRuns 0 -Runs 2
            }
            [pscustomobject]@{
                Asked = $_
                Threads = @($results.Threads + $timed.Threads | Select-Object -Unique)
                Paths = @($results.KernelPath + $timed.KernelPath | Select-Object -Unique)
                Outputs = @(foreach ($i in 0, 3) { ($results[$i..($i + 2)] | ForEach-Object { [string]::Join(',', $_.Outputs[0]) }) -join ';' })
            }
        }
        $runs | Should -HaveCount 3
        $path = (Invoke-ModelInference -Path $int8 -DataSet $data -Engine PtqTools | Select-Object -First 1).KernelPath
        foreach ($r in $runs) {
            $r.Threads | Should -Be @($r.Asked) -Because "the run asked for $($r.Asked) thread(s)"
            $r.Paths | Should -Be @($path)
            foreach ($o in $r.Outputs) { $o | Should -Be $serial -Because "the outputs on $($r.Asked) thread(s) are those of one" }
        }
    }

    It 'takes the model from the pipeline and the result survives Export-Clixml' {
        $r = Get-Item $int8 | Invoke-ModelInference -DataSet $data -Engine PtqTools | Select-Object -First 1
        $file = Join-Path $TestDrive 'r.xml'
        $r | Export-Clixml $file
        $back = Import-Clixml $file
        $back.Outputs[0].Count | Should -Be 512
        $back.Top | Should -Be $r.Top
        ($r | Format-Table | Out-String) | Should -Match 'PtqTools'
    }

    It 'runs the float model too, its float Convs and Adds in ONNX Runtime one node at a time' {
        $ort = @(Invoke-ModelInference -Path $ResNet18 -DataSet $data)
        $own = @(Invoke-ModelInference -Path $ResNet18 -DataSet $data -Engine PtqTools)
        $own.Count | Should -Be 3
        foreach ($i in 0..2) {
            $a = [float[]]$ort[$i].Outputs[0]; $b = [float[]]$own[$i].Outputs[0]
            $b.Count | Should -Be $a.Count
            $dot = 0.0; $aa = 0.0; $bb = 0.0
            foreach ($k in 0..($a.Count - 1)) { $dot += $a[$k] * $b[$k]; $aa += $a[$k] * $a[$k]; $bb += $b[$k] * $b[$k] }
            ($dot / [Math]::Sqrt($aa * $bb)) | Should -BeGreaterThan 0.9999
        }
    }

    It 'runs a dynamic int8 MiniLM on text samples (three int64 inputs), its float ops in ONNX Runtime' {
        . (Join-Path $PSScriptRoot 'MiniLm.ps1')
        $model = Get-MiniLmModel (Join-Path $TestDrive 'minilm')
        $q = Join-Path $TestDrive 'minilm.dynamic.onnx'
        $null = Invoke-Quantization -Path $model -Mode Dynamic -OutputPath $q
        $text = Join-Path $TestDrive 'sentences.txt'
        Set-Content $text -Value (Get-LicenceSentences 3)
        $tokens = New-PtqDataSet -Path $text -VocabPath (Join-Path $TestDrive 'minilm/vocab.txt')
        $ort = @(Invoke-ModelInference -Path $q -DataSet $tokens)
        $own = @(Invoke-ModelInference -Path $q -DataSet $tokens -Engine PtqTools)
        $own.Count | Should -Be 3
        foreach ($i in 0..2) {
            $own[$i].OutputNames | Should -Be $ort[$i].OutputNames
            $a = [float[]]$ort[$i].Outputs[0]; $b = [float[]]$own[$i].Outputs[0]
            $dot = 0.0; $aa = 0.0; $bb = 0.0
            foreach ($k in 0..($a.Count - 1)) { $dot += $a[$k] * $b[$k]; $aa += $a[$k] * $a[$k]; $bb += $b[$k] * $b[$k] }
            # ONNX Runtime fuses LayerNorm, GELU and the dynamic MatMuls; a last-bit difference that moves a tensor's
            # min or max gives the next DynamicQuantizeLinear another scale (measured: cosine 0.994 at worst).
            ($dot / [Math]::Sqrt($aa * $bb)) | Should -BeGreaterThan 0.98
        }
    }

    It 'reports a missing model as a non-terminating error' {
        $out = Invoke-ModelInference -Path (Join-Path $TestDrive 'none.onnx') -DataSet $data -ErrorAction SilentlyContinue -ErrorVariable e
        $out | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'PathNotFound*'
    }
}
