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
    It 'builds a nupkg that Install-PSResource installs from a local repository, with release notes from CHANGELOG.md' {
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
"`$(`$m.ModuleBase)|`$(`$m.Version)|`$((Get-Command -Module PtqTools).Count)|`$(`$m.PrivateData.PSData.ReleaseNotes -match 'static QDQ')"
"@
        $out = Invoke-FreshPwsh $script -Environment @{ HOME = $fakeHome; XDG_DATA_HOME = $null; XDG_CONFIG_HOME = $null }
        $line = $out | Where-Object { $_ -like '*|*|*|*' } | Select-Object -Last 1
        $line | Should -Not -BeNullOrEmpty -Because ($out -join "`n")
        $base, $version, $count, $notes = $line -split '\|'
        $base | Should -BeLike "$fakeHome*"
        $version | Should -Be (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).ModuleVersion
        [int]$count | Should -Be (Import-PowerShellDataFile $env:PTQTOOLS_MODULE).CmdletsToExport.Count
        $notes | Should -Be 'True'
    }

    It 'carries tags and licence in the manifest' {
        $data = Import-PowerShellDataFile $env:PTQTOOLS_MODULE
        $data.PrivateData.PSData.Tags | Should -Contain 'quantization'
        $data.PrivateData.PSData.LicenseUri | Should -Not -BeNullOrEmpty
        Test-Path (Join-Path $moduleDir 'LICENSE') | Should -BeTrue
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
}
