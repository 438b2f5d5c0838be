# The batch run as a cmdlet (Update-QuantizedModel), the public up-to-date decision (Get-QuantizationStatus) and the
# scheduler wrapper shipped in the module folder (Invoke-PtqBatch.ps1), on three small conformance models.
BeforeDiscovery {
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:noCorpus = Test-SkipForPackage libonnx-testdata 'the batch tests (Batch.Tests.ps1; three conformance models)'
}

BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:wrapper = Join-Path (Split-Path $env:PTQTOOLS_MODULE) 'Invoke-PtqBatch.ps1'
    $script:models = Join-Path $TestDrive 'models'
    $script:out = Join-Path $TestDrive 'int8'
    $null = New-Item -ItemType Directory $models
    $script:corpus = Join-Path $OnnxTestData 'pytorch-converted'
    $script:names = 'test_Conv2d', 'test_Conv2d_depthwise', 'test_Conv2d_strided'
    foreach ($name in $names) {
        Copy-Item "$corpus/$name/model.onnx" (Join-Path $models "$name.onnx")
        New-PtqDataSet -LiteralPath "$corpus/$name" | Export-Clixml (Join-Path $models "$name.dataset.xml")
    }
    # A new version of a model: the same graph with a doc_string appended (protobuf field 6), so its SHA-256 changes.
    function Set-NewVersion([string] $Path, [string] $Text) {
        $bytes = [Text.Encoding]::UTF8.GetBytes($Text)
        [IO.File]::WriteAllBytes($Path, [byte[]]([IO.File]::ReadAllBytes($Path) + [byte[]](0x32, $bytes.Length) + $bytes))
    }
    function Get-Outputs {
        Get-ChildItem $out -Filter *.onnx | Sort-Object Name |
            Select-Object Name, LastWriteTimeUtc, @{ n = 'Hash'; e = { (Get-FileHash -LiteralPath $_.FullName).Hash } }
    }
    # The wrapper as a scheduler runs it: a new pwsh process, -File, arguments as text.
    function Invoke-Wrapper([string[]] $Arguments, [string] $Path = $models) {
        $log = Join-Path $TestDrive "log-$([guid]::NewGuid()).json"
        $text = & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -File $wrapper -Path $Path -OutputFolder $out `
            -LogPath $log @Arguments 2>&1
        [pscustomobject]@{
            ExitCode = $LASTEXITCODE
            Text = $text -join "`n"
            Log = if (Test-Path $log) { Get-Content -Raw $log | ConvertFrom-Json }
        }
    }
    $script:log1 = Join-Path $TestDrive 'first.json'
    $script:first = @(Update-QuantizedModel -Path $models -OutputFolder $out -LogPath $log1)
    $script:afterFirst = Get-Outputs
}

