# Issue 15 against the built module: the output objects behave like PowerShell's own (files as Get-Item returns
# them, typed list properties that Export-Csv writes as values, $null labels), about_ topics with a real synopsis,
# HelpUri/HelpInfoURI, and the prepared-model cache (Get-PtqCache, Clear-PtqCache).
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    $moduleDir = Split-Path $env:PTQTOOLS_MODULE

    . (Join-Path $PSScriptRoot 'TinyModels.ps1')
    # Type names where values belong: what Export-Csv writes for a property whose value has no useful text.
    $script:TypeName = '(?<![\w/])(System|PtqTools\.Core|Deserialized)\.[A-Za-z0-9_.`]+(\[\])?'
    function Get-CsvTypeName([object[]] $Objects) {
        $path = Join-Path $TestDrive "objects-$([guid]::NewGuid().ToString('N')).csv"
        $Objects | Export-Csv -LiteralPath $path
        $text = Get-Content -Raw -LiteralPath $path
        @([regex]::Matches($text, $TypeName) | ForEach-Object Value | Sort-Object -Unique)
    }

    $script:Model = New-TinyCnn (Join-Path $TestDrive 'tiny.onnx') 1
    $script:Images = New-ImageFolder (Join-Path $TestDrive 'images') 4
    $script:Data = New-PtqDataSet $Images -Resize 16
    # Two classes, one sub-folder each: a labelled data set.
    $classFolder = Join-Path $TestDrive 'labelled'
    $null = New-ImageFolder (Join-Path $classFolder 'cat') 2
    $null = New-ImageFolder (Join-Path $classFolder 'dog') 2
    $script:Labelled = New-PtqDataSet $classFolder -Resize 16
    $script:Stats = @(Get-ModelLayer $Model | Measure-ActivationRange -DataSet $Data)
    $script:Result = $Stats | Invoke-Quantization -OutputPath (Join-Path $TestDrive 'tiny.int8.onnx') -Exclude fc
}

Describe 'Written files come back as Get-Item returns them' {
    It 'Export-QuantizationReport returns the file with its provider properties and the FileSystem view' {
        $path = Join-Path $TestDrive 'report.md'
        $file = $Result | Export-QuantizationReport -Path $path -Format Markdown
        $file.PSObject.Properties.Name | Should -Contain 'PSPath'
        foreach ($name in 'PSPath', 'PSParentPath', 'PSChildName', 'PSDrive', 'PSProvider') { $file.$name | Should -Not -BeNullOrEmpty }
        $file.PSPath | Should -Be (Get-Item -LiteralPath $path).PSPath
        $file.PSProvider.Name | Should -Be 'FileSystem'
        ($file | Format-Table | Out-String) | Should -Be (Get-Item -LiteralPath $path | Format-Table | Out-String)
        ($file | Get-Item).FullName | Should -Be $path    # binds by PSPath, as Get-Item's output does
    }

    It 'Export-ActivationRange -PassThru returns the file with its provider properties and the FileSystem view' {
        $path = Join-Path $TestDrive 'ranges.json'
        $file = $Stats | Export-ActivationRange -Path $path -PassThru
        foreach ($name in 'PSPath', 'PSParentPath', 'PSChildName', 'PSDrive', 'PSProvider') { $file.$name | Should -Not -BeNullOrEmpty }
        ($file | Format-Table | Out-String) | Should -Be (Get-Item -LiteralPath $path | Format-Table | Out-String)
        ($file | Import-ActivationRange).Count | Should -Be $Stats.Count
    }
}

