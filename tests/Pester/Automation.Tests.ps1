# Objects as plain data across process-style boundaries, and cmdlets under ForEach-Object -Parallel.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:calib = New-ResNetDataSet -Split train -Count 4
    $script:eval = New-ResNetDataSet -Split t10k -Count 4
    $script:stats = Get-ModelLayer $ResNet18 | Measure-ActivationRange -DataSet $calib
    $script:result = $stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'r18.onnx')
    # The serializer remoting and jobs use (and Export-Clixml, at its default depth).
    function Send-Across($InputObject) {
        [Management.Automation.PSSerializer]::Deserialize([Management.Automation.PSSerializer]::Serialize($InputObject, 2))
    }
}

Describe 'Objects survive serialization' {
    It 'a quantization result still feeds Test-QuantizedModel, and the report keeps its per-output figures' {
        $back = Send-Across $result
        $back.PSObject.TypeNames[0] | Should -Be 'Deserialized.PtqTools.Core.Model.QuantizationResult'
        $report = $back | Test-QuantizedModel -DataSet (Send-Across $eval) -LatencyRuns 0
        $report.Cosine | Should -BeGreaterThan 0.98
        $again = Send-Across $report
        $again.Outputs[0].Output | Should -Be 'Pooling395_Output_0'
        $again.Outputs[0].Cosine | Should -Be $report.Outputs[0].Cosine
        ($report | ConvertTo-Json -Depth 3 | ConvertFrom-Json).Outputs[0].SqnrDb | Should -Be $report.Outputs[0].SqnrDb
    }

    It 'a data set works after ConvertTo-Json' {
        $ds = $calib | ConvertTo-Json -Depth 3 | ConvertFrom-Json
        $s = Get-ModelLayer $ResNet18 -Name Convolution249 | Measure-ActivationRange -DataSet $ds
        ($s | Where-Object Tensor -eq 'Input247').Min | Should -Be ($stats | Where-Object Tensor -eq 'Input247').Min
    }

    It 'every output type of every cmdlet has a view, live and deserialized, that fits in 120 columns' {
        if ($reason = Get-MissingPackageReason libonnx-testdata) { Set-ItResult -Skipped -Because $reason; return }
        $one = New-ResNetDataSet -Split t10k -Count 1
        $conformance = Join-Path $OnnxTestData 'pytorch-converted'
        $conv = $stats | Where-Object { $_.Layers -contains 'Convolution249' }
        $objects = @(
            (Get-OnnxModel $ResNet18), (Get-ModelLayer $ResNet18 | Select-Object -First 3), $calib,
            ($stats | Select-Object -First 3), $result,
            ($result | Test-QuantizedModel -DataSet $one -LatencyRuns 0),
            ($conv | Measure-LayerError -DataSet $one -ThreadCount 2),
            (Measure-ModelPerformance -Path $result.OutputPath -DataSet $one -WarmupRuns 1 -Runs 3),
            (Invoke-ModelInference -Path $result.OutputPath -DataSet $one),
            (Get-QuantizationRule),
            (Get-PtqCache), (Get-PtqCache -Summary),
            (Get-QuantizationStatus -Path $ResNet18 -OutputPath $result.OutputPath),
            (Update-QuantizedModel -LiteralPath "$conformance/test_Conv2d" -OutputFolder (Join-Path $TestDrive 'views') -DataSet (New-PtqDataSet -LiteralPath "$conformance/test_Conv2d")))
        $viewed = [Collections.Generic.HashSet[string]]::new()
        foreach ($o in $objects) {
            foreach ($form in $o, (Send-Across $o)) {
                $type = @($form)[0].PSObject.TypeNames[0]
                $null = $viewed.Add(($type -replace '^Deserialized\.'))
                Get-FormatData -TypeName $type | Should -Not -BeNullOrEmpty -Because "$type needs a view"
                $text = $form | Out-String -Width 120
                ($text -split "`n" | Measure-Object -Maximum Length).Maximum | Should -BeLessOrEqual 120 -Because $type
                $text.Trim() | Should -Not -BeNullOrEmpty
            }
        }
        # Every type a cmdlet declares it emits was looked at (files excepted: FileInfo has PowerShell's own view).
        $declared = Get-Command -Module PtqTools | ForEach-Object { $_.OutputType.Type.FullName } |
            Where-Object { $_ -and $_ -ne 'System.IO.FileInfo' } | Sort-Object -Unique
        $declared | Where-Object { -not $viewed.Contains($_) } | Should -BeNullOrEmpty
    }
}

