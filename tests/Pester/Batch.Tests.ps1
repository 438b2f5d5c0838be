# The scheduled batch script (docs/examples/Invoke-BatchQuantization.ps1) over four real models.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:batch = Join-Path $PSScriptRoot '../../docs/examples/Invoke-BatchQuantization.ps1'
    $script:models = Join-Path $TestDrive 'models'
    $script:out = Join-Path $TestDrive 'int8'
    $null = New-Item -ItemType Directory $models
    # ResNet18 with Fashion-MNIST prepared as it expects, and three conformance models with their own test data.
    Copy-Item $ResNet18 (Join-Path $models 'resnet18.onnx')
    New-ResNetDataSet -Split train -Count 64 | Export-Clixml (Join-Path $models 'resnet18.dataset.xml')
    $corpus = '/usr/share/libonnx-testdata/data/pytorch-converted'
    foreach ($name in 'test_Conv2d', 'test_Conv2d_strided', 'test_Conv2d_depthwise') {
        Copy-Item "$corpus/$name/model.onnx" (Join-Path $models "$name.onnx")
        New-PtqDataSet -LiteralPath "$corpus/$name" | Export-Clixml (Join-Path $models "$name.dataset.xml")
    }
    function Invoke-Batch([string[]] $Arguments) {
        $log = Join-Path $TestDrive "log-$([guid]::NewGuid()).json"
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $null = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File $batch -ModelFolder $models -OutputFolder $out `
            -ModulePath $env:PTQTOOLS_MODULE -LogPath $log @Arguments
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Seconds = $clock.Elapsed.TotalSeconds; Log = Get-Content -Raw $log | ConvertFrom-Json }
    }
    $script:first = Invoke-Batch
    $script:second = Invoke-Batch
}

Describe 'The batch script' {
    It 'quantizes every model on the first run and exits 0' {
        $first.ExitCode | Should -Be 0
        $first.Log.Summary.Models | Should -Be 4
        $first.Log.Summary.Quantized | Should -Be 4 -Because ($first.Log.Models | ConvertTo-Json)
        foreach ($m in $first.Log.Models) {
            (Get-OnnxModel -LiteralPath $m.Output).QuantizedFrom | Should -Be (Get-FileHash -LiteralPath $m.Model).Hash
        }
    }

    It 'skips all four on the second run, in under a tenth of the time' {
        $second.ExitCode | Should -Be 0
        $second.Log.Summary.UpToDate | Should -Be 4
        $second.Log.Summary.Quantized | Should -Be 0
        $second.Log.Summary.Seconds | Should -BeLessThan ($first.Log.Summary.Seconds / 10)
    }

    It 'quantizes again when the options change' {
        $third = Invoke-Batch @('-PerTensor')
        $third.Log.Summary.Quantized | Should -Be 4
        $third.Log.Summary.Options | Should -Match 'per-tensor'
    }

    It 'quantizes again for another CPU class, and records the resolved class' {
        $amx = Invoke-Batch @('-Target', 'Amx')
        $amx.Log.Summary.Quantized | Should -Be 4
        $amx.Log.Summary.Options | Should -Match ';target=amx'
        foreach ($m in $amx.Log.Models) { (Get-OnnxModel -LiteralPath $m.Output).QuantizationTarget | Should -Be 'Amx' }
        # Host is resolved before the comparison: a second run for the same class is up to date.
        $env:PTQTOOLS_CPU_CLASS = 'Amx'
        try { $hostRun = Invoke-Batch @('-Target', 'Host') } finally { Remove-Item Env:PTQTOOLS_CPU_CLASS }
        $hostRun.Log.Summary.UpToDate | Should -Be 4
    }

    It 'exits 1 and logs the error when a model fails' {
        Set-Content (Join-Path $models 'broken.onnx') 'not a model'
        try {
            $run = Invoke-Batch
            $run.ExitCode | Should -Be 1
            $broken = $run.Log.Models | Where-Object { $_.Model -like '*broken.onnx' }
            $broken.Status | Should -Be 'Failed'
            $run.Log.Summary.Failed | Should -Be 1
        } finally { Remove-Item (Join-Path $models 'broken.onnx') }
    }
}
