BeforeAll {
    $script:moduleDir = Split-Path $env:PTQTOOLS_MODULE
    $script:packageDir = Join-Path $PSScriptRoot '../../out/package'
    # A pwsh of the same version as this one, in a new process (the local tool runs as 'dotnet pwsh.dll').
    function Invoke-FreshPwsh([string] $Command, [hashtable] $Environment = @{}) {
        $saved = @{}
        foreach ($k in $Environment.Keys) { $saved[$k] = [Environment]::GetEnvironmentVariable($k); [Environment]::SetEnvironmentVariable($k, $Environment[$k]) }
        try { & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -Command $Command 2>&1 }
        finally { foreach ($k in $saved.Keys) { [Environment]::SetEnvironmentVariable($k, $saved[$k]) } }
    }
}

Describe 'Import' {
    It 'loads neither ONNX Runtime nor a model until a cmdlet needs them' {
        $loaded = Invoke-FreshPwsh "Import-Module '$env:PTQTOOLS_MODULE'; [AppDomain]::CurrentDomain.GetAssemblies().GetName().Name"
        $loaded | Should -Contain 'PtqTools'
        $loaded | Should -Not -Contain 'Microsoft.ML.OnnxRuntime'
        $loaded | Should -Not -Contain 'OnnxSharp'
        $loaded | Should -Not -Contain 'SkiaSharp'
    }
}

Describe 'Packaging' {
    It 'builds a nupkg that Install-PSResource installs from a local repository, with the manifest''s release notes' {
        $nupkg = Get-ChildItem $packageDir -Filter 'PtqTools.*.nupkg'
        $nupkg | Should -HaveCount 1
        $fakeHome = Join-Path $TestDrive 'home'
        $null = New-Item -ItemType Directory $fakeHome
        $script = @"
`$ErrorActionPreference = 'Stop'
Register-PSResourceRepository -Name PtqLocal -Uri '$packageDir' -Trusted
Install-PSResource -Name PtqTools -Repository PtqLocal -Scope CurrentUser -TrustRepository
Import-Module PtqTools
`$m = Get-Module PtqTools
"`$(`$m.ModuleBase)|`$(`$m.Version)|`$((Get-Command -Module PtqTools).Count)|`$(`$m.PrivateData.PSData.ReleaseNotes -match 'static QDQ')|`$(Test-Path (Join-Path `$m.ModuleBase 'Invoke-PtqBatch.ps1'))"
"@
        $out = Invoke-FreshPwsh $script -Environment @{ HOME = $fakeHome; XDG_DATA_HOME = $null; XDG_CONFIG_HOME = $null }
        $line = $out | Where-Object { $_ -like '*|*|*|*|*' } | Select-Object -Last 1
        $line | Should -Not -BeNullOrEmpty -Because ($out -join "`n")
        $base, $version, $count, $notes, $wrapper = $line -split '\|'
        $base | Should -BeLike "$fakeHome*"
        $version | Should -Be (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).ModuleVersion
        [int]$count | Should -Be (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).CmdletsToExport.Count
        $notes | Should -Be 'True'
        $wrapper | Should -Be 'True' -Because 'the package holds the scheduler wrapper of Update-QuantizedModel'
    }

    It 'carries tags and licence in the manifest' {
        $data = Import-PowerShellDataFile $env:PTQTOOLS_MODULE
        $data.PrivateData.PSData.Tags | Should -Contain 'quantization'
        $data.PrivateData.PSData.LicenseUri | Should -Not -BeNullOrEmpty
        Test-Path (Join-Path $moduleDir 'LICENSE') | Should -BeTrue
    }

    It 'asks for the pwsh that runs .NET 10, names the platforms and has release notes for users' {
        $data = Import-PowerShellDataFile $env:PTQTOOLS_MODULE
        # The assemblies target .NET 10; pwsh 7.6 is the first on it (7.4: .NET 8, 7.5: .NET 9).
        $data.PowerShellVersion | Should -Be '7.6'
        $data.CompatiblePSEditions | Should -Be @('Core')
        $tf = (Get-Item (Join-Path $moduleDir 'dependencies/PtqTools.Core.dll')).FullName
        $stream = [IO.File]::OpenRead($tf)
        try {
            $reader = [Reflection.Metadata.PEReaderExtensions]::GetMetadataReader([Reflection.PortableExecutable.PEReader]::new($stream))
            $framework = foreach ($h in $reader.GetAssemblyDefinition().GetCustomAttributes()) {
                $a = $reader.GetCustomAttribute($h)
                $ctor = $reader.GetMemberReference([Reflection.Metadata.MemberReferenceHandle]$a.Constructor)
                if ($reader.GetString($reader.GetTypeReference([Reflection.Metadata.TypeReferenceHandle]$ctor.Parent).Name) -eq 'TargetFrameworkAttribute') {
                    [Text.Encoding]::UTF8.GetString($reader.GetBlobBytes($a.Value))
                }
            }
        } finally { $stream.Dispose() }
        $framework | Should -Match 'Version=v10\.0' -Because 'PowerShellVersion follows the engine''s target framework'
        foreach ($tag in 'Windows', 'Linux', 'MacOS', 'PSEdition_Core') { $data.PrivateData.PSData.Tags | Should -Contain $tag }
        $data.PrivateData.PSData.ProjectUri | Should -Match '^https://'
        $data.PrivateData.PSData.LicenseUri | Should -Match '^https://'
        $notes = $data.PrivateData.PSData.ReleaseNotes
        $notes | Should -Match 'Windows' -Because 'the notes say where it runs'
        $notes | Should -Not -Match '(?i)\bissue \d|\bhelpers?\b|\bcommits?\b|\bsession \d' -Because 'the notes are for users, not the project''s history'
    }
}

