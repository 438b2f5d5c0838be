# Issues 16 (item 2) and 18 (items 2 and 4), ARM64: the engine's own ARM64 kernels (KernelPath ArmDot: SDOT through
# System.Runtime.Intrinsics.Arm) and the integer engine, run under qemu-user as a self-contained linux-arm64 .NET
# program (tests/PtqTools.Arm64Check), since this machine is x64 (docs/platforms.md, "ARM64 under qemu-user").
# ONNX Runtime is not used under emulation (its arm64 library crashes there): the quantized models are written here
# on x64, and the ARM64 engine's tensors are compared with the x64 engine's, with exact sums and emulating ONNX
# Runtime on CPUs without VNNI (-Target Avx2, which an analyst on Apple silicon runs).
BeforeAll {
    $script:root = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
    $script:project = Join-Path $root 'tests/PtqTools.Arm64Check/PtqTools.Arm64Check.csproj'
    $script:sysroot = '/usr/aarch64-linux-gnu'
    $qemu = Get-Command qemu-aarch64-static -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    # Why the checks cannot run here, or null. build.ps1 -Task Test installs both packages where apt-get runs as root.
    $script:Skip = if (-not $IsLinux -or [Runtime.InteropServices.RuntimeInformation]::OSArchitecture -ne 'X64') {
        "the qemu-user run is set up for a Linux x64 host; this is $([Runtime.InteropServices.RuntimeInformation]::OSDescription) on $([Runtime.InteropServices.RuntimeInformation]::OSArchitecture)"
    } elseif (-not $qemu) {
        'qemu-aarch64-static is missing (Debian package qemu-user-static; build.ps1 -Task Test installs it with apt-get as root)'
    } elseif (-not (Test-Path (Join-Path $sysroot 'lib/ld-linux-aarch64.so.1'))) {
        "the arm64 sysroot $sysroot is missing (Debian package gcc-aarch64-linux-gnu; build.ps1 -Task Test installs it with apt-get as root)"
    } else { $null }
    if ($Skip) { return }
    $script:Qemu = $qemu.Source

    function Invoke-Logged([string] $File, [string[]] $Arguments) {
        $text = & $File @Arguments 2>&1 | ForEach-Object { "$_" }
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Lines = @($text) }
    }

    # The same program twice: framework-dependent for this x64 host, and self-contained for linux-arm64. Both are
    # incremental, and skipped altogether while their outputs are newer than every input (the engine's and the
    # check's sources and project files, the shared props and the manifest). The publish folder stays under out/.
    $script:Timing = [ordered]@{}
    $sw = [Diagnostics.Stopwatch]::StartNew()
    $script:X64Dll = Join-Path $root 'tests/PtqTools.Arm64Check/bin/Release/net10.0/PtqTools.Arm64Check.dll'
    $script:Published = Join-Path $root 'out/arm64check'
    $apphost = Join-Path $Published 'PtqTools.Arm64Check'
    $inputs = @(Get-ChildItem -Recurse -File (Join-Path $root 'src/PtqTools.Core'), (Join-Path $root 'src/native'), (Join-Path $root 'tests/PtqTools.Arm64Check') |
            Where-Object { $_.FullName -notmatch '[\\/](bin|obj)[\\/]' }) +
        @('Directory.Build.props', 'Directory.Packages.props', 'PtqTools.psd1' | ForEach-Object { Get-Item (Join-Path $root $_) })
    $newestInput = ($inputs | Measure-Object -Property LastWriteTimeUtc -Maximum).Maximum
    $outputs = $X64Dll, $apphost, (Join-Path $Published 'PtqTools.Core.dll')
    $upToDate = -not ($outputs | Where-Object { -not (Test-Path $_) -or (Get-Item $_).LastWriteTimeUtc -le $newestInput })
    if (-not $upToDate) {
        $build = Invoke-Logged dotnet @('build', $project, '-c', 'Release', '--verbosity', 'quiet', '-nologo')
        if ($build.ExitCode -ne 0) { throw "Building the ARM64 check for x64 failed:`n$($build.Lines -join "`n")" }
        $publish = Invoke-Logged dotnet @('publish', $project, '-c', 'Release', '-r', 'linux-arm64', '--self-contained', '-o', $Published, '--verbosity', 'quiet', '-nologo')
        if ($publish.ExitCode -ne 0) { throw "Publishing the ARM64 check for linux-arm64 failed:`n$($publish.Lines -join "`n")" }
        # An unchanged assembly is not copied again: mark the outputs as built from these inputs.
        foreach ($o in $outputs) { (Get-Item $o).LastWriteTimeUtc = [DateTime]::UtcNow }
    }
    $Timing.Build = $sw.Elapsed.TotalSeconds

    # The quantized conformance models, written and run by the x64 code.
    $script:Models = Join-Path $TestDrive 'models'
    $sw.Restart()
    $script:X64 = Invoke-Logged dotnet @($X64Dll, 'write', $Models, 'engine', $Models)
    $Timing.X64 = $sw.Elapsed.TotalSeconds

    # Under qemu-user with the sysroot as the loader's prefix (-L; without it the arm64 loader is not found).
    # The default CPU model (max) has the dot product; Cortex-A72 has AdvSimd without it. The two runs overlap.
    $sw.Restart()
    $noDot = Start-ThreadJob -ArgumentList $Qemu, $sysroot, $apphost -ScriptBlock {
        param($qemu, $sysroot, $apphost)
        $text = & $qemu -cpu cortex-a72 -L $sysroot $apphost kernels 2>&1 | ForEach-Object { "$_" }
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Lines = @($text) }
    }
    $script:Arm = Invoke-Logged $Qemu @('-L', $sysroot, $apphost, 'kernels', 'engine', $Models)
    $script:ArmNoDot = Receive-Job $noDot -Wait -AutoRemoveJob
    $Timing.Qemu = $sw.Elapsed.TotalSeconds
    Write-Host ("ARM64 check timings (s): " + (($Timing.GetEnumerator() | ForEach-Object { '{0} {1:F1}' -f $_.Key, $_.Value }) -join ', '))
    Write-Host "qemu-aarch64 -L $sysroot $apphost kernels engine <models>:"
    $Arm.Lines | Where-Object { $_ -notmatch '^(tensor|output) ' } | ForEach-Object { Write-Host "  $_" }

    function Get-Report($Run) { @($Run.Lines | Where-Object { $_ -match '^(tensor|output) ' }) }
}

