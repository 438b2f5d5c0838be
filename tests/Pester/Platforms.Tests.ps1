# The one package for every platform (issue 18): the natives of each runtime identifier in dependencies/runtimes/<rid>/native,
# checked by format and architecture in the module folder and in the nupkg; AnyCPU managed assemblies; the module's own
# load context beside a module with other versions of its dependencies; and one clear error when natives are missing.
BeforeDiscovery {
    $script:rids = 'win-x64', 'linux-x64', 'linux-arm64', 'osx-arm64'
}

BeforeAll {
    $script:moduleDir = Split-Path $env:PTQTOOLS_MODULE
    $script:packageDir = Join-Path $PSScriptRoot '../../out/package'
    . (Join-Path $PSScriptRoot 'TinyModels.ps1')

    # What a native library file is: its format and the architecture its header names.
    function Get-NativeKind([string] $Path) {
        $b = [IO.File]::ReadAllBytes($Path)
        $u16 = { param($o) [BitConverter]::ToUInt16($b, $o) }
        $u32 = { param($o) [BitConverter]::ToUInt32($b, $o) }
        $be32 = { param($o) ([uint32]$b[$o] -shl 24) -bor ([uint32]$b[$o + 1] -shl 16) -bor ([uint32]$b[$o + 2] -shl 8) -bor [uint32]$b[$o + 3] }
        if ($b.Length -gt 0x40 -and $b[0] -eq 0x4D -and $b[1] -eq 0x5A) {
            $pe = & $u32 0x3C
            if ((& $u32 $pe) -ne 0x4550) { return [pscustomobject]@{ Format = 'MZ'; Arch = @('?') } }
            $machine = switch (& $u16 ($pe + 4)) { 0x8664 { 'x64' } 0xAA64 { 'arm64' } 0x14C { 'x86' } default { 'other' } }
            # A managed assembly is a PE too: the CLI header (data directory 14) says so.
            $optional = $pe + 24
            $dirs = if ((& $u16 $optional) -eq 0x20B) { $optional + 112 } else { $optional + 96 }
            $format = if ((& $u32 ($dirs + 14 * 8)) -ne 0) { 'PE-managed' } else { 'PE' }
            return [pscustomobject]@{ Format = $format; Arch = @($machine) }
        }
        if ($b.Length -gt 0x14 -and $b[0] -eq 0x7F -and $b[1] -eq 0x45 -and $b[2] -eq 0x4C -and $b[3] -eq 0x46) {
            $machine = switch (& $u16 0x12) { 62 { 'x64' } 183 { 'arm64' } 3 { 'x86' } 40 { 'arm' } default { 'other' } }
            $class = if ($b[4] -eq 2) { 'ELF64' } else { 'ELF32' }
            return [pscustomobject]@{ Format = $class; Arch = @($machine) }
        }
        $cpu = { param($t) switch ($t) { 0x01000007 { 'x64' } 0x0100000C { 'arm64' } default { 'other' } } }
        if ($b.Length -gt 8 -and (& $u32 0) -eq 0xFEEDFACFu) { return [pscustomobject]@{ Format = 'Mach-O'; Arch = @(& $cpu (& $u32 4)) } }
        if ($b.Length -gt 8 -and (& $be32 0) -eq 0xCAFEBABEu) {
            # A universal binary: one (cputype, cpusubtype, offset, size, align) record per slice, big-endian.
            $slices = foreach ($i in 0..((& $be32 4) - 1)) { & $cpu (& $be32 (8 + 20 * $i)) }
            return [pscustomobject]@{ Format = 'Mach-O-universal'; Arch = @($slices) }
        }
        [pscustomobject]@{ Format = 'unknown'; Arch = @() }
    }
    $script:expected = @{
        'win-x64'     = @{ Format = 'PE'; Arch = 'x64' }
        'linux-x64'   = @{ Format = 'ELF64'; Arch = 'x64' }
        'linux-arm64' = @{ Format = 'ELF64'; Arch = 'arm64' }
        'osx-arm64'   = @{ Format = 'Mach-O*'; Arch = 'arm64' }
    }
    $script:required = @{
        'win-x64'     = 'onnxruntime.dll', 'libSkiaSharp.dll', 'libHarfBuzzSharp.dll'
        'linux-x64'   = 'libonnxruntime.so', 'libSkiaSharp.so', 'libHarfBuzzSharp.so'
        'linux-arm64' = 'libonnxruntime.so', 'libSkiaSharp.so', 'libHarfBuzzSharp.so'
        'osx-arm64'   = 'libonnxruntime.dylib', 'libSkiaSharp.dylib', 'libHarfBuzzSharp.dylib'
    }

    # The nupkg, unpacked once.
    $nupkg = @(Get-ChildItem $packageDir -Filter 'PtqTools.*.nupkg')
    $script:unpacked = Join-Path $TestDrive 'nupkg'
    if ($nupkg.Count -eq 1) {
        Add-Type -AssemblyName System.IO.Compression.FileSystem
        [IO.Compression.ZipFile]::ExtractToDirectory($nupkg[0].FullName, $unpacked)
    }
    $script:roots = @{ module = $moduleDir; nupkg = $unpacked }

    function Invoke-FreshPwsh([string] $Command) { & dotnet (Join-Path $PSHOME 'pwsh.dll') -NoProfile -NonInteractive -Command $Command 2>&1 }
    $script:rid = '{0}-{1}' -f $(if ($IsWindows) { 'win' } elseif ($IsMacOS) { 'osx' } else { 'linux' }), [Runtime.InteropServices.RuntimeInformation]::ProcessArchitecture.ToString().ToLowerInvariant()
}

