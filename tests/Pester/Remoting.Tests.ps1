# Issue 15, item 3: calibration shards and batch jobs fanned out over PowerShell remoting (SSH). Two sshd instances
# of Debian's openssh-server on 127.0.0.1, started here on their own ports and keys, stand in for two hosts; each
# runs pwsh with a HOME of its own, where the module is installed from the nupkg. The functions run are those the
# module ships in PtqTools.Remoting.ps1 (the recipe of about_PtqTools_Calibration).
BeforeDiscovery {
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:noSshd = Test-SkipForPackage openssh-server 'the remoting tests (Remoting.Tests.ps1; two local sshd hosts)'
}

BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    . (Join-Path $PSScriptRoot 'SshHosts.ps1')
    $moduleDir = Split-Path $env:PTQTOOLS_MODULE
    . (Join-Path $moduleDir 'PtqTools.Remoting.ps1')
    $script:packageDir = Join-Path $PSScriptRoot '../../out/package'

    . (Join-Path $PSScriptRoot 'TinyModels.ps1')
    $script:images = New-ImageFolder (Join-Path $TestDrive 'images') 8
    $script:model = New-TinyCnn (Join-Path $TestDrive 'tiny.onnx') 1

    # The two hosts. An sshd that is installed but does not start is a failure with the reason (not installed at
    # all: the blocks are skipped, above).
    Assert-SshServer
    $script:clientKey = New-SshClientKey $TestDrive
    $script:hostA = Start-SshHost 'hostA' $TestDrive $clientKey
    $script:hostB = Start-SshHost 'hostB' $TestDrive $clientKey
    $script:sessionA = New-SshHostSession $hostA $clientKey
    $script:sessionB = New-SshHostSession $hostB $clientKey
    $script:installed = Install-PtqRemoteModule -Session $sessionA, $sessionB -PackagePath $packageDir

    # On a host: the calibration images (the same path here, as on a share), one shard of them.
    $script:dataSet = [scriptblock]::Create("param(`$Skip, `$MaxSamples) New-PtqDataSet -Path '$images' -Resize 16 -Skip `$Skip -MaxSamples `$MaxSamples")
    # The reference: one local run over all eight images, and the model quantized from it.
    $script:single = Measure-ActivationRange -Path $model -DataSet (New-PtqDataSet -Path $images -Resize 16) -Method Entropy -ThreadCount 1
    $null = $single | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'single.int8.onnx')
    $script:singleHash = (Get-FileHash (Join-Path $TestDrive 'single.int8.onnx')).Hash

    # Kills the host (its sshd and every process under it) as soon as its HOME has a file 'dropping'.
    function Start-DropWatcher($SshHost) {
        Start-ThreadJob -ArgumentList $SshHost, ${function:Stop-SshHost}.ToString() -ScriptBlock {
            param($SshHost, $StopSshHost)
            ${function:Stop-SshHost} = [scriptblock]::Create($StopSshHost)
            $deadline = [DateTime]::UtcNow.AddSeconds(30)
            while (-not (Test-Path (Join-Path $SshHost.Home 'dropping')) -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 50 }
            if (Test-Path (Join-Path $SshHost.Home 'dropping')) { Stop-SshHost $SshHost; 'killed' }
        }
    }

    function Assert-SameAsSingleRun($Merged) {
        @($Merged).Count | Should -Be $single.Count
        foreach ($one in $single) {
            $m = $Merged | Where-Object Tensor -EQ $one.Tensor
            $m.SampleCount | Should -Be 8
            $m.ModelPath | Should -Be $model
            $m.Min | Should -Be $one.Min
            $m.Max | Should -Be $one.Max
            $m.HistogramExponent | Should -Be $one.HistogramExponent
            $m.HistogramStart | Should -Be $one.HistogramStart
            ($m.Histogram -join ',') | Should -Be ($one.Histogram -join ',')
            "$($m.Tensor) $($m.RangeMin) $($m.RangeMax)" | Should -Be "$($one.Tensor) $($one.RangeMin) $($one.RangeMax)"
        }
    }
}

AfterAll {
    Get-PSSession | Remove-PSSession -ErrorAction SilentlyContinue
    foreach ($h in $hostA, $hostB, $hostC) { if ($h) { Stop-SshHost $h } }
}