Describe 'ARM64 under qemu-user' {
    It 'writes the quantized conformance models on x64, where every x64 kernel path agrees on them' {
        if ($Skip) { Set-ItResult -Skipped -Because $Skip; return }
        $X64.ExitCode | Should -Be 0 -Because ($X64.Lines -join "`n")
        @($X64.Lines -match '^write: ').Count | Should -Be 6
        @($X64.Lines -match '^engine: .* agree$').Count | Should -Be 6
    }

    It 'runs as a linux-arm64 program that sees AdvSimd and the dot product and takes the ArmDot path' {
        if ($Skip) { Set-ItResult -Skipped -Because $Skip; return }
        $Arm.Lines[0] | Should -Match '^arch: Arm64, AdvSimd: True, Dp: True, best path: ArmDot, paths: Scalar, Vector128, ArmDot,'
    }

    It 'holds every ARM64 kernel to the scalar references, on every path' {
        if ($Skip) { Set-ItResult -Skipped -Because $Skip; return }
        $Arm.ExitCode | Should -Be 0 -Because (($Arm.Lines -notmatch "^(tensor|output) ") -join "`n")
        $kernels = @($Arm.Lines -match '^kernels: ')
        $kernels.Count | Should -Be 11
        $kernels | Should -Not -Match 'MISMATCH'
        $kernels | ForEach-Object { $_ | Should -Match 'x 3 paths, exact' }
        $Arm.Lines[-1] | Should -Match '^\d+ passed, 0 failed$'
    }

    It 'computes with the ARM64 engine every tensor of every model exactly as the x64 engine does' {
        if ($Skip) { Set-ItResult -Skipped -Because $Skip; return }
        @($Arm.Lines -match '^engine: .*paths Scalar, Vector128, ArmDot agree$').Count | Should -Be 6
        $x64 = Get-Report $X64
        $arm = Get-Report $Arm
        $x64.Count | Should -BeGreaterThan 100
        $arm.Count | Should -Be $x64.Count
        for ($i = 0; $i -lt $x64.Count; $i++) { $arm[$i] | Should -BeExactly $x64[$i] -Because "line $i of the engine report" }
        # The emulation of CPUs without VNNI is compared too, and it is not the exact result on full-range weights.
        $exact = ($arm -match '^output cnn-qdq-u8-vnni#0 ') -replace '^output \S+ ', ''
        $emulated = ($arm -match '^output cnn-qdq-u8-vnni@avx2#0 ') -replace '^output \S+ ', ''
        $emulated | Should -Not -BeNullOrEmpty
        $emulated | Should -Not -Be $exact
    }

    It 'runs the kernels exactly on an ARM64 CPU without the dot product (Cortex-A72: the Vector128 path)' {
        if ($Skip) { Set-ItResult -Skipped -Because $Skip; return }
        $ArmNoDot.ExitCode | Should -Be 0 -Because ($ArmNoDot.Lines -join "`n")
        $ArmNoDot.Lines[0] | Should -Match '^arch: Arm64, AdvSimd: True, Dp: False, best path: Vector128, paths: Scalar, Vector128,'
        @($ArmNoDot.Lines -match '^kernels: .*x 2 paths, exact').Count | Should -Be 11
    }
}