Describe 'The package for every platform (<_>)' -ForEach 'module', 'nupkg' {
    BeforeAll { $script:root = $roots[$_] }

    It 'exists' { Test-Path (Join-Path $root 'PtqTools.psd1') | Should -BeTrue -Because "the $_ holds the manifest" }

    It 'holds the natives of <_> in runtimes/<_>/native, each of its format and architecture' -ForEach $rids {
        $folder = Join-Path $root "dependencies/runtimes/$_/native"
        $files = @(Get-ChildItem $folder -File)
        foreach ($name in $required[$_]) { $files.Name | Should -Contain $name }
        foreach ($file in $files) {
            $kind = Get-NativeKind $file.FullName
            $kind.Format | Should -BeLike $expected[$_].Format -Because "$($file.Name) is a native of $_"
            $kind.Arch | Should -Contain $expected[$_].Arch -Because "$($file.Name) is a native of $_"
        }
    }

    It 'holds natives of no other platform, and every native anywhere in it is of a supported platform' {
        @(Get-ChildItem (Join-Path $root 'dependencies/runtimes') -Directory).Name | Sort-Object | Should -Be ($rids | Sort-Object)
        $natives = Get-ChildItem $root -Recurse -File | Where-Object { $_.Extension -in '.so', '.dylib' -or ($_.Extension -eq '.dll' -and (Get-NativeKind $_.FullName).Format -eq 'PE') }
        foreach ($file in $natives) {
            $kind = Get-NativeKind $file.FullName
            $matching = $rids | Where-Object { $kind.Format -like $expected[$_].Format -and $kind.Arch -contains $expected[$_].Arch }
            $matching | Should -Not -BeNullOrEmpty -Because "$($file.FullName) is $($kind.Format) $($kind.Arch -join '/')"
        }
    }

    It 'holds AnyCPU managed assemblies only' {
        $assemblies = Get-ChildItem $root -Recurse -File -Filter *.dll | Where-Object { (Get-NativeKind $_.FullName).Format -eq 'PE-managed' }
        $assemblies.Name | Should -Contain 'PtqTools.dll'
        $assemblies.Name | Should -Contain 'PtqTools.Core.dll'
        foreach ($file in $assemblies) {
            $stream = [IO.File]::OpenRead($file.FullName)
            try {
                $headers = [Reflection.PortableExecutable.PEReader]::new($stream).PEHeaders
                $headers.CoffHeader.Machine | Should -Be 'I386' -Because "$($file.Name) is AnyCPU"
                $flags = $headers.CorHeader.Flags
                $flags.HasFlag([Reflection.PortableExecutable.CorFlags]::ILOnly) | Should -BeTrue -Because $file.Name
                $flags.HasFlag([Reflection.PortableExecutable.CorFlags]::Requires32Bit) | Should -BeFalse -Because $file.Name
            } finally { $stream.Dispose() }
        }
    }

    It 'keeps the engine and its dependencies out of the folder pwsh loads from' {
        @(Get-ChildItem $root -File -Filter *.dll).Name | Sort-Object | Should -Be @('PtqTools.dll', 'PtqTools.Loader.dll')
    }
}