Describe 'Update-QuantizedModel' -Skip:$noCorpus {
    It 'quantizes every model of the folder on the first run, with a JSON log' {
        $first | Should -HaveCount 3
        $first.Status | Sort-Object -Unique | Should -Be 'Quantized'
        $first.Reason | Sort-Object -Unique | Should -Be 'Missing'
        $first | ForEach-Object { $_.PSObject.TypeNames[0] | Should -Be 'PtqTools.Core.Quantization.QuantizedModelUpdate' }
        foreach ($r in $first) {
            $r.OutputPath | Should -Be (Join-Path $out ([IO.Path]::GetFileNameWithoutExtension($r.SourcePath) + '.int8.onnx'))
            (Get-OnnxModel -LiteralPath $r.OutputPath).QuantizedFrom | Should -Be (Get-OnnxModel -LiteralPath $r.SourcePath).Sha256
            $r.SizeRatio | Should -BeGreaterThan 0
            $r.OutputSha256 | Should -Be (Get-OnnxModel -LiteralPath $r.OutputPath).Sha256
        }
        $log = Get-Content -Raw $log1 | ConvertFrom-Json
        $log.Summary.Models | Should -Be 3
        $log.Summary.Quantized | Should -Be 3
        $log.Summary.Options | Should -Match ';target=portable'
        $log.Models.Status | Should -Be @('Quantized', 'Quantized', 'Quantized')
        $log.Models.SourcePath | Should -Be @($names | ForEach-Object { Join-Path $models "$_.onnx" })
    }

    It 'skips everything on the second run (models from the pipeline) and rewrites no file' {
        Start-Sleep -Milliseconds 50   # a rewrite would show in LastWriteTimeUtc
        $second = @(Get-ChildItem $models -Filter *.onnx | Update-QuantizedModel -OutputFolder $out)
        $second | Should -HaveCount 3
        $second.Status | Sort-Object -Unique | Should -Be 'UpToDate'
        $second.Reason | Sort-Object -Unique | Should -Be 'Current'
        Get-Outputs | ConvertTo-Json | Should -Be ($afterFirst | ConvertTo-Json)
    }

    It 'quantizes a changed source again and skips the others' {
        $changed = Join-Path $models 'test_Conv2d_strided.onnx'
        Set-NewVersion $changed 'version 2'
        $third = @(Update-QuantizedModel -LiteralPath $models -OutputFolder $out)
        ($third | Where-Object SourcePath -EQ $changed).Status | Should -Be 'Quantized'
        ($third | Where-Object SourcePath -EQ $changed).Reason | Should -Be 'SourceChanged'
        ($third | Where-Object SourcePath -NE $changed).Status | Should -Be @('UpToDate', 'UpToDate')
        (Get-OnnxModel -LiteralPath (Join-Path $out 'test_Conv2d_strided.int8.onnx')).QuantizedFrom | Should -Be (Get-OnnxModel -LiteralPath $changed).Sha256
        $now = Get-Outputs
        ($now | Where-Object Name -NE 'test_Conv2d_strided.int8.onnx' | ConvertTo-Json) |
            Should -Be ($afterFirst | Where-Object Name -NE 'test_Conv2d_strided.int8.onnx' | ConvertTo-Json)
        ($now | Where-Object Name -EQ 'test_Conv2d_strided.int8.onnx').Hash | Should -Not -Be ($afterFirst | Where-Object Name -EQ 'test_Conv2d_strided.int8.onnx').Hash
    }

    It '-Force quantizes current outputs again, and one at a time gives the bytes two at a time gave' {
        $before = Get-Outputs
        $forced = @(Update-QuantizedModel -Path $models -OutputFolder $out -Force -ThrottleLimit 1)
        $forced.Status | Sort-Object -Unique | Should -Be 'Quantized'
        $forced.Reason | Sort-Object -Unique | Should -Be 'Forced'
        (Get-Outputs).Hash | Should -Be $before.Hash
    }

    It '-WhatIf writes nothing: no output, no folder, no log' {
        $fresh = Join-Path $TestDrive 'whatif'
        $log = Join-Path $TestDrive 'whatif.json'
        $r = Update-QuantizedModel -Path $models -OutputFolder $fresh -LogPath $log -WhatIf
        $r | Should -BeNullOrEmpty
        Test-Path $fresh | Should -BeFalse
        Test-Path $log | Should -BeFalse
        # Other options would re-quantize all three; -WhatIf leaves them as they are.
        $before = Get-Outputs | ConvertTo-Json
        Update-QuantizedModel -Path $models -OutputFolder $out -PerTensor -WhatIf | Should -BeNullOrEmpty
        Get-Outputs | ConvertTo-Json | Should -Be $before
    }

    It 'reports a failing model as a non-terminating error and in its result; the others go on' {
        $broken = Join-Path $models 'broken.onnx'
        Set-Content $broken 'not a model'
        Copy-Item (Join-Path $models 'test_Conv2d.dataset.xml') (Join-Path $models 'broken.dataset.xml')
        try {
            $log = Join-Path $TestDrive 'broken.json'
            $r = @(Update-QuantizedModel -Path $models -OutputFolder $out -LogPath $log -ErrorVariable failures -ErrorAction SilentlyContinue)
            $r | Should -HaveCount 4
            $failed = $r | Where-Object Status -EQ 'Failed'
            $failed.SourcePath | Should -Be $broken
            $failed.ErrorId | Should -Be 'ModelNotOnnx'
            $failed.Message | Should -Match 'not a readable ONNX model'
            ($r | Where-Object Status -EQ 'UpToDate') | Should -HaveCount 3
            $failures | Should -HaveCount 1
            $failures[0].FullyQualifiedErrorId | Should -Be 'ModelNotOnnx,PtqTools.Commands.UpdateQuantizedModelCommand'
            $failures[0].CategoryInfo.Category | Should -Be 'InvalidData'
            $failures[0].TargetObject | Should -Be $broken
            Test-Path (Join-Path $out 'broken.int8.onnx') | Should -BeFalse
            (Get-Content -Raw $log | ConvertFrom-Json).Summary.Failed | Should -Be 1
        } finally { Remove-Item $broken, (Join-Path $models 'broken.dataset.xml') }
    }

    It 'fails a model without calibration data with DataSetRequired, and -DataSet supplies it' {
        $alone = Join-Path $TestDrive 'alone'
        $null = New-Item -ItemType Directory $alone
        Copy-Item "$corpus/test_Conv2d/model.onnx" (Join-Path $alone 'conv.onnx')
        $r = Update-QuantizedModel -Path $alone -OutputFolder $alone -ErrorVariable e -ErrorAction SilentlyContinue
        $r.Status | Should -Be 'Failed'
        $r.ErrorId | Should -Be 'DataSetRequired'
        $r.Message | Should -Match 'conv\.dataset\.xml'
        $e[0].FullyQualifiedErrorId | Should -BeLike 'DataSetRequired,*'
        $r = Update-QuantizedModel -Path $alone -OutputFolder $alone -DataSet (New-PtqDataSet -LiteralPath "$corpus/test_Conv2d")
        $r.Status | Should -Be 'Quantized'
        # The output folder is the source folder: its outputs are not taken as sources.
        $again = @(Update-QuantizedModel -Path $alone -OutputFolder $alone -DataSet (New-PtqDataSet -LiteralPath "$corpus/test_Conv2d"))
        $again | Should -HaveCount 1
        $again.Status | Should -Be 'UpToDate'
    }

    It 'stops promptly on Ctrl+C, leaving no partial output and a log that says so' {
        $random = [Random]::new(4)
        $long = New-PtqDataSet -InputObject (1..6000 | ForEach-Object { $a = [float[]]::new(3 * 7 * 5); for ($i = 0; $i -lt $a.Length; $i += 3) { $a[$i] = $random.NextDouble() }; , $a }) -Shape 3, 7, 5 -BatchSize 2
        $stopFolder = Join-Path $TestDrive 'stop'
        $stopModels = Join-Path $TestDrive 'stop-models'
        $null = New-Item -ItemType Directory $stopModels
        foreach ($i in 1..4) { Copy-Item "$corpus/test_Conv2d/model.onnx" (Join-Path $stopModels "conv$i.onnx") }
        $log = Join-Path $TestDrive 'stop.json'
        $rs = [runspacefactory]::CreateRunspace()
        $rs.Open()
        try {
            $ps = [powershell]::Create(); $ps.Runspace = $rs
            $null = $ps.AddScript({ param($m, $d, $in, $o, $l) Import-Module $m; Update-QuantizedModel -Path $in -OutputFolder $o -DataSet $d -LogPath $l -ThreadCount 1 }).
                AddArgument($env:PTQTOOLS_MODULE).AddArgument($long).AddArgument($stopModels).AddArgument($stopFolder).AddArgument($log)
            $handle = $ps.BeginInvoke()
            $deadline = [DateTime]::UtcNow.AddSeconds(30)
            while (-not ($ps.Streams.Progress | Where-Object Activity -Like '*Calibrating*') -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 20 }
            $ps.Streams.Progress | Where-Object Activity -Like '*Calibrating*' | Should -Not -BeNullOrEmpty -Because 'the run reached the calibration'
            $clock = [Diagnostics.Stopwatch]::StartNew()
            $ps.Stop()
            $clock.Elapsed.TotalSeconds | Should -BeLessThan 5
            $ps.InvocationStateInfo.State | Should -Be 'Stopped'
            $ps.Dispose()
        } finally { $rs.Dispose() }
        # Nothing half-written: no temporary files, and every output present is a complete model of its source.
        Get-ChildItem $stopFolder -Force | Where-Object Name -NotLike '*.int8.onnx' | Should -BeNullOrEmpty
        foreach ($f in Get-ChildItem $stopFolder -Filter *.int8.onnx) { (Get-OnnxModel -LiteralPath $f.FullName).QuantizedFrom | Should -Not -BeNullOrEmpty }
        @(Get-ChildItem $stopFolder -Filter *.int8.onnx).Count | Should -BeLessThan 4
        $summary = (Get-Content -Raw $log | ConvertFrom-Json).Summary
        $summary.Stopped | Should -BeTrue
        $summary.Quantized | Should -Be @(Get-ChildItem $stopFolder -Filter *.int8.onnx).Count
    }
}

