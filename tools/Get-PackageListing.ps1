<#
.SYNOPSIS
    Lists the natives of the built module folder per runtime identifier (file, size, format, architecture read from
    each file's header) and the managed assemblies, as Markdown for docs/platforms.md.
.EXAMPLE
    dotnet pwsh ./tools/Get-PackageListing.ps1 -ModuleFolder out/PtqTools
#>
param([string] $ModuleFolder = (Join-Path $PSScriptRoot '../out/PtqTools'))
$ErrorActionPreference = 'Stop'

function Get-NativeKind([string] $Path) {
    $b = [byte[]]::new(4096)
    $s = [IO.File]::OpenRead($Path); try { $n = $s.Read($b, 0, $b.Length) } finally { $s.Dispose() }
    $u16 = { param($o) [BitConverter]::ToUInt16($b, $o) }
    $u32 = { param($o) [BitConverter]::ToUInt32($b, $o) }
    $be32 = { param($o) ([uint32]$b[$o] -shl 24) -bor ([uint32]$b[$o + 1] -shl 16) -bor ([uint32]$b[$o + 2] -shl 8) -bor [uint32]$b[$o + 3] }
    $cpu = { param($t) switch ($t) { 0x01000007 { 'x86-64' } 0x0100000C { 'arm64' } default { 'cputype 0x{0:x}' -f $t } } }
    if ($b[0] -eq 0x4D -and $b[1] -eq 0x5A) {
        $pe = & $u32 0x3C
        $machine = & $u16 ($pe + 4)
        $name = switch ($machine) { 0x8664 { 'x86-64 (0x8664)' } 0xAA64 { 'arm64 (0xaa64)' } 0x14C { 'i386 (0x14c)' } default { '0x{0:x}' -f $machine } }
        $optional = $pe + 24
        $dirs = if ((& $u16 $optional) -eq 0x20B) { $optional + 112 } else { $optional + 96 }
        $managed = (& $u32 ($dirs + 14 * 8)) -ne 0
        return @{ Format = $(if ($managed) { 'PE, .NET (ILOnly)' } else { 'PE32+ DLL' }); Arch = $(if ($managed) { 'AnyCPU' } else { "machine $name" }) }
    }
    if ($b[0] -eq 0x7F -and $b[1] -eq 0x45 -and $b[2] -eq 0x4C -and $b[3] -eq 0x46) {
        $m = & $u16 0x12
        $name = switch ($m) { 62 { 'x86-64 (62)' } 183 { 'AArch64 (183)' } default { "$m" } }
        return @{ Format = $(if ($b[4] -eq 2) { 'ELF64 shared object' } else { 'ELF32' }); Arch = "e_machine $name" }
    }
    if ((& $u32 0) -eq 0xFEEDFACFu) { return @{ Format = 'Mach-O 64'; Arch = "cputype $(& $cpu (& $u32 4))" } }
    if ((& $be32 0) -eq 0xCAFEBABEu) {
        $slices = foreach ($i in 0..((& $be32 4) - 1)) { & $cpu (& $be32 (8 + 20 * $i)) }
        return @{ Format = 'Mach-O universal'; Arch = "slices $($slices -join ' + ')" }
    }
    @{ Format = 'unknown'; Arch = '' }
}

$deps = Join-Path $ModuleFolder 'dependencies'
'| RID | file | size | format | architecture |'
'|---|---|---:|---|---|'
foreach ($rid in Get-ChildItem (Join-Path $deps 'runtimes') -Directory | Sort-Object Name) {
    foreach ($f in Get-ChildItem (Join-Path $rid.FullName 'native') -File | Sort-Object Name) {
        $k = Get-NativeKind $f.FullName
        '| {0} | `{1}` | {2:N1} MB | {3} | {4} |' -f $rid.Name, $f.Name, ($f.Length / 1MB), $k.Format, $k.Arch
    }
}
foreach ($f in Get-ChildItem $deps -File | Where-Object Extension -in '.so', '.dylib') {
    $k = Get-NativeKind $f.FullName
    '| (flat, beside the engine) | `{0}` | {1:N1} MB | {2} | {3} |' -f $f.Name, ($f.Length / 1MB), $k.Format, $k.Arch
}
''
'| managed assembly | folder | size | format |'
'|---|---|---:|---|'
foreach ($f in @(Get-ChildItem $ModuleFolder -File -Filter *.dll) + @(Get-ChildItem $deps -File -Filter *.dll) | Sort-Object { $_.DirectoryName -ne (Resolve-Path $ModuleFolder).Path }, Name) {
    $k = Get-NativeKind $f.FullName
    $where = if ($f.DirectoryName -eq $deps -or $f.DirectoryName -eq (Resolve-Path $deps).Path) { 'dependencies/' } else { '(module root)' }
    '| `{0}` | {1} | {2:N0} KB | {3}, {4} |' -f $f.Name, $where, ($f.Length / 1KB), $k.Format, $k.Arch
}
''
$total = (Get-ChildItem $ModuleFolder -Recurse -File | Measure-Object Length -Sum).Sum
$perRid = foreach ($rid in Get-ChildItem (Join-Path $deps 'runtimes') -Directory | Sort-Object Name) {
    '{0} {1:N1} MB' -f $rid.Name, ((Get-ChildItem $rid.FullName -Recurse -File | Measure-Object Length -Sum).Sum / 1MB)
}
'Module folder: {0:N1} MB in all; natives per RID: {1}.' -f ($total / 1MB), ($perRid -join ', ')
