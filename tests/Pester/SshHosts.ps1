# Local SSH "hosts" for the remoting tests: each is an sshd of Debian's openssh-server on 127.0.0.1, on its own free
# port, with its own host key, and a PowerShell subsystem that runs this pwsh (7.6.9, the local tool) with a HOME of
# its own, so each host has its own user module path and cache. Nothing depends on a system sshd. Dot-source it.

$script:Sshd = if ($env:PTQTOOLS_TEST_SSHD) { $env:PTQTOOLS_TEST_SSHD } else { '/usr/sbin/sshd' }

# Fails (throws) with the reason when the hosts cannot be started here. Where openssh-server is not installed at all
# (and build.ps1 could not install it), Remoting.Tests.ps1 skips its blocks with the reason before this runs
# (TestData.ps1, Get-MissingPackageReason): counted as skipped, never as passed.
function Assert-SshServer {
    if (-not $IsLinux) { throw 'The remoting test starts OpenSSH servers on 127.0.0.1 and runs on Linux only.' }
    if (-not (Test-Path $Sshd)) {
        throw "OpenSSH's server ($Sshd) is not installed: install Debian's openssh-server (apt-get install openssh-server, as root; build.ps1 -Task Test does it when it can). The remoting test starts its own sshd instances and needs that binary."
    }
    if (-not (Get-Command ssh -ErrorAction SilentlyContinue)) { throw 'The ssh client is not installed (Debian: openssh-client); PowerShell remoting over SSH runs it.' }
    # OpenSSH's privilege separation directory (Debian's sshd refuses to start without it; systemd would create it).
    if (-not (Test-Path /run/sshd)) { $null = New-Item -ItemType Directory /run/sshd -Force }
}

function Get-FreePort {
    $listener = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0)
    $listener.Start()
    try { $listener.LocalEndpoint.Port } finally { $listener.Stop() }
}

# The client key that both hosts accept.
function New-SshClientKey([string] $Folder) {
    $key = Join-Path $Folder 'client_ed25519'
    & ssh-keygen -q -t ed25519 -N '' -C ptqtools-test -f $key
    if ($LASTEXITCODE -ne 0) { throw "ssh-keygen failed ($LASTEXITCODE)." }
    $key
}

# Starts one host; returns an object with its name, port, HOME, the sshd process and its log.
function Start-SshHost([string] $Name, [string] $Folder, [string] $ClientKey) {
    $dir = Join-Path $Folder $Name
    $homeDir = Join-Path $dir 'home'
    $tmpDir = Join-Path $dir 'tmp'
    $null = New-Item -ItemType Directory $dir, $homeDir, $tmpDir -Force
    $hostKey = Join-Path $dir 'ssh_host_ed25519_key'
    & ssh-keygen -q -t ed25519 -N '' -C $Name -f $hostKey
    if ($LASTEXITCODE -ne 0) { throw "ssh-keygen failed ($LASTEXITCODE)." }
    Copy-Item "$ClientKey.pub" (Join-Path $dir 'authorized_keys')

    # The PowerShell subsystem: this pwsh in server mode, with the host's own HOME (user module path, caches) and
    # temporary folder (what a killed host leaves there goes with the test drive).
    $wrapper = Join-Path $dir 'pwsh-subsystem.sh'
    $dotnet = (Get-Command dotnet -CommandType Application | Select-Object -First 1).Source
    Set-Content -Path $wrapper -Value @(
        '#!/bin/sh'
        "export HOME='$homeDir'"
        "export TMPDIR='$tmpDir'"
        'unset XDG_DATA_HOME XDG_CONFIG_HOME XDG_CACHE_HOME PTQTOOLS_CACHE PSModulePath'
        "exec '$dotnet' '$(Join-Path $PSHOME 'pwsh.dll')' -sshs -NoLogo -NoProfile"
    )
    & chmod 755 $wrapper

    $port = Get-FreePort
    $config = Join-Path $dir 'sshd_config'
    Set-Content -Path $config -Value @(
        "Port $port"
        'ListenAddress 127.0.0.1'
        "HostKey $hostKey"
        "AuthorizedKeysFile $(Join-Path $dir 'authorized_keys')"
        "PidFile $(Join-Path $dir 'sshd.pid')"
        'StrictModes no'
        'PermitRootLogin prohibit-password'
        'PubkeyAuthentication yes'
        'PasswordAuthentication no'
        'KbdInteractiveAuthentication no'
        'UsePAM no'
        'UseDNS no'
        "Subsystem powershell $wrapper"
    )
    $log = Join-Path $dir 'sshd.log'
    $process = Start-Process -FilePath $Sshd -ArgumentList '-D', '-e', '-f', $config -RedirectStandardError $log -PassThru
    $deadline = [DateTime]::UtcNow.AddSeconds(15)
    while ($true) {
        if ($process.HasExited) { throw "sshd for $Name exited ($($process.ExitCode)): $(Get-Content -Raw $log)" }
        if ((Get-Content -Raw $log -ErrorAction SilentlyContinue) -match 'Server listening') { break }
        if ([DateTime]::UtcNow -gt $deadline) { throw "sshd for $Name did not start listening on port ${port}: $(Get-Content -Raw $log)" }
        Start-Sleep -Milliseconds 50
    }
    [pscustomobject]@{ Name = $Name; Port = $port; Home = $homeDir; Process = $process; Log = $log; Folder = $dir }
}

# The host as PowerShell remoting reaches it (the options keep this test's keys out of ~/.ssh/known_hosts).
function New-SshHostSession($SshHost, [string] $ClientKey) {
    New-PSSession -HostName 127.0.0.1 -Port $SshHost.Port -UserName root -KeyFilePath $ClientKey -Name $SshHost.Name `
        -Options @{ StrictHostKeyChecking = 'no'; UserKnownHostsFile = '/dev/null'; LogLevel = 'ERROR'; ServerAliveInterval = '15' } -ErrorAction Stop
}

# The host drops: its sshd and every process under it (sessions, their pwsh) are killed at once, as a machine that
# goes off the network.
function Stop-SshHost($SshHost) {
    $all = Get-Process
    $tree = [Collections.Generic.List[int]]::new()
    $tree.Add($SshHost.Process.Id)
    for ($i = 0; $i -lt $tree.Count; $i++) {
        foreach ($p in $all) { if ($p.Parent -and $p.Parent.Id -eq $tree[$i] -and -not $tree.Contains($p.Id)) { $tree.Add($p.Id) } }
    }
    foreach ($id in $tree) { & kill -9 $id 2>$null }
    $null = $SshHost.Process.WaitForExit(5000)
}