Describe 'Get-QuantizationStatus' -Skip:$noCorpus {
    BeforeAll {
        $script:source = Join-Path $TestDrive 'status.onnx'
        Copy-Item "$corpus/test_Conv2d/model.onnx" $source
        $script:quantized = Join-Path $TestDrive 'status.int8.onnx'
        $null = Invoke-Quantization -Path $source -DataSet (New-PtqDataSet -LiteralPath "$corpus/test_Conv2d") -OutputPath $quantized -SkipHostCheck
    }

    It 'says Current for the output Invoke-Quantization wrote with the same options' {
        $s = Get-QuantizationStatus -Path $source -OutputPath $quantized
        $s.PSObject.TypeNames[0] | Should -Be 'PtqTools.Core.Quantization.QuantizationStatus'
        $s.State | Should -Be 'Current'
        $s.IsCurrent | Should -BeTrue
        $s.Options | Should -Be $s.RecordedOptions
        $s.SourceSha256 | Should -Be (Get-OnnxModel $source).Sha256
    }

    It 'says <State> when <Case>' -ForEach @(
        @{ State = 'OptionsChanged'; Case = 'the options differ'; Options = @{ PerTensor = $true }; Pattern = "records 'weights=int8,symmetric,per-channel' where this run has 'weights=int8,symmetric,per-tensor'" }
        @{ State = 'TargetChanged'; Case = 'the CPU class differs'; Options = @{ Target = 'Amx' }; Pattern = 'written for Portable, this run writes for Amx' }
        @{ State = 'Missing'; Case = 'there is no output'; Output = 'none'; Pattern = 'does not exist' }
        @{ State = 'NotQuantized'; Case = 'the output is a float model'; Output = 'float'; Pattern = 'not written by PtqTools' }
        @{ State = 'Unreadable'; Case = 'the output is not a model'; Output = 'text'; Pattern = 'not a readable ONNX model' }
    ) {
        $call = @{ Path = $source; OutputPath = $quantized }
        if ($Options) { $call += $Options }
        switch ($Output) {
            'none' { $call.OutputPath = Join-Path $TestDrive 'none.int8.onnx' }
            'float' { $call.OutputPath = Join-Path $TestDrive 'float.onnx'; Copy-Item $source $call.OutputPath -Force }
            'text' { $call.OutputPath = Join-Path $TestDrive 'text.onnx'; Set-Content $call.OutputPath 'not a model' }
        }
        $s = Get-QuantizationStatus @call
        $s.State | Should -Be $State
        $s.IsCurrent | Should -BeFalse
        $s.Reason | Should -BeLike "*$Pattern*"
    }

    It 'says SourceChanged when the source changed since, and Update-QuantizedModel decides the same way' {
        $copy = Join-Path $TestDrive 'changed'
        $null = New-Item -ItemType Directory $copy
        Copy-Item $source (Join-Path $copy 'status.onnx')
        Copy-Item $quantized (Join-Path $copy 'status.int8.onnx')
        (Get-QuantizationStatus -Path (Join-Path $copy 'status.onnx') -OutputPath $copy).State | Should -Be 'Current'
        Set-NewVersion (Join-Path $copy 'status.onnx') 'changed'
        $s = Get-QuantizationStatus -Path (Join-Path $copy 'status.onnx') -OutputPath $copy
        $s.State | Should -Be 'SourceChanged'
        $s.RecordedSourceSha256 | Should -Not -Be $s.SourceSha256
        $u = Update-QuantizedModel -Path (Join-Path $copy 'status.onnx') -OutputFolder $copy -WhatIf:$false -DataSet (New-PtqDataSet -LiteralPath "$corpus/test_Conv2d") -SkipHostCheck
        $u.Reason | Should -Be 'SourceChanged'
        (Get-QuantizationStatus -Path (Join-Path $copy 'status.onnx') -OutputPath $copy).State | Should -Be 'Current'
    }

    It 'needs a folder for several sources' {
        $e = Get-ErrorRecord { Get-QuantizationStatus -Path $models -OutputPath $quantized -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -Be 'OutputPathNotFolder,PtqTools.Commands.GetQuantizationStatusCommand'
    }
}

Describe 'The scheduler wrapper Invoke-PtqBatch.ps1' -Skip:$noCorpus {
    It 'is in the module folder, exits 0 when all is up to date, and writes the log' {
        Test-Path $wrapper | Should -BeTrue
        $run = Invoke-Wrapper
        $run.ExitCode | Should -Be 0 -Because $run.Text
        $run.Log.Summary.UpToDate | Should -Be 3
        $run.Text | Should -Match '3 models: 0 quantized, 3 up to date, 0 failed'
    }

    It 'exits 1 when a model fails, and the log has its error id' {
        $broken = Join-Path $models 'broken.onnx'
        Set-Content $broken 'not a model'
        Copy-Item (Join-Path $models 'test_Conv2d.dataset.xml') (Join-Path $models 'broken.dataset.xml')
        try {
            $run = Invoke-Wrapper
            $run.ExitCode | Should -Be 1 -Because $run.Text
            $record = $run.Log.Models | Where-Object SourcePath -EQ $broken
            $record.Status | Should -Be 'Failed'
            $record.ErrorId | Should -Be 'ModelNotOnnx'
            $run.Log.Summary.Failed | Should -Be 1
            $run.Log.Summary.UpToDate | Should -Be 3
        } finally { Remove-Item $broken, (Join-Path $models 'broken.dataset.xml') }
    }

    It 'exits 1 when a path does not exist' {
        $run = Invoke-Wrapper -Path (Join-Path $TestDrive 'no-such-folder')
        $run.ExitCode | Should -Be 1 -Because $run.Text
        $run.Text | Should -Match 'no-such-folder'
        $run.Log.Summary.Models | Should -Be 0
    }

    It 'exits 2 when the run cannot start' {
        $run = Invoke-Wrapper @('-SymmetricActivation')   # uint8 activations cannot be symmetric
        $run.ExitCode | Should -Be 2 -Because $run.Text
        $run.Text | Should -Match 'InvalidOptionCombination|Symmetric activations need a signed type'
    }

    It 'quantizes for another CPU class, and Host is resolved before the comparison' {
        $amx = Invoke-Wrapper @('-Target', 'Amx', '-SkipHostCheck')
        $amx.ExitCode | Should -Be 0 -Because $amx.Text
        $amx.Log.Summary.Quantized | Should -Be 3
        ($amx.Log.Models.Reason | Sort-Object -Unique) | Should -Be 'TargetChanged'
        $amx.Log.Summary.Options | Should -Match ';target=amx'
        $env:PTQTOOLS_CPU_CLASS = 'Amx'
        try { $hostRun = Invoke-Wrapper @('-Target', 'Host') } finally { Remove-Item Env:PTQTOOLS_CPU_CLASS }
        $hostRun.Log.Summary.UpToDate | Should -Be 3 -Because $hostRun.Text
    }

    It 'on SIGTERM (systemd stopping the unit) stops the run, writes the log and leaves no partial output' -Skip:(-not $IsLinux) {
        $slow = Join-Path $TestDrive 'slow'
        $slowOut = Join-Path $TestDrive 'slow-out'
        $null = New-Item -ItemType Directory $slow
        # ResNet18 on 5,000 images: the calibration is still running when the signal comes.
        Copy-Item $ResNet18 (Join-Path $slow 'resnet18.onnx')
        New-ResNetDataSet -Split train -Count 5000 | Export-Clixml (Join-Path $slow 'resnet18.dataset.xml')
        $log = Join-Path $TestDrive 'slow.json'
        $psi = [Diagnostics.ProcessStartInfo]::new('dotnet')
        foreach ($a in (Join-Path $PSHOME 'pwsh.dll'), '-NoProfile', '-NonInteractive', '-File', $wrapper, '-Path', $slow, '-OutputFolder', $slowOut, '-LogPath', $log) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
        $p = [Diagnostics.Process]::Start($psi)
        $null = $p.StandardOutput.ReadToEndAsync(); $null = $p.StandardError.ReadToEndAsync()
        try {
            $deadline = [DateTime]::UtcNow.AddSeconds(60)
            while (-not (Test-Path $slowOut) -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 100 }
            Start-Sleep -Seconds 2   # into the calibration
            $p.HasExited | Should -BeFalse
            & kill -TERM $p.Id
            $p.WaitForExit(30000) | Should -BeTrue
            $p.ExitCode | Should -Be 143   # 128 + SIGTERM: the process ends as the signal asks
        } finally { if (-not $p.HasExited) { $p.Kill($true) } }
        $summary = (Get-Content -Raw $log | ConvertFrom-Json).Summary
        $summary.Stopped | Should -BeTrue
        $summary.Quantized | Should -Be 0
        Get-ChildItem $slowOut -Force | Should -BeNullOrEmpty
    }
}