Describe 'Properties are typed values, and Export-Csv writes values, not type names' {
    It 'Get-OnnxModel: Inputs, Outputs, OpTypes and OpsetImports are objects' {
        $m = Get-OnnxModel $Model
        $m.Inputs[0].Name | Should -Be 'x'
        $m.Inputs[0].ElementType | Should -Be 'float32'
        $m.Inputs[0].Shape | Should -Be @('1', '3', '16', '16')
        "$($m.Inputs[0])" | Should -Be 'x: float32[1,3,16,16]'
        $m.Outputs.Name | Should -Be 'y'
        ($m.OpTypes | Where-Object OpType -eq 'Conv').Count | Should -Be 2
        ($m.OpTypes | Measure-Object Count -Sum).Sum | Should -Be $m.NodeCount
        $m.OpsetImports[0].Domain | Should -Be 'ai.onnx'
        $m.OpsetImports[0].Version | Should -Be 13
        ($m | ConvertTo-Json -Depth 4 | ConvertFrom-Json).Inputs[0].Shape | Should -Be @('1', '3', '16', '16')
    }

    It 'Invoke-Quantization: Decisions are objects with the layer, its op type, the decision and the reason' {
        $Result.Decisions.Count | Should -Be 7
        $conv = $Result.Decisions | Where-Object Layer -eq 'conv1'
        $conv.OpType | Should -Be 'Conv'
        $conv.Quantized | Should -BeTrue
        $fc = $Result.Decisions | Where-Object Layer -eq 'fc'
        $fc.Quantized | Should -BeFalse
        $fc.Reason | Should -BeLike 'excluded*'
        "$fc" | Should -BeLike 'fc (Gemm): excluded*'
        @($Result.Decisions | Where-Object Quantized).Count | Should -Be $Result.QuantizedLayerCount
    }

    It 'Invoke-ModelInference: Label is $null without labels, the class index with them' {
        $unlabelled = @(Invoke-ModelInference -Path $Model -DataSet $Data)
        $unlabelled.Count | Should -Be 4
        foreach ($r in $unlabelled) { $r.Label | Should -BeNullOrEmpty; $null -eq $r.Label | Should -BeTrue }
        $labels = @(Invoke-ModelInference -Path $Model -DataSet $Labelled | ForEach-Object Label)
        $labels | Sort-Object | Should -Be @(0, 0, 1, 1)
    }

    It 'every output object exports to CSV without a type name: <Name>' -ForEach @(
        @{ Name = 'ModelSummary'; Make = { Get-OnnxModel $Model; Get-OnnxModel $Result.OutputPath } }
        @{ Name = 'ModelLayer'; Make = { Get-ModelLayer $Model } }
        @{ Name = 'PtqDataSet'; Make = { $Data; $Labelled; New-PtqDataSet -InputObject @(, [float[]](1, 2, 3, 4)) -Shape 4 -Label 1 } }
        @{ Name = 'TensorStatistics'; Make = { $Stats } }
        @{ Name = 'QuantizationResult'; Make = { $Result } }
        @{ Name = 'AccuracyReport'; Make = { Test-QuantizedModel -FloatModel $Model -QuantizedModel $Result.OutputPath -DataSet $Labelled -LatencyRuns 0 } }
        @{ Name = 'LayerError'; Make = { $Stats | Measure-LayerError -DataSet $Data } }
        @{ Name = 'ModelPerformance'; Make = { Measure-ModelPerformance -Path $Result.OutputPath -WarmupRuns 1 -Runs 2 } }
        @{ Name = 'InferenceResult'; Make = { Invoke-ModelInference -Path $Model -DataSet $Labelled } }
        @{ Name = 'PtqCacheEntry'; Make = { Get-PtqCache } }
        @{ Name = 'PtqCacheSummary'; Make = { Get-PtqCache -Summary } }
        @{ Name = 'QuantizationStatus'; Make = { Get-QuantizationStatus -Path $Model -OutputPath $Result.OutputPath -Exclude fc } }
        @{ Name = 'QuantizedModelUpdate'; Make = { Update-QuantizedModel -Path $Model -OutputFolder (Join-Path $TestDrive 'csv') -DataSet $Data -SkipHostCheck } }
    ) {
        $objects = @(& $Make)
        $objects.Count | Should -BeGreaterThan 0
        Get-CsvTypeName $objects | Should -BeNullOrEmpty
    }

    It 'the typed properties survive remoting (a job, the protocol Invoke-Command uses)' {
        $job = Start-Job -ArgumentList $env:PTQTOOLS_MODULE, $Model, $Stats[0].ModelPath -ScriptBlock {
            param($module, $model)
            Import-Module $module
            Get-OnnxModel $model
        }
        $m = $job | Wait-Job | Receive-Job
        $job | Remove-Job
        $m.Inputs[0].Name | Should -Be 'x'
        @($m.Inputs[0].Shape) | Should -Be @('1', '3', '16', '16')
        ($m.OpTypes | Where-Object OpType -eq 'Conv').Count | Should -Be 2
        $r = [System.Management.Automation.PSSerializer]::Deserialize([System.Management.Automation.PSSerializer]::Serialize($Result))
        ($r.Decisions | Where-Object Layer -eq 'fc').Reason | Should -BeLike 'excluded*'
        ($r | Export-QuantizationReport -Path (Join-Path $TestDrive 'deserialized.md') -Format Markdown) | Should -Not -BeNullOrEmpty
    }

    It 'list properties read back from CSV where they hold names or numbers' {
        $path = Join-Path $TestDrive 'layers.csv'
        Get-ModelLayer $Model | Export-Csv -LiteralPath $path
        $back = Import-Csv -LiteralPath $path | Select-Object -First 1
        $back.Inputs | Should -Be 'x; w1; b1'
        $back.WeightShape | Should -Be '32, 3, 5, 5'
        $rows = Import-Csv -LiteralPath (& { $p = Join-Path $TestDrive 'stats.csv'; $Stats | Export-Csv -LiteralPath $p; $p })
        $merged = @($rows | Merge-ActivationRange)
        $merged.Count | Should -Be $Stats.Count
        ($merged[0].Histogram -join ',') | Should -Be ($Stats[0].Histogram -join ',')
    }
}