Describe 'Remoting: objects through an out-of-process runspace (Start-Job, the protocol Invoke-Command uses)' {
    BeforeAll {
        # A job runs in a child pwsh and sends its output back through the remoting serializer, one level deep by
        # default: exactly what a remote session does. Layers go in, statistics, a result, a report and inference
        # outputs come back.
        $script:fromJob = Start-Job -ArgumentList (, @(Get-ModelLayer $ResNet18)), $calib, $eval, $env:PTQTOOLS_MODULE, (Join-Path $TestDrive 'job.onnx') -ScriptBlock {
            param($layers, $calibration, $evaluation, $module, $output)
            $ErrorActionPreference = 'Stop'
            Import-Module $module
            $s = $layers | Measure-ActivationRange -DataSet $calibration
            $r = $s | Invoke-Quantization -OutputPath $output
            [pscustomobject]@{
                Stats = $s
                Result = $r
                Report = $r | Test-QuantizedModel -DataSet $evaluation -LatencyRuns 0
                Inference = Invoke-ModelInference -Path $output -DataSet $evaluation | Select-Object -First 1
            }
        } | Receive-Job -Wait -AutoRemoveJob
    }

    It 'calibrates deserialized layers in the child to the same statistics and the same model bytes' {
        $fromJob.Result.OutputSha256 | Should -Be $result.OutputSha256
        $fromJob.Stats | Should -HaveCount $stats.Count
        $fromJob.Stats[0].PSObject.TypeNames[0] | Should -Be 'Deserialized.PtqTools.Core.Model.TensorStatistics'
    }

    It 'keeps nested data as data, not as strings' {
        $first = $fromJob.Stats | Where-Object Tensor -eq 'Input247'
        $local = $stats | Where-Object Tensor -eq 'Input247'
        ($first.Ranges | Where-Object Method -eq 'Entropy').Max | Should -Be ($local.Ranges | Where-Object Method -eq 'Entropy').Max
        $fromJob.Report.Outputs[0].Output | Should -Be 'Pooling395_Output_0'
        $fromJob.Report.Outputs[0].SqnrDb | Should -BeGreaterThan 10
        $fromJob.Inference.Outputs[0].Count | Should -Be 512
        $fromJob.Inference.Outputs[0][0] | Should -BeOfType [single]
    }

    It 'feeds what came back into the local cmdlets' {
        $again = $fromJob.Stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'local-from-job.onnx')
        $again.OutputSha256 | Should -Be $result.OutputSha256
        ($fromJob.Result | Test-QuantizedModel -DataSet $eval -LatencyRuns 0).Cosine | Should -Be $fromJob.Report.Cosine
    }
}

Describe 'ForEach-Object -Parallel' {
    It 'quantizes the same statistics in parallel runspaces to identical bytes' {
        $folder = Join-Path $TestDrive 'parallel'
        $null = New-Item -ItemType Directory $folder
        $module = $env:PTQTOOLS_MODULE
        $saved = Join-Path $TestDrive 'stats.xml'
        $stats | Export-Clixml $saved
        $hashes = 1..4 | ForEach-Object -ThrottleLimit 4 -Parallel {
            Import-Module $using:module
            (Import-Clixml $using:saved | Invoke-Quantization -OutputPath (Join-Path $using:folder "r$_.onnx")).OutputSha256
        }
        $hashes | Should -HaveCount 4
        $hashes | Select-Object -Unique | Should -Be $result.OutputSha256
    }

    It 'runs every model-reading cmdlet at once in parallel runspaces with the results of a serial run' {
        $module = $env:PTQTOOLS_MODULE
        $int8 = $result.OutputPath
        $jobs = @{
            Summary = { (Get-OnnxModel -LiteralPath $model).Sha256 }
            Layers = { (Get-ModelLayer -LiteralPath $model | ForEach-Object { "$($_.Name):$($_.Quantizable)" }) -join ',' }
            Ranges = { (Get-ModelLayer -LiteralPath $model -Name Convolution249 | Measure-ActivationRange -DataSet $calib | ForEach-Object { "$($_.Tensor)=$($_.RangeMin),$($_.RangeMax)" }) -join ',' }
            Compare = { (Test-QuantizedModel -FloatModel $model -QuantizedModel $int8 -DataSet $eval -LatencyRuns 0).Cosine }
            Engine = { (Invoke-ModelInference -Path $int8 -DataSet $eval -Engine PtqTools -ThreadCount 2 | ForEach-Object { [string]::Join(',', $_.Outputs[0]) }) -join ';' }
            Ort = { (Invoke-ModelInference -Path $int8 -DataSet $eval | ForEach-Object { [string]::Join(',', $_.Outputs[0]) }) -join ';' }
        }
        $serial = @{}
        foreach ($name in $jobs.Keys) {
            $model = $ResNet18
            $serial[$name] = & $jobs[$name]
            $serial[$name] | Should -Not -BeNullOrEmpty -Because "$name gives a result"
        }
        # Each job twice, all twelve at once.
        $work = foreach ($name in $jobs.Keys) { foreach ($copy in 1, 2) { [pscustomobject]@{ Name = $name; Code = $jobs[$name].ToString() } } }
        $parallel = $work | ForEach-Object -ThrottleLimit 12 -Parallel {
            Import-Module $using:module
            $model = $using:ResNet18; $int8 = $using:int8; $calib = $using:calib; $eval = $using:eval
            [pscustomobject]@{ Name = $_.Name; Value = & ([scriptblock]::Create($_.Code)) }
        }
        $parallel | Should -HaveCount 12
        foreach ($p in $parallel) { $p.Value | Should -Be $serial[$p.Name] -Because $p.Name }
    }
}
