# Issue 9 against the built module: data faults, cancellation, concurrency and hostile models.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $moduleDir = Split-Path $env:PTQTOOLS_MODULE
    # The generated ONNX classes and SkiaSharp the module ships, to build small models and images here.
    Add-Type -Path (Join-Path $moduleDir 'Google.Protobuf.dll'), (Join-Path $moduleDir 'OnnxSharp.dll'), (Join-Path $moduleDir 'SkiaSharp.dll')

    function New-Tensor([string] $Name, [long[]] $Dims, [Random] $Random) {
        $n = 1; foreach ($d in $Dims) { $n *= $d }
        $values = [float[]]::new($n)
        for ($i = 0; $i -lt $n; $i++) { $values[$i] = [float]($Random.NextDouble() - 0.5) }
        $bytes = [byte[]]::new($n * 4)
        [Buffer]::BlockCopy($values, 0, $bytes, 0, $bytes.Length)
        $t = [Onnx.TensorProto]::new()
        $t.Name = $Name; $t.DataType = 1; $t.Dims.AddRange($Dims)
        $t.RawData = [Google.Protobuf.ByteString]::CopyFrom($bytes)
        $t
    }
    function New-Value([string] $Name, [long[]] $Dims) {
        $shape = [Onnx.TensorShapeProto]::new()
        foreach ($d in $Dims) { $dim = [Onnx.TensorShapeProto+Types+Dimension]::new(); $dim.DimValue = $d; $shape.Dim.Add($dim) }
        $tensor = [Onnx.TypeProto+Types+Tensor]::new(); $tensor.ElemType = 1; $tensor.Shape = $shape
        $type = [Onnx.TypeProto]::new(); $type.TensorType = $tensor
        $v = [Onnx.ValueInfoProto]::new(); $v.Name = $Name; $v.Type = $type
        $v
    }
    function New-Node([string] $Op, [string] $Name, [string[]] $Inputs, [string[]] $Outputs, [hashtable] $Ints = @{}) {
        $n = [Onnx.NodeProto]::new(); $n.OpType = $Op; $n.Name = $Name
        $n.Input.AddRange($Inputs); $n.Output.AddRange($Outputs)
        foreach ($k in $Ints.Keys) {
            $a = [Onnx.AttributeProto]::new(); $a.Name = $k
            if ($Ints[$k] -is [array]) { $a.Type = 'Ints'; $a.Ints.AddRange([long[]]$Ints[$k]) } else { $a.Type = 'Int'; $a.I = $Ints[$k] }
            $n.Attribute.Add($a)
        }
        $n
    }
    # A small CNN on 3x16x16 images: Conv, Relu, Conv, GlobalAveragePool, Flatten, Gemm. Different seeds give different weights.
    function New-TinyCnn([string] $Path, [int] $Seed = 1) {
        $r = [Random]::new($Seed)
        $m = [Onnx.ModelProto]::new(); $m.IrVersion = 8; $m.ProducerName = 'Reliability.Tests'
        $op = [Onnx.OperatorSetIdProto]::new(); $op.Version = 13; $m.OpsetImport.Add($op)
        $g = [Onnx.GraphProto]::new(); $g.Name = 'tiny'; $m.Graph = $g
        $g.Input.Add((New-Value 'x' 1, 3, 16, 16))
        $g.Initializer.Add((New-Tensor 'w1' (8, 3, 3, 3) $r)); $g.Initializer.Add((New-Tensor 'b1' (, 8) $r))
        $g.Initializer.Add((New-Tensor 'w2' (8, 8, 3, 3) $r)); $g.Initializer.Add((New-Tensor 'b2' (, 8) $r))
        $g.Initializer.Add((New-Tensor 'w3' (10, 8) $r)); $g.Initializer.Add((New-Tensor 'b3' (, 10) $r))
        $g.Node.Add((New-Node Conv conv1 x, w1, b1 c1 @{ pads = @(1, 1, 1, 1) }))
        $g.Node.Add((New-Node Relu relu1 c1 r1))
        $g.Node.Add((New-Node Conv conv2 r1, w2, b2 c2 @{ pads = @(1, 1, 1, 1) }))
        $g.Node.Add((New-Node Relu relu2 c2 r2))
        $g.Node.Add((New-Node GlobalAveragePool gap r2 p))
        $g.Node.Add((New-Node Flatten flat p f))
        $g.Node.Add((New-Node Gemm fc f, w3, b3 y @{ transB = 1 }))
        $g.Output.Add((New-Value 'y' 1, 10))
        [IO.File]::WriteAllBytes($Path, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
        $Path
    }
    function New-Png([string] $Path, [int] $Seed) {
        $bmp = [SkiaSharp.SKBitmap]::new(16, 16)
        $r = [Random]::new($Seed)
        for ($y = 0; $y -lt 16; $y++) { for ($x = 0; $x -lt 16; $x++) { $bmp.SetPixel($x, $y, [SkiaSharp.SKColor]::new($r.Next(256), $r.Next(256), $r.Next(256))) } }
        $data = [SkiaSharp.SKImage]::FromBitmap($bmp).Encode([SkiaSharp.SKEncodedImageFormat]::Png, 100)
        [IO.File]::WriteAllBytes($Path, $data.ToArray())
    }
    function New-ImageFolder([string] $Path, [int] $Count) {
        $null = New-Item -ItemType Directory $Path -Force
        foreach ($i in 1..$Count) { New-Png (Join-Path $Path "img$i.png") $i }
        $Path
    }
    function Get-Hashes([string[]] $Paths) {
        Get-ChildItem -LiteralPath $Paths -File -Recurse | Sort-Object FullName | ForEach-Object { "$($_.FullName)=$((Get-FileHash -LiteralPath $_.FullName).Hash)" }
    }
    # Nothing under the folder but what was there before: no output, no temporary file.
    function Get-Listing([string] $Folder) { @(Get-ChildItem -LiteralPath $Folder -Force -Recurse | ForEach-Object FullName | Sort-Object) }
    $script:IsRoot = (id -u) -eq '0'
    function Mount-Tmpfs([string] $Path, [string] $Options) {
        $null = New-Item -ItemType Directory $Path -Force
        & mount -t tmpfs -o $Options tmpfs $Path 2>&1 | Out-Null
        return $LASTEXITCODE -eq 0
    }

    $script:Model = New-TinyCnn (Join-Path $TestDrive 'tiny.onnx') 1
    $script:Images = New-ImageFolder (Join-Path $TestDrive 'images') 6
    $script:ImageData = New-PtqDataSet $Images -Resize 16
}