Describe 'Tab completion' {
    BeforeAll {
        Import-Module $env:PTQTOOLS_MODULE -Force
        . (Join-Path $PSScriptRoot 'TestData.ps1')
        function Complete([string] $line) { (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText }
    }

    It 'completes -OpType with the op types the quantizer handles' {
        Complete "Get-ModelLayer -Path '$ResNet18' -OpType Co" | Should -Be @('Concat', 'Conv', 'ConvTranspose')
    }

    It 'completes layer names read from the model' {
        $names = Complete "Get-ModelLayer -Path '$ResNet18' -Name Convolution24"
        $names | Should -Be @('Convolution249')
    }

    It 'completes the choices of -ActivationType' {
        Complete 'Invoke-Quantization -ActivationType ' | Sort-Object | Should -Be @('Int16', 'Int8', 'UInt16', 'UInt8')
    }

    It 'completes -<Parameter> of <Command>' -ForEach @(
        @{ Command = 'Measure-ActivationRange'; Parameter = 'Method'; Expected = 'Auto', 'Entropy', 'MinMax', 'MovingAverageMinMax', 'Mse', 'Percentile' }
        @{ Command = 'Merge-ActivationRange'; Parameter = 'Method'; Expected = 'Auto', 'Entropy', 'MinMax', 'MovingAverageMinMax', 'Mse', 'Percentile' }
        @{ Command = 'Invoke-Quantization'; Parameter = 'Mode'; Expected = 'Dynamic', 'Static', 'WeightOnly' }
        @{ Command = 'Invoke-Quantization'; Parameter = 'Format'; Expected = 'QDQ', 'QOperator' }
        @{ Command = 'Export-QuantizationReport'; Parameter = 'Format'; Expected = 'Html', 'Json', 'Markdown' }
        @{ Command = 'Invoke-ModelInference'; Parameter = 'Engine'; Expected = 'OnnxRuntime', 'PtqTools' }
    ) {
        $offered = @(Complete "$Command -$Parameter ")
        foreach ($choice in $Expected) { $offered | Should -Contain $choice }
        # and narrows to what was typed
        Complete "$Command -$Parameter $($Expected[0].Substring(0, 2))" | Should -Contain $Expected[0]
    }
}

Describe 'Path binding' {
    BeforeAll {
        Import-Module $env:PTQTOOLS_MODULE -Force
        . (Join-Path $PSScriptRoot 'TestData.ps1')
        $script:folder = Join-Path $TestDrive 'models'
        $null = New-Item -ItemType Directory $folder
        Copy-Item -LiteralPath $ResNet18 -Destination (Join-Path $folder 'a[1].onnx')
        Copy-Item -LiteralPath $ResNet18 -Destination (Join-Path $folder 'b.onnx')
    }

    It '-Path expands wildcards; -LiteralPath takes brackets as they are' {
        (Get-OnnxModel -Path (Join-Path $folder '*.onnx')) | Should -HaveCount 2
        (Get-OnnxModel -LiteralPath (Join-Path $folder 'a[1].onnx')).Path | Should -Be (Join-Path $folder 'a[1].onnx')
        $e = Get-ErrorRecord { Get-OnnxModel -Path (Join-Path $folder 'none*.onnx') -ErrorAction Stop }
        $e | Should -Not -BeNullOrEmpty
    }

    It 'binds FullName from Get-ChildItem *.onnx' {
        $models = Get-ChildItem -LiteralPath $folder -Filter *.onnx | Get-OnnxModel
        $models | Should -HaveCount 2
        (Get-ChildItem -LiteralPath $folder -Filter 'b.onnx' | Get-ModelLayer | Select-Object -First 1).ModelPath | Should -Be (Join-Path $folder 'b.onnx')
    }

    It 'binds Path from a model summary and OutputPath from a quantization result' {
        $summary = Get-OnnxModel -LiteralPath (Join-Path $folder 'b.onnx')
        ($summary | Get-ModelLayer | Select-Object -First 1).ModelSha256 | Should -Be $summary.Sha256
        $calib = New-ResNetDataSet -Split train -Count 2
        $result = $summary | Get-ModelLayer | Measure-ActivationRange -DataSet $calib |
            Invoke-Quantization -OutputPath (Join-Path $folder 'b.int8.onnx')
        ($result | Get-OnnxModel).QuantizedFrom | Should -Be $summary.Sha256
        ($result | Measure-ModelPerformance -DataSet $calib -WarmupRuns 1 -Runs 2).Model | Should -Be $result.OutputPath
        @($result | Invoke-ModelInference -DataSet $calib) | Should -HaveCount 2
    }
}