Describe 'The entry assemblies reference no dependency' {
    It '<_> references only .NET, PowerShell and PtqTools' -ForEach 'PtqTools.dll', 'PtqTools.Loader.dll' {
        # Any other reference would bind in pwsh's default context, to whatever version another module loaded there.
        $stream = [IO.File]::OpenRead((Join-Path (Split-Path $env:PTQTOOLS_MODULE) $_))
        try {
            $reader = [Reflection.Metadata.PEReaderExtensions]::GetMetadataReader([Reflection.PortableExecutable.PEReader]::new($stream))
            $names = foreach ($h in $reader.AssemblyReferences) { $reader.GetString($reader.GetAssemblyReference($h).Name) }
        } finally { $stream.Dispose() }
        $names | Should -Not -BeNullOrEmpty
        foreach ($name in $names) {
            $name | Should -Match '^(System(\..+)?|netstandard|mscorlib|Microsoft\.PowerShell\..+|PtqTools\.Core|PtqTools\.Loader)$'
        }
        if ($_ -eq 'PtqTools.Loader.dll') { $names | Should -Not -Contain 'PtqTools.Core' }
    }
}

Describe 'Dependencies in the module''s own load context' {
    BeforeAll {
        # A second binary module with Google.Protobuf 3.30.2 and ONNX Runtime's managed API 1.30.0 (PtqTools: 3.36.2,
        # 1.31.1), loaded the way most modules are, in pwsh's default context.
        $script:probe = Join-Path $TestDrive 'AlcProbe'
        $build = & dotnet publish (Join-Path $PSScriptRoot '../AlcProbe/AlcProbe.csproj') -c Release -o $probe --verbosity quiet 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($build -join "`n")
        $script:model = New-TinyCnn (Join-Path $TestDrive 'tiny.onnx') 1
        # The fresh pwsh quantizes the tiny CNN on four random samples and prints one line per step.
        $script:quantize = @"
`$r = [Random]::new(3)
`$samples = 1..4 | ForEach-Object { , [float[]](1..768 | ForEach-Object { `$r.NextDouble() }) }
`$q = Get-ModelLayer -LiteralPath '$model' | Measure-ActivationRange -DataSet (New-PtqDataSet -InputObject `$samples -Shape 3, 16, 16) |
    Invoke-Quantization -OutputPath (Join-Path '$TestDrive' "q`$(Get-Random).onnx") -SkipFidelityCheck -SkipHostCheck -Force
"quantized|`$(`$q.QuantizedLayerCount)|`$((Get-OnnxModel -LiteralPath `$q.OutputPath).QuantizedFrom -eq (Get-OnnxModel -LiteralPath '$model').Sha256)"
"@
        $script:report = @'
$p = Get-AlcProbe
"probe|$($p.Protobuf)|$($p.ProtobufContext)|$($p.OnnxRuntime)|$($p.Json)|$($p.TensorSum)"
'@
        $script:ours = @'
$alc = [System.Runtime.Loader.AssemblyLoadContext]::All | Where-Object Name -eq 'PtqTools'
$v = { param($n) ($alc.Assemblies | Where-Object { $_.GetName().Name -eq $n }).GetCustomAttributes([Reflection.AssemblyInformationalVersionAttribute], $false).InformationalVersion -replace '\+.*' }
"ours|$(& $v 'Google.Protobuf')|$(& $v 'Microsoft.ML.OnnxRuntime')"
'@
        function Get-Lines($out, [string] $tag) { @($out | Where-Object { "$_" -like "$tag|*" } | ForEach-Object { "$_" }) }
    }

    It 'works beside a module imported before it that loaded other versions' {
        $out = Invoke-FreshPwsh "`$ErrorActionPreference = 'Stop'; Import-Module '$probe/AlcProbe.dll'; $report; Import-Module '$env:PTQTOOLS_MODULE'; $quantize; $ours; $report"
        $because = $out -join "`n"
        $probes = Get-Lines $out 'probe'
        $probes | Should -HaveCount 2 -Because $because
        $probes | Should -Be @('probe|3.30.2|Default|1.30.0|{ "answer": 42 }|5', 'probe|3.30.2|Default|1.30.0|{ "answer": 42 }|5')
        Get-Lines $out 'quantized' | Should -Match '^quantized\|[1-9]\d*\|True$' -Because $because
        Get-Lines $out 'ours' | Should -Be 'ours|3.36.2|1.31.1' -Because $because
    }

    It 'works beside a module imported after it that loads other versions' {
        $out = Invoke-FreshPwsh "`$ErrorActionPreference = 'Stop'; Import-Module '$env:PTQTOOLS_MODULE'; $quantize; Import-Module '$probe/AlcProbe.dll'; $report; $quantize; $ours"
        $because = $out -join "`n"
        Get-Lines $out 'probe' | Should -Be 'probe|3.30.2|Default|1.30.0|{ "answer": 42 }|5' -Because $because
        Get-Lines $out 'quantized' | Should -HaveCount 2 -Because $because
        Get-Lines $out 'quantized' | ForEach-Object { $_ | Should -Match '^quantized\|[1-9]\d*\|True$' }
        Get-Lines $out 'ours' | Should -Be 'ours|3.36.2|1.31.1' -Because $because
    }

    It 'keeps the engine''s public types reachable by name from scripts' {
        $out = Invoke-FreshPwsh "Import-Module '$env:PTQTOOLS_MODULE'; [PtqTools.Core.Evaluation.TaskMetrics].Assembly.Location; [System.Runtime.Loader.AssemblyLoadContext]::GetLoadContext([PtqTools.Core.Evaluation.TaskMetrics].Assembly).Name"
        $out[-2] | Should -Be (Join-Path $moduleDir 'dependencies/PtqTools.Core.dll') -Because ($out -join "`n")
        $out[-1] | Should -Be 'PtqTools'
    }
}

Describe 'A platform whose natives are missing' {
    BeforeAll {
        # A copy of the module folder with this platform's natives only, which each case then breaks.
        function New-ModuleCopy([string] $Name) {
            $copy = Join-Path $TestDrive $Name
            $null = New-Item -ItemType Directory $copy
            Get-ChildItem $moduleDir | Where-Object Name -ne 'dependencies' | Copy-Item -Destination $copy -Recurse
            $deps = Join-Path $copy 'dependencies'
            $null = New-Item -ItemType Directory (Join-Path $deps "runtimes/$rid") -Force
            Get-ChildItem (Join-Path $moduleDir 'dependencies') -File | Copy-Item -Destination $deps
            Copy-Item (Join-Path $moduleDir "dependencies/runtimes/$rid/native") (Join-Path $deps "runtimes/$rid") -Recurse
            $copy
        }
        function Get-FirstError([string] $ModuleFolder) {
            $script = "Import-Module '$ModuleFolder/PtqTools.psd1'; try { Get-OnnxModel -LiteralPath '$model' -ErrorAction Stop; 'no error' } " +
                "catch { 'id|' + `$_.FullyQualifiedErrorId; 'category|' + `$_.CategoryInfo.Category; 'message|' + `$_.Exception.Message; 'type|' + `$_.Exception.GetType().FullName }"
            $out = Invoke-FreshPwsh $script
            $h = @{}; foreach ($line in $out) { if ("$line" -match '^(\w+)\|(.*)$') { $h[$Matches[1]] = $Matches[2] } }
            $h['all'] = $out -join "`n"
            $h
        }
        $script:model = New-TinyCnn (Join-Path $TestDrive 'tiny-native.onnx') 2
        $script:onnxruntime = if ($IsWindows) { 'onnxruntime.dll' } elseif ($IsMacOS) { 'libonnxruntime.dylib' } else { 'libonnxruntime.so' }
    }

    It 'is one NativeLibraryMissing error naming the platform and the deleted ONNX Runtime library' {
        $copy = New-ModuleCopy 'no-onnxruntime'
        Remove-Item (Join-Path $copy "dependencies/runtimes/$rid/native/$onnxruntime")
        $e = Get-FirstError $copy
        $e.id | Should -Be 'NativeLibraryMissing,PtqTools.Commands.GetOnnxModelCommand' -Because $e.all
        $e.category | Should -Be 'NotImplemented'
        $e.message | Should -BeLike "*($rid)*$onnxruntime missing*"
        $e.type | Should -Be 'PtqTools.Core.PtqException'
        $e.all | Should -Not -BeLike '*TypeInitialization*'
    }

    It 'is one NativeLibraryMissing error naming a platform the package has no natives for' {
        $copy = New-ModuleCopy 'no-platform'
        Remove-Item (Join-Path $copy "dependencies/runtimes/$rid") -Recurse
        $e = Get-FirstError $copy
        $e.id | Should -Be 'NativeLibraryMissing,PtqTools.Commands.GetOnnxModelCommand' -Because $e.all
        $e.message | Should -BeLike "*no native libraries for this platform ($rid)*win-x64, linux-x64, linux-arm64, osx-arm64*"
        $e.all | Should -Not -BeLike '*TypeInitialization*'
    }

    It 'runs on the intact copy (the check names nothing when all is there)' {
        $copy = New-ModuleCopy 'intact'
        $e = Get-FirstError $copy
        $e.all | Should -BeLike '*no error*'
    }
}