Describe 'Data faults end in a clear error, the source untouched and no partial output' {
    BeforeEach {
        $script:work = Join-Path $TestDrive "work-$([guid]::NewGuid().ToString('N'))"
        $null = New-Item -ItemType Directory $work
        $script:before = Get-Hashes $Model, $Images
        $script:out = Join-Path $work 'out.int8.onnx'
    }
    AfterEach {
        Get-Hashes $Model, $Images | Should -Be $before
    }

    It 'quantizes the clean data set (the baseline the faults are measured against)' {
        $r = Invoke-Quantization -Path $Model -DataSet $ImageData -OutputPath $out
        $r.OutputPath | Should -Be $out
        (Get-OnnxModel $out).QuantizedFrom | Should -Be (Get-FileHash $Model).Hash
    }

    It 'an undecodable image: ImageNotDecodable naming the file' {
        $folder = New-ImageFolder (Join-Path $work 'bad') 3
        [IO.File]::WriteAllBytes((Join-Path $folder 'img2.png'), [byte[]](1..300 | ForEach-Object { ($_ * 31) % 256 }))
        $ds = New-PtqDataSet $folder -Resize 16
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ds -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ImageNotDecodable,*'
        $e.CategoryInfo.Category | Should -Be 'InvalidData'
        $e.Exception.Message | Should -Match 'img2.png'
        Get-Listing $work | Should -Not -Contain $out
        Get-ChildItem $work -Filter *.tmp -Force -Recurse | Should -BeNullOrEmpty
    }

    It 'a truncated image: ImageNotDecodable, not a partly decoded sample' {
        $folder = New-ImageFolder (Join-Path $work 'cut') 3
        $file = Join-Path $folder 'img3.png'
        $bytes = [IO.File]::ReadAllBytes($file)
        [IO.File]::WriteAllBytes($file, $bytes[0..([int]($bytes.Length / 2))])
        $ds = New-PtqDataSet $folder -Resize 16
        $e = Get-ErrorRecord { Measure-ActivationRange -Path $Model -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ImageNotDecodable,*'
        $e.Exception.Message | Should -Match 'img3.png'
    }

    It 'an image that vanishes after the data set was described: DataSetFileMissing' {
        $folder = New-ImageFolder (Join-Path $work 'vanish') 4
        $ds = New-PtqDataSet $folder -Resize 16
        Remove-Item (Join-Path $folder 'img3.png')
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ds -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetFileMissing,*'
        $e.CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $e.Exception.Message | Should -Match 'img3.png'
        Test-Path $out | Should -BeFalse
    }

    It 'an image that vanishes while the run is under way: DataSetFileMissing, no output' {
        $folder = New-ImageFolder (Join-Path $work 'midrun') 1
        foreach ($i in 2..200) { Copy-Item (Join-Path $folder 'img1.png') (Join-Path $folder ('img{0:D4}.png' -f $i)) }
        # Not the 200th: every 10th sample is held out of calibration (for the fidelity check), so the 199th is read.
        $last = Get-ChildItem $folder | Sort-Object Name | Select-Object -Last 2 | Select-Object -First 1
        $ds = New-PtqDataSet $folder -Resize 16
        $ps = [powershell]::Create()
        $null = $ps.AddScript({
                param($module, $m, $d, $o)
                Import-Module $module
                try { $null = Invoke-Quantization -Path $m -DataSet $d -OutputPath $o -ErrorAction Stop; 'completed' } catch { $_.FullyQualifiedErrorId; $_.Exception.Message }
            }).AddArgument($env:PTQTOOLS_MODULE).AddArgument($Model).AddArgument($ds).AddArgument($out)
        $handle = $ps.BeginInvoke()
        # Once calibration reports progress, the last image goes.
        $clock = [Diagnostics.Stopwatch]::StartNew()
        while ($ps.Streams.Progress.Count -eq 0 -and -not $handle.IsCompleted -and $clock.Elapsed.TotalSeconds -lt 60) { Start-Sleep -Milliseconds 5 }
        Remove-Item $last.FullName
        $result = $ps.EndInvoke($handle)
        $ps.Dispose()
        $result[0] | Should -BeLike 'DataSetFileMissing,*'
        $result[1] | Should -Match $last.Name
        Test-Path $out | Should -BeFalse
        Get-ChildItem $work -Filter *.tmp -Force -Recurse | Should -BeNullOrEmpty
    }

    It 'a truncated IDX file: IdxNotReadable when described, and when it shrinks after that' {
        $idx = Join-Path $work 'images-idx3-ubyte'
        $header = [byte[]](0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 16, 0, 0, 0, 16)
        [IO.File]::WriteAllBytes($idx, $header + [byte[]]::new(16 * 16 * 3 + 7))   # 3 images and a bit of 10
        $e = Get-ErrorRecord { New-PtqDataSet $idx -Channels 3 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'IdxNotReadable,*'
        $e.Exception.Message | Should -Match 'truncated'
        [IO.File]::WriteAllBytes($idx, $header + [byte[]]::new(16 * 16 * 10))
        $ds = New-PtqDataSet $idx -Channels 3
        [IO.File]::WriteAllBytes($idx, $header + [byte[]]::new(16 * 16 * 4))
        $e = Get-ErrorRecord { Measure-ActivationRange -Path $Model -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'IdxNotReadable,*'
        $e.CategoryInfo.Category | Should -Be 'InvalidData'
        Remove-Item $idx
        $e = Get-ErrorRecord { Measure-ActivationRange -Path $Model -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetFileMissing,*'
    }

    It 'a .npy file whose header claims 300 MB it does not hold: NpyNotReadable naming the shortfall' {
        $npy = Join-Path $work 'claim.npy'
        $head = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 3, 16, 16), }".PadRight(117) + "`n"
        $bytes = [byte[]](0x93) + [Text.Encoding]::ASCII.GetBytes('NUMPY') + [byte[]](1, 0, 118, 0) + [Text.Encoding]::ASCII.GetBytes($head) + [byte[]]::new(64)
        [IO.File]::WriteAllBytes($npy, $bytes)
        $e = Get-ErrorRecord { New-PtqDataSet $npy -ErrorAction Stop; Measure-ActivationRange -Path $Model -DataSet (New-PtqDataSet $npy) -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'NpyNotReadable,*'
        $e.Exception.Message | Should -Match 'truncated'
    }

    It 'arrays of the wrong shape: DataShapeMismatch naming the expected shape' {
        $ds = New-PtqDataSet -InputObject (1..2 | ForEach-Object { , [float[]]::new(3 * 8 * 8) }) -Shape 3, 8, 8
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ds -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataShapeMismatch,*'
        $e.Exception.Message | Should -Match '\[\?,3,16,16\]|\[1,3,16,16\]'
        Test-Path $out | Should -BeFalse
    }

    It 'samples of the wrong element type: DataTypeMismatch' {
        # An int64 TensorProto sample for a float input.
        $t = [Onnx.TensorProto]::new(); $t.Name = 'x'; $t.DataType = 7; $t.Dims.AddRange([long[]](1, 3, 16, 16))
        $t.Int64Data.AddRange([long[]]::new(3 * 16 * 16))
        $sample = Join-Path $work 'sample'
        $null = New-Item -ItemType Directory $sample
        [IO.File]::WriteAllBytes((Join-Path $sample 'input_0.pb'), [Google.Protobuf.MessageExtensions]::ToByteArray($t))
        $ds = New-PtqDataSet -LiteralPath $sample
        $e = Get-ErrorRecord { Measure-ActivationRange -Path $Model -DataSet $ds -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataTypeMismatch,*'
        $e.Exception.Message | Should -Match 'int64'
    }

    It 'NaN and infinity in a sample: SampleNotFinite naming the sample' -ForEach @(
        @{ Value = [float]::NaN }, @{ Value = [float]::PositiveInfinity }
    ) {
        $samples = 1..3 | ForEach-Object { $a = [float[]]::new(3 * 16 * 16); $a[5] = 0.5; , $a }
        $samples[1][7] = $Value
        $ds = New-PtqDataSet -InputObject $samples -Shape 3, 16, 16
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ds -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'SampleNotFinite,*'
        Test-Path $out | Should -BeFalse
    }

    It 'an empty data set: DataSetEmpty' {
        $empty = Join-Path $work 'empty'
        $null = New-Item -ItemType Directory $empty
        $e = Get-ErrorRecord { New-PtqDataSet $empty -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetEmpty,*'
        $e = Get-ErrorRecord { New-PtqDataSet $Images -Skip 6 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataSetEmpty,*'
    }

    It 'a read-only output folder: OutputNotWritable, nothing left behind' {
        $ro = Join-Path $work 'readonly'
        if ($IsRoot) {
            # chmod does not stop root: a read-only mount does.
            if (-not (Mount-Tmpfs $ro 'ro,size=1m')) { Set-ItResult -Skipped -Because 'mounting a read-only tmpfs failed'; return }
        } else {
            $null = New-Item -ItemType Directory $ro
            & chmod 555 $ro
        }
        try {
            $target = Join-Path $ro 'out.onnx'
            $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ImageData -OutputPath $target -ErrorAction Stop }
            $e.FullyQualifiedErrorId | Should -BeLike 'OutputNotWritable,*'
            # A read-only mount is a write error; a folder that refuses this user, permission denied.
            $e.CategoryInfo.Category | Should -Be $(if ($IsRoot) { 'WriteError' } else { 'PermissionDenied' })
            $stats = Measure-ActivationRange -Path $Model -DataSet $ImageData
            $e = Get-ErrorRecord { $stats | Export-ActivationRange -Path (Join-Path $ro 'ranges.json') -ErrorAction Stop }
            $e.FullyQualifiedErrorId | Should -BeLike 'OutputNotWritable,*'
            Get-Listing $ro | Should -BeNullOrEmpty
        } finally {
            if ($IsRoot) { & umount $ro } else { & chmod 755 $ro }
        }
    }

    It 'a full disk (a small tmpfs): OutputNotWritable, no partial file' {
        if (-not $IsRoot) { Set-ItResult -Skipped -Because 'mounting a tmpfs needs root (this run is not root)'; return }
        $full = Join-Path $work 'full'
        if (-not (Mount-Tmpfs $full 'size=64k')) { Set-ItResult -Skipped -Because 'mounting a tmpfs failed'; return }
        try {
            # Fill it up to the last few kilobytes: the quantized model (about 6 KB) does not fit.
            $filler = Join-Path $full 'filler'
            & dd if=/dev/zero of=$filler bs=1k count=62 2>&1 | Out-Null
            $target = Join-Path $full 'out.onnx'
            $e = Get-ErrorRecord { Invoke-Quantization -Path $Model -DataSet $ImageData -OutputPath $target -ErrorAction Stop }
            $e.FullyQualifiedErrorId | Should -BeLike 'OutputNotWritable,*'
            $e.Exception.Message | Should -Match 'space'
            Get-Listing $full | Should -Be @($filler)
            $report = Join-Path $full 'report.html'
            $r = Invoke-Quantization -Path $Model -DataSet $ImageData -OutputPath (Join-Path $work 'ok.onnx')
            $e = Get-ErrorRecord { $r | Export-QuantizationReport -Path $report -ErrorAction Stop }
            $e.FullyQualifiedErrorId | Should -BeLike 'OutputNotWritable,*'
            Get-Listing $full | Should -Be @($filler)
        } finally {
            & umount $full
        }
    }
}

Describe 'Cancellation at random points' {
    BeforeAll {
        # A long run on the tiny model: many samples, so a stop lands anywhere in calibration, the quantizer or the
        # evaluation.
        $random = [Random]::new(9)
        $script:LongData = New-PtqDataSet -InputObject (1..8000 | ForEach-Object { $a = [float[]]::new(3 * 16 * 16); for ($i = 0; $i -lt $a.Length; $i += 29) { $a[$i] = $random.NextDouble() }; , $a }) -Shape 3, 16, 16
        $script:Int8 = Join-Path $TestDrive 'tiny.int8.onnx'
        $null = Invoke-Quantization -Path $Model -DataSet $ImageData -OutputPath $Int8
        $script:rs = [runspacefactory]::CreateRunspace()
        $rs.Open()
        $ps = [powershell]::Create(); $ps.Runspace = $rs
        $null = $ps.AddScript({ param($m) Import-Module $m }).AddArgument($env:PTQTOOLS_MODULE).Invoke()
        $ps.Dispose()
        $script:stopFolder = Join-Path $TestDrive 'stops'
        $null = New-Item -ItemType Directory $stopFolder
        # Runs one command in the runspace, stops it after the given delay, and returns how it ended.
        function Invoke-Stopped([scriptblock] $Script, [object[]] $Arguments, [int] $DelayMs) {
            $ps = [powershell]::Create(); $ps.Runspace = $rs
            $null = $ps.AddScript($Script)
            foreach ($a in $Arguments) { $null = $ps.AddArgument($a) }
            $handle = $ps.BeginInvoke()
            Start-Sleep -Milliseconds $DelayMs
            $ps.Stop()
            $state = $ps.InvocationStateInfo.State
            $ps.Dispose()
            $state
        }
        $script:Runs = @{
            Calibration  = { param($m, $d) Measure-ActivationRange -Path $m -DataSet $d }
            Quantization = { param($m, $d, $o) Invoke-Quantization -Path $m -DataSet $d -OutputPath $o -Force }
            Evaluation   = { param($m, $d, $o, $q) Test-QuantizedModel -FloatModel $m -QuantizedModel $q -DataSet $d -LatencyRuns 0 }
        }
    }
    AfterAll { $rs.Dispose() }

    It 'stops <_> at random points; the session stays usable and no partial file is left' -ForEach 'Calibration', 'Quantization', 'Evaluation' {
        $random = [Random]::new(@{ Calibration = 1; Quantization = 2; Evaluation = 3 }[$_])
        $target = Join-Path $stopFolder "$_.onnx"
        $stopped = 0
        # Stops at random points of the run; a run that ended before its stop (a fast machine) makes the later delays
        # shorter, so that four stops land inside the run on any machine.
        $upper = 500
        $states = @()
        for ($i = 0; $i -lt 12 -and $stopped -lt 4; $i++) {
            $state = Invoke-Stopped $Runs[$_] @($Model, $LongData, $target, $Int8) ($random.Next(20, $upper))
            $states += $state
            if ($state -eq 'Stopped') { $stopped++ }
            elseif ($state -eq 'Completed') { $upper = [Math]::Max(40, [int]($upper / 2)) }
            # A stopped quantization never leaves its output or a temporary file.
            if ($state -eq 'Stopped') { Test-Path $target | Should -BeFalse }
            Get-ChildItem $stopFolder -Filter *.tmp -Force | Should -BeNullOrEmpty
            Remove-Item $target -ErrorAction SilentlyContinue
        }
        $stopped | Should -BeGreaterThan 3 -Because "the runs ended $($states -join ', ')"
        # The same runspace still works.
        $ps = [powershell]::Create(); $ps.Runspace = $rs
        $r = $ps.AddScript({ param($m, $d, $o) Invoke-Quantization -Path $m -DataSet $d -OutputPath $o -Force }).AddArgument($Model).AddArgument($ImageData).AddArgument($target).Invoke()
        $ps.HadErrors | Should -BeFalse
        $ps.Dispose()
        $r.OutputPath | Should -Be $target
    }

    It '100 cancelled runs do not grow native memory (resident set, after warm-up)' {
        $me = [Diagnostics.Process]::GetCurrentProcess()
        function Get-Rss { [GC]::Collect(); [GC]::WaitForPendingFinalizers(); [GC]::Collect(); $me.Refresh(); $me.WorkingSet64 }
        $random = [Random]::new(100)
        $kinds = 'Calibration', 'Quantization', 'Evaluation'
        $target = Join-Path $stopFolder 'leak.onnx'
        foreach ($i in 1..100) { $null = Invoke-Stopped $Runs[$kinds[$i % 3]] @($Model, $LongData, $target, $Int8) ($random.Next(20, 200)) }
        $warm = Get-Rss
        $stopped = 0
        foreach ($i in 1..100) {
            if ((Invoke-Stopped $Runs[$kinds[$i % 3]] @($Model, $LongData, $target, $Int8) ($random.Next(20, 200))) -eq 'Stopped') { $stopped++ }
        }
        $after = Get-Rss
        $growth = ($after - $warm) / 1MB
        Write-Host ("RSS after warm-up {0:N1} MiB, after 100 cancelled runs {1:N1} MiB: {2:+0.0;-0.0} MiB ({3} stopped)" -f ($warm / 1MB), ($after / 1MB), $growth, $stopped)
        $stopped | Should -BeGreaterThan 80
        # Tolerance: 24 MiB over 100 runs, for allocator arenas and the GC's own growth (docs/reliability.md gives the
        # measured figure). One ONNX Runtime session left behind per stop would pass it: 100 undisposed sessions of a
        # conformance Conv model hold 33.6 MiB.
        $growth | Should -BeLessThan 24
    }
}

Describe 'Concurrency: 8 runspaces give the bytes of serial runs' {
    It 'quantizes the same and different models at once, byte-identical to serial' {
        $folder = Join-Path $TestDrive 'concurrent'
        $null = New-Item -ItemType Directory $folder
        $models = @(New-TinyCnn (Join-Path $folder 'a.onnx') 11; New-TinyCnn (Join-Path $folder 'b.onnx') 12)
        $jobs = 0..7 | ForEach-Object { [pscustomobject]@{ Model = $models[$_ % 2]; Output = Join-Path $folder "par$_.onnx"; Serial = Join-Path $folder "ser$_.onnx" } }
        # New models, so the prepared-model cache is cold: the eight runs also race to prepare each model.
        $script = { param($module, $m, $d, $o) Import-Module $module; Invoke-Quantization -Path $m -DataSet $d -OutputPath $o | Select-Object -ExpandProperty OutputSha256 }
        $pool = [runspacefactory]::CreateRunspacePool(8, 8)
        $pool.Open()
        try {
            $running = foreach ($j in $jobs) {
                $ps = [powershell]::Create(); $ps.RunspacePool = $pool
                $null = $ps.AddScript($script).AddArgument($env:PTQTOOLS_MODULE).AddArgument($j.Model).AddArgument($ImageData).AddArgument($j.Output)
                [pscustomobject]@{ PowerShell = $ps; Handle = $ps.BeginInvoke() }
            }
            foreach ($r in $running) {
                $null = $r.PowerShell.EndInvoke($r.Handle)
                $r.PowerShell.Streams.Error | Should -BeNullOrEmpty
                $r.PowerShell.Dispose()
            }
        } finally { $pool.Dispose() }
        foreach ($j in $jobs) { $null = Invoke-Quantization -Path $j.Model -DataSet $ImageData -OutputPath $j.Serial }
        foreach ($j in $jobs) {
            (Get-FileHash $j.Output).Hash | Should -Be (Get-FileHash $j.Serial).Hash -Because "$($j.Output) is quantized from $($j.Model)"
        }
        # Different models give different files; the same model the same file.
        (Get-FileHash $jobs[0].Output).Hash | Should -Not -Be (Get-FileHash $jobs[1].Output).Hash
        (Get-FileHash $jobs[0].Output).Hash | Should -Be (Get-FileHash $jobs[2].Output).Hash
        Get-ChildItem $folder -Filter *.tmp -Force | Should -BeNullOrEmpty
    }
}

Describe 'Hostile models are refused before any allocation' {
    BeforeAll {
        function Set-External([string] $Path, [string] $Location, [hashtable] $Extra = @{}, [long[]] $Dims) {
            $m = [Onnx.ModelProto]::Parser.ParseFrom([IO.File]::ReadAllBytes($Model))
            $w = $m.Graph.Initializer | Where-Object Name -eq 'w2'
            $w.RawData = [Google.Protobuf.ByteString]::Empty
            $w.DataLocation = 'External'
            if ($Dims) { $w.Dims.Clear(); $w.Dims.AddRange($Dims) }
            $e = [Onnx.StringStringEntryProto]::new(); $e.Key = 'location'; $e.Value = $Location; $w.ExternalData.Add($e)
            foreach ($k in $Extra.Keys) { $e = [Onnx.StringStringEntryProto]::new(); $e.Key = $k; $e.Value = $Extra[$k]; $w.ExternalData.Add($e) }
            [IO.File]::WriteAllBytes($Path, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
            $Path
        }
        $script:hostile = Join-Path $TestDrive 'hostile'
        $null = New-Item -ItemType Directory $hostile
    }

    It 'external data outside the model folder (<Location>): SecurityError from every model-reading cmdlet' -ForEach @(
        @{ Location = '../../../../etc/passwd' }, @{ Location = '/etc/passwd' }, @{ Location = 'link-out' }, @{ Location = 'dir-out/passwd' }
    ) {
        $link = Join-Path $hostile 'link-out'; if (-not (Test-Path $link)) { $null = New-Item -ItemType SymbolicLink -Path $link -Target '/etc/passwd' }
        $dir = Join-Path $hostile 'dir-out'; if (-not (Test-Path $dir)) { $null = New-Item -ItemType SymbolicLink -Path $dir -Target '/etc' }
        $path = Set-External (Join-Path $hostile 'escape.onnx') $Location
        foreach ($run in { Get-OnnxModel $path -ErrorAction Stop }, { Get-ModelLayer $path -ErrorAction Stop },
            { Invoke-ModelInference -Path $path -DataSet $ImageData -ErrorAction Stop },
            { Measure-ModelPerformance -Path $path -Runs 1 -ErrorAction Stop },
            { Invoke-Quantization -Path $path -DataSet $ImageData -OutputPath (Join-Path $hostile 'o.onnx') -ErrorAction Stop }) {
            $e = Get-ErrorRecord $run
            $e.FullyQualifiedErrorId | Should -BeLike 'ExternalDataOutsideModelFolder,*' -Because "$run"
            $e.CategoryInfo.Category | Should -Be 'SecurityError'
        }
        Test-Path (Join-Path $hostile 'o.onnx') | Should -BeFalse
    }

    It 'a tensor claiming a terabyte in a 16-byte side file: refused without allocating it' {
        [IO.File]::WriteAllBytes((Join-Path $hostile 'w2.bin'), [byte[]]::new(16))
        $path = Set-External (Join-Path $hostile 'tera.onnx') 'w2.bin' @{ length = "$(1L -shl 40)" } -Dims (1L -shl 18), (1L -shl 20)
        $me = [Diagnostics.Process]::GetCurrentProcess(); $me.Refresh(); $peak = $me.PeakWorkingSet64
        $e = Get-ErrorRecord { Get-OnnxModel $path -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ExternalDataInvalid,*'
        $e.Exception.Message | Should -Match 'holds 16'
        $me.Refresh(); ($me.PeakWorkingSet64 - $peak) / 1MB | Should -BeLessThan 64
    }

    It 'a protobuf nesting bomb: ModelNotOnnx' {
        # 40 levels of If subgraphs (120 nested messages) written by hand, inside out.
        $g = [Onnx.GraphProto]::new()
        foreach ($i in 1..40) {
            $a = [Onnx.AttributeProto]::new(); $a.Name = 'then_branch'; $a.Type = 'Graph'; $a.G = $g
            $n = [Onnx.NodeProto]::new(); $n.OpType = 'If'; $n.Attribute.Add($a)
            $g = [Onnx.GraphProto]::new(); $g.Node.Add($n)
        }
        $m = [Onnx.ModelProto]::new(); $m.IrVersion = 8; $m.Graph = $g
        $op = [Onnx.OperatorSetIdProto]::new(); $op.Version = 13; $m.OpsetImport.Add($op)
        $path = Join-Path $hostile 'bomb.onnx'
        [IO.File]::WriteAllBytes($path, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
        $e = Get-ErrorRecord { Get-ModelLayer $path -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ModelNotOnnx,*'
        $e.Exception.Message | Should -Match 'recursion'
    }

    It 'a ConstantOfShape asking for 16 GB: TensorTooLarge before ONNX Runtime folds it' {
        $m = [Onnx.ModelProto]::Parser.ParseFrom([IO.File]::ReadAllBytes($Model))
        $shape = [Onnx.TensorProto]::new(); $shape.Name = 'bomb_shape'; $shape.DataType = 7; $shape.Dims.Add(2); $shape.Int64Data.AddRange([long[]](65536, 65536))
        $m.Graph.Initializer.Add($shape)
        $m.Graph.Node.Add((New-Node ConstantOfShape bomb bomb_shape bomb_out))
        $m.Graph.Output.Add((New-Value 'bomb_out' 65536, 65536))
        $path = Join-Path $hostile 'shape-bomb.onnx'
        [IO.File]::WriteAllBytes($path, [Google.Protobuf.MessageExtensions]::ToByteArray($m))
        $e = Get-ErrorRecord { Get-ModelLayer $path -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'TensorTooLarge,*'
        $e.Exception.Message | Should -Match 'bomb'
    }
}
