# PtqTools over PowerShell remoting: calibration shards and batch quantization fanned out to other hosts through
# PSSessions (SSH or WinRM), with every host's lost work recomputed on the hosts that remain.
# Dot-source it from the installed module:
#     . (Join-Path (Get-Module PtqTools -ListAvailable)[0].ModuleBase 'PtqTools.Remoting.ps1')
# Get-Help about_PtqTools_Calibration explains the recipe; the repository's tests/Pester/Remoting.Tests.ps1 runs it
# over two sshd hosts, one of them killed mid-run.

function Install-PtqRemoteModule {
    <#
    .SYNOPSIS
        Installs PtqTools on each host from its nupkg, for the current user, and imports it in every session: the
        nupkg is copied over the session (-PackagePath), or read by the hosts from a folder they all see (-HostFeed).
    .OUTPUTS
        One object per session: ComputerName, Version, ModuleBase (the installed module's folder on that host).
    #>
    [CmdletBinding(DefaultParameterSetName = 'Copy')]
    param(
        [Parameter(Mandatory)] [System.Management.Automation.Runspaces.PSSession[]] $Session,
        # The nupkg here, or the folder holding it (build.ps1 -Task Package writes
        # out/package/PtqTools.<version>.nupkg).
        [Parameter(Mandatory, ParameterSetName = 'Copy')] [string] $PackagePath,
        # A folder holding the nupkg as the hosts see it (a share, or a copy on each host); nothing is copied.
        [Parameter(Mandatory, ParameterSetName = 'Feed')] [string] $HostFeed,
        # The version to install (default: the newest nupkg of -PackagePath; with -HostFeed, the newest in the feed).
        [string] $Version
    )
    Set-StrictMode -Version Latest
    # One install per host and user (sessions to the same account share its module path), all at the same time;
    # then every session imports it.
    $installers = @($Session | Group-Object {
            $c = $_.Runspace.ConnectionInfo
            "$($c.ComputerName):$($c.Port):$($c.UserName)"
        } | ForEach-Object { $_.Group[0] })
    $copy = $PSCmdlet.ParameterSetName -eq 'Copy'
    $feed = "ptqtools-feed-$([guid]::NewGuid().ToString('N'))"
    if ($copy) {
        $package = Get-Item -LiteralPath $PackagePath -ErrorAction Stop
        if ($package.PSIsContainer) {
            $package = Get-ChildItem -LiteralPath $package.FullName -Filter 'PtqTools.*.nupkg' |
                Where-Object { -not $Version -or $_.Name -eq "PtqTools.$Version.nupkg" } |
                Sort-Object LastWriteTime | Select-Object -Last 1
            if (-not $package) { throw "No PtqTools.$($Version ? $Version : '*').nupkg in '$PackagePath'." }
        }
        $Version = [regex]::Match($package.Name, '^PtqTools\.(.+)\.nupkg$').Groups[1].Value
        # A feed folder of the same name in each host's temporary folder.
        foreach ($s in $installers) {
            $folder = Invoke-Command -Session $s -ArgumentList $feed -ErrorAction Stop -ScriptBlock {
                param($Feed)
                (New-Item -ItemType Directory -Force (Join-Path ([IO.Path]::GetTempPath()) $Feed)).FullName
            }
            Copy-Item -LiteralPath $package.FullName -Destination $folder -ToSession $s -ErrorAction Stop
        }
    }
    $arguments = $feed, $Version, $HostFeed
    $installed = Invoke-Command -Session $installers -ErrorAction Stop -ArgumentList $arguments -ScriptBlock {
        param($Feed, $Version, $HostFeed)
        $ErrorActionPreference = 'Stop'
        $folder = if ($HostFeed) { $HostFeed } else { Join-Path ([IO.Path]::GetTempPath()) $Feed }
        Register-PSResourceRepository -Name $Feed -Uri $folder -Trusted
        try {
            $p = @{ Name = 'PtqTools'; Repository = $Feed; Scope = 'CurrentUser'; TrustRepository = $true }
            if ($Version) { $p.Version = $Version }
            $r = Install-PSResource @p -Reinstall -Quiet -PassThru | Where-Object Name -EQ 'PtqTools'
            "$($r.Version)"
        } finally {
            Unregister-PSResourceRepository -Name $Feed
            if (-not $HostFeed) { Remove-Item -LiteralPath $folder -Recurse -Force }
        }
    }
    $required = @($installed)[0]
    Invoke-Command -Session $Session -ErrorAction Stop -ArgumentList $required -ScriptBlock {
        param($Version)
        Import-Module PtqTools -RequiredVersion $Version -Force -ErrorAction Stop
        $m = Get-Module PtqTools
        [pscustomobject]@{
            ComputerName = [Environment]::MachineName; Version = "$($m.Version)"; ModuleBase = $m.ModuleBase
        }
    } | Sort-Object { [array]::IndexOf(@($Session.InstanceId), $_.RunspaceId) }
}

function Invoke-PtqHostQueue {
    <#
    .SYNOPSIS
        Runs a script block for each item on whichever host is free, one item per host at a time; when a host drops
        (its session breaks), the item it held goes back in the queue for the others. Emits each item's output, in
        item order, once every item is done.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [System.Management.Automation.Runspaces.PSSession[]] $Session,
        [Parameter(Mandatory)] [object[]] $Item,
        # Runs on the host: param($Item, $Argument).
        [Parameter(Mandatory)] [scriptblock] $ScriptBlock,
        # Runs here before an item goes to a host: param($Session, $Item); its output is the $Argument.
        [scriptblock] $Prepare,
        # Runs here when a host finished an item: param($Session, $Item, $Output); its output is the item's result.
        [scriptblock] $Complete
    )
    Set-StrictMode -Version Latest
    $queue = [Collections.Generic.Queue[int]]::new()
    for ($i = 0; $i -lt $Item.Count; $i++) { $queue.Enqueue($i) }
    $hosts = [Collections.Generic.List[object]]::new()
    foreach ($s in $Session) { if ($s.State -eq 'Opened') { $hosts.Add($s) } }
    $results = @{}
    $running = @{}   # job id -> @{ Job; Session; Index }

    # A host is lost when the transport failed or its session can no longer run a command; any other error is the
    # work's own and would fail on every host, so it stops the run.
    function Test-HostLost($s, $reason) {
        $e = if ($reason -is [System.Management.Automation.ErrorRecord]) { $reason.Exception } else { $reason }
        if ($e -is [System.Management.Automation.Remoting.PSRemotingTransportException] -or
            $e -is [System.Management.Automation.Runspaces.InvalidRunspaceStateException]) { return $true }
        if ($s.State -ne 'Opened') { return $true }
        $alive = try { Invoke-Command -Session $s -ScriptBlock { $true } -ErrorAction Stop } catch { $false }
        -not $alive
    }
    function Remove-Host($s, [int] $index, $reason) {
        $message = if ($reason -is [System.Management.Automation.ErrorRecord]) { $reason.Exception.Message }
            elseif ($reason -is [Exception]) { $reason.Message } else { "$reason" }
        Write-Warning ("Host $($s.ComputerName) (session $($s.Name)) dropped ($message); " +
            "item $index goes to another host.")
        $null = $hosts.Remove($s)
        $queue.Enqueue($index)
    }

    try {
        while ($queue.Count -gt 0 -or $running.Count -gt 0) {
            foreach ($s in @($hosts)) {
                if ($queue.Count -eq 0) { break }
                if (@($running.Values | Where-Object { $_.Session -eq $s }).Count) { continue }
                $index = $queue.Dequeue()
                try {
                    $argument = if ($Prepare) { & $Prepare $s $Item[$index] }
                    $job = Invoke-Command -Session $s -ScriptBlock $ScriptBlock -ArgumentList $Item[$index], $argument `
                        -AsJob -ErrorAction Stop
                    $running[$job.Id] = @{ Job = $job; Session = $s; Index = $index }
                    Write-Verbose "Item $index on $($s.ComputerName) (session $($s.Name))."
                } catch {
                    if (Test-HostLost $s $_) { Remove-Host $s $index $_ } else { throw }
                }
            }
            if ($running.Count -eq 0) {
                if ($queue.Count -gt 0) { throw "No host is left; items $(@($queue) -join ', ') are not done." }
                break
            }
            $job = Wait-Job -Job @($running.Values | ForEach-Object Job) -Any
            $entry = $running[$job.Id]
            $running.Remove($job.Id)
            $errors = $null
            $output = Receive-Job -Job $job -ErrorAction SilentlyContinue -ErrorVariable errors
            $reason = if ($errors) { $errors[0] }
                elseif ($job.State -ne 'Completed') { $job.ChildJobs[0].JobStateInfo.Reason ?? "Job $($job.State)." }
            Remove-Job -Job $job -Force
            if ($reason) {
                # What a lost host sent before it dropped is discarded: the item is done again, whole, elsewhere.
                if (Test-HostLost $entry.Session $reason) {
                    Remove-Host $entry.Session $entry.Index $reason
                    continue
                }
                if ($reason -is [System.Management.Automation.ErrorRecord]) {
                    $PSCmdlet.ThrowTerminatingError($reason)
                }
                throw $reason
            }
            if ($Complete) {
                try { $output = & $Complete $entry.Session $Item[$entry.Index] $output }
                catch {
                    if (Test-HostLost $entry.Session $_) { Remove-Host $entry.Session $entry.Index $_; continue }
                    throw
                }
            }
            $results[$entry.Index] = $output
        }
    } finally {
        foreach ($entry in $running.Values) { Remove-Job -Job $entry.Job -Force -ErrorAction SilentlyContinue }
    }
    for ($i = 0; $i -lt $Item.Count; $i++) { $results[$i] }
}

# A folder of its own on each host (hosts may share a file system), removed at the end.
function New-PtqRemoteFolder($Session) {
    Invoke-Command -Session $Session -ErrorAction Stop -ScriptBlock {
        $name = "ptqtools-work-$([guid]::NewGuid().ToString('N'))"
        (New-Item -ItemType Directory -Force (Join-Path ([IO.Path]::GetTempPath()) $name)).FullName
    }
}
function Remove-PtqRemoteFolder([hashtable] $Folders, [System.Management.Automation.Runspaces.PSSession[]] $Session) {
    foreach ($s in $Session) {
        $folder = $Folders[$s.InstanceId]
        if ($folder -and $s.State -eq 'Opened') {
            Invoke-Command -Session $s -ArgumentList $folder -ErrorAction SilentlyContinue -ScriptBlock {
                param($Folder) Remove-Item -LiteralPath $Folder -Recurse -Force -ErrorAction SilentlyContinue
            }
        }
    }
}

function Measure-PtqRemoteActivationRange {
    <#
    .SYNOPSIS
        Calibrates a model on other hosts, one shard of the data set per job: the model is copied to each host,
        each shard (-Skip/-MaxSamples of the data set) measured there with Measure-ActivationRange, and the
        statistics of every shard returned, in shard order, with ModelPath set to the local model. A shard whose host
        drops is measured again on another host. Pipe the output to Merge-ActivationRange.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [System.Management.Automation.Runspaces.PSSession[]] $Session,
        # The model here; it is copied to each host.
        [Parameter(Mandatory)] [string] $ModelPath,
        # Runs on the host and returns its shard of the data set: param($Skip, $MaxSamples), with paths as the host
        # sees them.
        [Parameter(Mandatory)] [scriptblock] $DataSet,
        [Parameter(Mandatory)] [ValidateRange(1, [int]::MaxValue)] [int] $SampleCount,
        [Parameter(Mandatory)] [ValidateRange(1, [int]::MaxValue)] [int] $ShardSize,
        # More parameters of Measure-ActivationRange (the same for every shard), e.g. @{ Method = 'Entropy' }.
        [hashtable] $Parameter = @{}
    )
    Set-StrictMode -Version Latest
    $localModel = (Resolve-Path -LiteralPath $ModelPath -ErrorAction Stop).ProviderPath
    $shards = for ($skip = 0; $skip -lt $SampleCount; $skip += $ShardSize) {
        @{ Skip = $skip; MaxSamples = [Math]::Min($ShardSize, $SampleCount - $skip) }
    }
    $remoteFolders = @{}
    $prepare = {
        param($s, $shard)
        if (-not $remoteFolders.ContainsKey($s.InstanceId)) {
            # On the host under a plain name (no wildcard characters); the statistics carry its SHA-256.
            $folder = New-PtqRemoteFolder $s
            Copy-Item -LiteralPath $localModel -Destination (Join-Path $folder 'model.onnx') -ToSession $s `
                -ErrorAction Stop
            $remoteFolders[$s.InstanceId] = $folder
        }
        $remoteModel = Join-Path $remoteFolders[$s.InstanceId] 'model.onnx'
        @{ ModelPath = $remoteModel; DataSet = "$DataSet"; Parameter = $Parameter }
    }
    $measure = {
        param($Shard, $Work)
        $ErrorActionPreference = 'Stop'
        Import-Module PtqTools
        $data = & ([scriptblock]::Create($Work.DataSet)) $Shard.Skip $Shard.MaxSamples
        $p = $Work.Parameter
        Measure-ActivationRange -Path $Work.ModelPath -DataSet $data @p
    }
    try {
        Invoke-PtqHostQueue -Session $Session -Item $shards -ScriptBlock $measure -Prepare $prepare | ForEach-Object {
            # The statistics name the host's copy; here they belong to the local model (the same SHA-256).
            $_.ModelPath = $localModel
            $_
        }
    } finally { Remove-PtqRemoteFolder $remoteFolders $Session }
}

function Invoke-PtqRemoteQuantization {
    <#
    .SYNOPSIS
        Quantizes models on other hosts, one model per job: each model is copied to a free host, calibrated and
        quantized there with Invoke-Quantization, and the quantized model copied back to -OutputFolder as
        <name>.int8.onnx. A model whose host drops is quantized again on another host. Emits Invoke-Quantization's
        result per model (OutputPath is the local file, PSComputerName the host that made it).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [System.Management.Automation.Runspaces.PSSession[]] $Session,
        [Parameter(Mandatory)] [string[]] $Path,
        [Parameter(Mandatory)] [string] $OutputFolder,
        # Runs on the host and returns the calibration data set (New-PtqDataSet), paths as the host sees them.
        [scriptblock] $DataSet,
        # More parameters of Invoke-Quantization, e.g. @{ ActivationType = 'Int8' } or @{ Mode = 'Dynamic' }.
        [hashtable] $Parameter = @{}
    )
    Set-StrictMode -Version Latest
    $models = @(foreach ($p in $Path) { (Resolve-Path -LiteralPath $p -ErrorAction Stop).ProviderPath })
    $twice = $models | Group-Object { [IO.Path]::GetFileNameWithoutExtension($_) } | Where-Object Count -GT 1
    if ($twice) { throw "Models with the same name would write the same output: $(@($twice.Group) -join ', ')." }
    $localFolder = (New-Item -ItemType Directory -Force $OutputFolder).FullName
    $remoteFolders = @{}
    $prepare = {
        param($s, $model)
        if (-not $remoteFolders.ContainsKey($s.InstanceId)) { $remoteFolders[$s.InstanceId] = New-PtqRemoteFolder $s }
        $folder = $remoteFolders[$s.InstanceId]
        # On the host under a plain name (no wildcard characters).
        $name = [regex]::Replace([IO.Path]::GetFileNameWithoutExtension($model), '[^\w.-]', '_')
        Copy-Item -LiteralPath $model -Destination (Join-Path $folder "$name.onnx") -ToSession $s -ErrorAction Stop
        @{
            ModelPath = Join-Path $folder "$name.onnx"; OutputPath = Join-Path $folder "$name.int8.onnx"
            DataSet = "$DataSet"; Parameter = $Parameter
        }
    }
    $quantize = {
        param($Model, $Work)
        $ErrorActionPreference = 'Stop'
        Import-Module PtqTools
        $p = $Work.Parameter
        if ($Work.DataSet) { $p['DataSet'] = & ([scriptblock]::Create($Work.DataSet)) }
        try { Invoke-Quantization -Path $Work.ModelPath -OutputPath $Work.OutputPath -Force @p }
        finally { Remove-Item -LiteralPath $Work.ModelPath -Force -ErrorAction SilentlyContinue }
    }
    $complete = {
        param($s, $model, $result)
        $target = Join-Path $localFolder "$([IO.Path]::GetFileNameWithoutExtension($model)).int8.onnx"
        $remote = $result.OutputPath
        Copy-Item -LiteralPath $remote -Destination $target -FromSession $s -Force -ErrorAction Stop
        Invoke-Command -Session $s -ArgumentList $remote -ScriptBlock { param($f) Remove-Item -LiteralPath $f -Force }
        $result.OutputPath = $target
        $result
    }
    try {
        Invoke-PtqHostQueue -Session $Session -Item $models -ScriptBlock $quantize -Prepare $prepare -Complete $complete
    }
    finally { Remove-PtqRemoteFolder $remoteFolders $Session }
}
