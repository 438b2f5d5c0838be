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

    It 'every output type has a view that fits in 120 columns' {
        $objects = @((Get-OnnxModel $ResNet18), (Get-ModelLayer $ResNet18 | Select-Object -First 3), $calib, ($stats | Select-Object -First 3), $result)
        foreach ($o in $objects) {
            $text = $o | Out-String -Width 120
            ($text -split "`n" | Measure-Object -Maximum Length).Maximum | Should -BeLessOrEqual 120
            $text.Trim() | Should -Not -BeNullOrEmpty
        }
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
}