Describe 'about_ topics' {
    It 'Get-Help lists every about_PtqTools topic with its short description as the synopsis (fresh pwsh)' {
        $docs = Join-Path $PSScriptRoot '../../docs/en-US'
        $expected = @{}
        foreach ($f in Get-ChildItem -LiteralPath $docs -Filter 'about_*.md') {
            $lines = Get-Content -LiteralPath $f.FullName
            $start = [array]::IndexOf($lines, '## SHORT DESCRIPTION') + 1
            $short = @($lines[$start..($lines.Count - 1)] | ForEach-Object { $_ } | Select-Object -First 10)
            $end = [array]::IndexOf($short, '')
            $expected[$f.BaseName] = (($short[0..($end - 1)] | ForEach-Object Trim) -join ' ') -replace '`', ''
        }
        $expected.Count | Should -BeGreaterOrEqual 3
        $pwsh = Join-Path $PSHOME 'pwsh.dll'
        $script = "Import-Module '$env:PTQTOOLS_MODULE'; Get-Help about_PtqTools* | ForEach-Object { `$_.Name + '|' + `$_.Synopsis }"
        $listed = & dotnet $pwsh -NoProfile -NonInteractive -Command $script
        $LASTEXITCODE | Should -Be 0
        $topics = @{}
        foreach ($line in $listed) { $name, $synopsis = $line -split '\|', 2; $topics[$name] = $synopsis }
        foreach ($name in $expected.Keys) {
            $topics.Keys | Should -Contain $name
            $topics[$name] | Should -Be $expected[$name] -Because "the synopsis of $name"
        }
    }

    It 'the about_ help files have the conventional head' {
        foreach ($f in Get-ChildItem -LiteralPath (Join-Path $moduleDir 'en-US') -Filter 'about_*.help.txt') {
            $lines = Get-Content -LiteralPath $f.FullName -TotalCount 7
            $lines[0] | Should -Be 'TOPIC'
            $lines[1].Trim() | Should -Be ($f.Name -replace '\.help\.txt$')
            $lines[3] | Should -Be 'SHORT DESCRIPTION'
            $lines[4].Trim() | Should -Not -BeNullOrEmpty
            $lines[6] | Should -Be 'LONG DESCRIPTION'
        }
    }
}