Describe 'PtqTools on two SSH hosts' -Skip:$noSshd {
    It 'installs the module on each host from the nupkg, in that host''s own user module path' {
        $installed.Count | Should -Be 2
        $version = (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).ModuleVersion
        foreach ($pair in @(@($installed[0], $hostA), @($installed[1], $hostB))) {
            $pair[0].Version | Should -Be $version
            $pair[0].ModuleBase | Should -BeLike "$($pair[1].Home)/.local/share/powershell/Modules/PtqTools/*"
        }
        # And it is that module the sessions run, not the build output.
        Invoke-Command $sessionA { (Get-Command Measure-ActivationRange).Module.ModuleBase } | Should -BeLike "$($hostA.Home)/*"
        Invoke-Command $sessionB { (Get-Command Measure-ActivationRange).Module.ModuleBase } | Should -BeLike "$($hostB.Home)/*"
    }

    It 'calibrates four shards on the two hosts and merges them into what one run gives, to the byte' {
        $shards = Measure-PtqRemoteActivationRange -Session $sessionA, $sessionB -ModelPath $model -DataSet $dataSet `
            -SampleCount 8 -ShardSize 2 -Parameter @{ Method = 'Entropy'; ThreadCount = 1 }
        $shards.Count | Should -Be (4 * $single.Count)
        # Deserialized statistics from both hosts.
        $shards[0].PSObject.TypeNames[0] | Should -BeLike 'Deserialized.*'
        @($shards.RunspaceId | Sort-Object -Unique).Count | Should -Be 2
        $merged = $shards | Merge-ActivationRange
        Assert-SameAsSingleRun $merged
        $out = Join-Path $TestDrive 'remote.int8.onnx'
        $null = $merged | Invoke-Quantization -OutputPath $out
        (Get-FileHash $out).Hash | Should -Be $singleHash
    }

    It 'quantizes a batch of models on the hosts, one model each, and copies back the same bytes as a local run' {
        $models = Join-Path $TestDrive 'batch'
        $null = New-Item -ItemType Directory $models
        $paths = (New-TinyCnn (Join-Path $models 'first.onnx') 11), (New-TinyCnn (Join-Path $models 'second.onnx') 12)
        $calibration = [scriptblock]::Create("New-PtqDataSet -Path '$images' -Resize 16")
        $results = Invoke-PtqRemoteQuantization -Session $sessionA, $sessionB -Path $paths -OutputFolder (Join-Path $TestDrive 'batch-out') `
            -DataSet $calibration -Parameter @{ ThreadCount = 1 }
        $results.Count | Should -Be 2
        @($results.RunspaceId | Sort-Object -Unique).Count | Should -Be 2
        foreach ($k in 0, 1) {
            $results[$k].OutputPath | Should -Be (Join-Path $TestDrive "batch-out/$(Split-Path -LeafBase $paths[$k]).int8.onnx")
            $local = Join-Path $TestDrive "local-$k.int8.onnx"
            $null = Invoke-Quantization -Path $paths[$k] -DataSet (New-PtqDataSet -Path $images -Resize 16) -ThreadCount 1 -OutputPath $local
            (Get-FileHash $results[$k].OutputPath).Hash | Should -Be (Get-FileHash $local).Hash
        }
    }

    It 'recomputes the shard of a host that drops mid-run on the other host: nothing is lost, the bytes are the same' {
        # Each host notes the shards it starts; host B stalls on the first one it takes until the watcher kills it
        # (its sshd and every process under it), as a machine that goes off the network mid-run.
        $trapped = [scriptblock]::Create(@"
param(`$Skip, `$MaxSamples)
Add-Content -Path (Join-Path `$HOME 'shards-started') -Value `$Skip
if (Test-Path (Join-Path `$HOME 'drop-on-first-shard')) {
    Set-Content -Path (Join-Path `$HOME 'dropping') -Value `$Skip
    Start-Sleep -Seconds 30
}
New-PtqDataSet -Path '$images' -Resize 16 -Skip `$Skip -MaxSamples `$MaxSamples
"@)
        foreach ($h in $hostA, $hostB) { Remove-Item (Join-Path $h.Home 'shards-started') -ErrorAction SilentlyContinue }
        Set-Content (Join-Path $hostB.Home 'drop-on-first-shard') ''
        $watcher = Start-DropWatcher $hostB
        $all = Measure-PtqRemoteActivationRange -Session $sessionA, $sessionB -ModelPath $model -DataSet $trapped `
            -SampleCount 8 -ShardSize 2 -Parameter @{ Method = 'Entropy'; ThreadCount = 1 } 3>&1
        $warnings = @($all | Where-Object { $_ -is [System.Management.Automation.WarningRecord] })
        $shards = @($all | Where-Object { $_ -isnot [System.Management.Automation.WarningRecord] })
        $watcher | Receive-Job -Wait -AutoRemoveJob | Should -Be 'killed'

        # B took a shard and dropped; A did the other three and B's again.
        $dropped = @(Get-Content (Join-Path $hostB.Home 'shards-started'))
        $dropped.Count | Should -Be 1
        $sessionB.State | Should -Not -Be 'Opened'
        @($warnings) | Should -HaveCount 1
        "$($warnings[0])" | Should -BeLike "*(session $($hostB.Name)) dropped*item $([int]$dropped[0] / 2) goes to another host*"
        $startedA = @(Get-Content (Join-Path $hostA.Home 'shards-started'))
        ($startedA | Sort-Object { [int]$_ }) -join ',' | Should -Be '0,2,4,6'
        $startedA[-1] | Should -Be $dropped[0]
        @($shards | Where-Object RunspaceId -EQ $sessionB.InstanceId) | Should -BeNullOrEmpty

        $shards.Count | Should -Be (4 * $single.Count)
        $merged = $shards | Merge-ActivationRange
        Assert-SameAsSingleRun $merged
        $out = Join-Path $TestDrive 'dropped.int8.onnx'
        $null = $merged | Invoke-Quantization -OutputPath $out
        (Get-FileHash $out).Hash | Should -Be $singleHash
    }

    It 'quantizes again on another host the model of a host that drops, with the same bytes' {
        # A third host, which drops as soon as it starts calibrating its first model.
        $script:hostC = Start-SshHost 'hostC' $TestDrive $clientKey
        $sessionC = New-SshHostSession $hostC $clientKey
        # Installed from a feed the host reads (here the package folder; a share elsewhere), not copied.
        $c = Install-PtqRemoteModule -Session $sessionC -HostFeed (Resolve-Path $packageDir).Path
        $c.ModuleBase | Should -BeLike "$($hostC.Home)/*"
        Set-Content (Join-Path $hostC.Home 'drop-on-first-model') ''
        $calibration = [scriptblock]::Create(@"
Add-Content -Path (Join-Path `$HOME 'models-started') -Value x
if (Test-Path (Join-Path `$HOME 'drop-on-first-model')) { Set-Content -Path (Join-Path `$HOME 'dropping') -Value x; Start-Sleep -Seconds 30 }
New-PtqDataSet -Path '$images' -Resize 16
"@)
        $models = Join-Path $TestDrive 'batch2'
        $null = New-Item -ItemType Directory $models
        $paths = (New-TinyCnn (Join-Path $models 'third.onnx') 13), (New-TinyCnn (Join-Path $models 'fourth.onnx') 14)
        $watcher = Start-DropWatcher $hostC
        $all = Invoke-PtqRemoteQuantization -Session $sessionC, $sessionA -Path $paths -OutputFolder (Join-Path $TestDrive 'batch2-out') `
            -DataSet $calibration -Parameter @{ ThreadCount = 1 } 3>&1
        $watcher | Receive-Job -Wait -AutoRemoveJob | Should -Be 'killed'
        $warnings = @($all | Where-Object { $_ -is [System.Management.Automation.WarningRecord] })
        $results = @($all | Where-Object { $_ -isnot [System.Management.Automation.WarningRecord] })
        @(Get-Content (Join-Path $hostC.Home 'models-started')).Count | Should -Be 1
        $warnings | Should -HaveCount 1
        "$($warnings[0])" | Should -BeLike '*(session hostC) dropped*item 0 goes to another host*'
        $results.Count | Should -Be 2
        $results.RunspaceId | Should -Be @($sessionA.InstanceId, $sessionA.InstanceId)
        foreach ($k in 0, 1) {
            $local = Join-Path $TestDrive "local2-$k.int8.onnx"
            $null = Invoke-Quantization -Path $paths[$k] -DataSet (New-PtqDataSet -Path $images -Resize 16) -ThreadCount 1 -OutputPath $local
            (Get-FileHash $results[$k].OutputPath).Hash | Should -Be (Get-FileHash $local).Hash
        }
    }

    It 'stops with the cause when the work itself fails, not by moving it from host to host' {
        $bad = [scriptblock]::Create("param(`$Skip, `$MaxSamples) New-PtqDataSet -Path '$(Join-Path $TestDrive 'no-such-folder')' -Resize 16")
        { Measure-PtqRemoteActivationRange -Session $sessionA -ModelPath $model -DataSet $bad -SampleCount 2 -ShardSize 1 -WarningAction Stop } |
            Should -Throw -ExpectedMessage '*no-such-folder*'
        $sessionA.State | Should -Be 'Opened'
    }
}

Describe 'The recipe of about_PtqTools_Calibration' -Skip:$noSshd {
    It 'shows the host queue the module ships, as it is (the code these tests run)' {
        $doc = Get-Content -Raw (Join-Path $PSScriptRoot '../../docs/en-US/about_PtqTools_Calibration.md')
        $shown = [regex]::Match($doc, '(?ms)^```powershell\r?\n(function Invoke-PtqHostQueue \{.*?)^```').Groups[1].Value
        $shown | Should -Not -BeNullOrEmpty
        $script = Join-Path (Split-Path $env:PTQTOOLS_MODULE) 'PtqTools.Remoting.ps1'
        $ast = [System.Management.Automation.Language.Parser]::ParseFile($script, [ref]$null, [ref]$null)
        $shipped = $ast.Find({ param($a) $a -is [System.Management.Automation.Language.FunctionDefinitionAst] -and $a.Name -eq 'Invoke-PtqHostQueue' }, $false).Extent.Text
        ($shown.TrimEnd() -replace '\r\n', "`n") | Should -Be ($shipped -replace '\r\n', "`n")
    }
}