Describe 'Online help' {
    It 'every cmdlet has a HelpUri: its docs/en-US page at the ProjectUri of the manifest' {
        $manifest = Import-PowerShellDataFile $env:PTQTOOLS_MODULE
        $project = $manifest.PrivateData.PSData.ProjectUri
        $project | Should -Match '^https://'
        $commands = @(Get-Command -Module PtqTools -CommandType Cmdlet)
        $commands.Count | Should -Be $manifest.CmdletsToExport.Count
        foreach ($c in $commands) { $c.HelpUri | Should -Be "$project/blob/main/docs/en-US/$($c.Name).md" -Because $c.Name }
    }

    It 'the help''s Online Version link is the HelpUri' {
        foreach ($c in Get-Command -Module PtqTools -CommandType Cmdlet) {
            $uri = @((Get-Help $c.Name -Full).relatedLinks.navigationLink | Where-Object uri | ForEach-Object uri)[0]
            $uri | Should -Be $c.HelpUri -Because $c.Name
        }
    }

    It 'the manifest has a HelpInfoURI for Update-Help' {
        (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).HelpInfoURI | Should -Match '^https://'
        (Get-Module PtqTools).HelpInfoUri | Should -Match '^https://'
    }
}

Describe 'The prepared-model cache' {
    BeforeAll {
        $script:savedCache = $env:PTQTOOLS_CACHE
        $script:savedXdg = $env:XDG_CACHE_HOME
        $script:cache = Join-Path $TestDrive 'cache'
        $env:PTQTOOLS_CACHE = $cache
        $script:sha = (Get-OnnxModel $Model).Sha256
        # A live process id (this one) and one that is not running.
        $script:deadPid = (4194000..4194300 | Where-Object { -not (Get-Process -Id $_ -ErrorAction SilentlyContinue) } | Select-Object -First 1)
        function New-CacheFile([string] $Name, [int] $Bytes = 10) {
            $path = Join-Path $cache $Name
            [IO.File]::WriteAllBytes($path, [byte[]]::new($Bytes))
            $path
        }
    }
    AfterAll {
        $env:PTQTOOLS_CACHE = $savedCache
        $env:XDG_CACHE_HOME = $savedXdg
    }
    BeforeEach {
        Remove-Item -LiteralPath $cache -Recurse -Force -ErrorAction SilentlyContinue
    }

    It 'is empty when the folder does not exist' {
        Get-PtqCache | Should -BeNullOrEmpty
        $s = Get-PtqCache -Summary
        $s.EntryCount | Should -Be 0
        $s.Folder | Should -Be $cache
    }

    It 'lists one entry per prepared model, with its source hash, file, size and times' {
        $null = Get-ModelLayer $Model
        $entry = @(Get-PtqCache)
        $entry.Count | Should -Be 1
        $entry[0].Sha256 | Should -Be $sha
        $entry[0].Status | Should -Be 'Ready'
        $entry[0].Path | Should -BeLike (Join-Path $cache "$sha.*.onnx")
        $entry[0].SizeBytes | Should -Be (Get-Item -LiteralPath $entry[0].Path).Length
        $entry[0].LastUseTime | Should -BeGreaterThan (Get-Date).AddMinutes(-5)
        (Get-OnnxModel $Model | Get-PtqCache).Sha256 | Should -Be $sha
        $summary = Get-PtqCache -Summary
        $summary.EntryCount | Should -Be 1
        $summary.SizeBytes | Should -Be $entry[0].SizeBytes
        ($entry | Format-Table | Out-String -Width 120) | Should -Match 'Ready'
    }

    It 'counts side data files with their entry and tells stale, partial and in-use files apart' {
        $null = Get-ModelLayer $Model
        $ready = (Get-PtqCache)[0]
        $side = New-CacheFile "$(Split-Path -Leaf $ready.Path).0123456789abcdef0123456789abcdef.data" 1000
        $other = 'AB' * 32; $partial = 'CD' * 32; $busy = 'EF' * 32
        $null = New-CacheFile "$other.p1.onnx" 100
        $null = New-CacheFile ".$partial.$deadPid.0123456789abcdef0123456789abcdef.onnx" 50
        $live = New-CacheFile ".$busy.$PID.0123456789abcdef0123456789abcdef.onnx" 70
        $entries = @(Get-PtqCache)
        $entries.Count | Should -Be 4
        $r = $entries | Where-Object Sha256 -eq $sha
        $r.Files | Should -Contain $side
        $r.SizeBytes | Should -Be ($ready.SizeBytes + 1000)
        ($entries | Where-Object Sha256 -eq $other).Status | Should -Be 'Stale'
        ($entries | Where-Object Sha256 -eq $partial).Status | Should -Be 'Partial'
        $inUse = $entries | Where-Object Sha256 -eq $busy
        $inUse.Status | Should -Be 'InUse'
        $inUse.WriterProcessIds | Should -Be @($PID)
        (Get-PtqCache -Summary).UnusableCount | Should -Be 2

        # Everything goes but what a live process is writing.
        Get-PtqCache | Clear-PtqCache -WhatIf
        @(Get-PtqCache).Count | Should -Be 4
        Clear-PtqCache -Confirm:$false
        @(Get-ChildItem -LiteralPath $cache -Force).FullName | Should -Be @($live)
        (Get-PtqCache).Status | Should -Be 'InUse'
    }

    It 'removes only what is piped from Get-PtqCache' {
        $null = Get-ModelLayer $Model
        $null = New-CacheFile "$('AB' * 32).p1.onnx" 100
        $removed = Get-PtqCache | Where-Object Status -eq 'Stale' | Clear-PtqCache -Confirm:$false -PassThru
        $removed.Sha256 | Should -Be ('AB' * 32)
        (Get-PtqCache).Sha256 | Should -Be $sha
    }

    It 'removes with -OlderThan only entries not used since then (TimeSpan or DateTime)' {
        $null = Get-ModelLayer $Model
        $old = New-CacheFile "$('AB' * 32).p6.onnx" 100
        (Get-Item -LiteralPath $old).LastWriteTime = (Get-Date).AddDays(-40)
        (Get-Item -LiteralPath $old).LastAccessTime = (Get-Date).AddDays(-40)
        Clear-PtqCache -OlderThan (New-TimeSpan -Days 30) -Confirm:$false
        Test-Path -LiteralPath $old | Should -BeFalse
        (Get-PtqCache).Sha256 | Should -Be $sha
        Clear-PtqCache -OlderThan (Get-Date).AddDays(-1) -Confirm:$false
        (Get-PtqCache).Sha256 | Should -Be $sha
        Clear-PtqCache -OlderThan (Get-Date).AddMinutes(1) -Confirm:$false
        Get-PtqCache | Should -BeNullOrEmpty
        # The next preparation writes the entry again.
        $null = Get-ModelLayer $Model
        (Get-PtqCache).Sha256 | Should -Be $sha
    }

    It 'Clear-PtqCache asks before removing (ConfirmImpact Medium, SupportsShouldProcess)' {
        $c = Get-Command Clear-PtqCache
        $c.Parameters.Keys | Should -Contain 'WhatIf'
        $c.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0].ConfirmImpact | Should -Be 'Medium'
    }

    It 'lives under XDG_CACHE_HOME, else ~/.cache on Linux, when PTQTOOLS_CACHE is not set' {
        try {
            $env:PTQTOOLS_CACHE = $null
            $env:XDG_CACHE_HOME = Join-Path $TestDrive 'xdg'
            (Get-PtqCache -Summary).Folder | Should -Be (Join-Path $TestDrive 'xdg/PtqTools/prepared')
            $env:XDG_CACHE_HOME = $null
            $expected = if ($IsLinux) { Join-Path $HOME '.cache/PtqTools/prepared' } else { Join-Path ([Environment]::GetFolderPath('LocalApplicationData')) 'PtqTools/prepared' }
            (Get-PtqCache -Summary).Folder | Should -Be $expected
        }
        finally { $env:PTQTOOLS_CACHE = $cache; $env:XDG_CACHE_HOME = $savedXdg }
    }
}
