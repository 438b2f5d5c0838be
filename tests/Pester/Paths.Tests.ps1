# Issue 15, paths: -LiteralPath everywhere a model is read, model files named with brackets in every cmdlet (typed
# literally, escaped for -Path, piped from Get-Item/Get-ChildItem/Get-OnnxModel), literal output paths, and output
# folders that cannot be written found before any calibration.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $moduleDir = Split-Path $env:PTQTOOLS_MODULE
    Add-Type -Path (Join-Path $moduleDir 'Google.Protobuf.dll'), (Join-Path $moduleDir 'OnnxSharp.dll')

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
    # A small CNN on 3x16x16 inputs: Conv, Relu, Conv, Relu, GlobalAveragePool, Flatten, Gemm.
    function New-TinyCnn([string] $Path, [int] $Seed = 1) {
        $r = [Random]::new($Seed)
        $m = [Onnx.ModelProto]::new(); $m.IrVersion = 8; $m.ProducerName = 'Paths.Tests'
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
    function Mount-Tmpfs([string] $Path, [string] $Options) {
        $null = New-Item -ItemType Directory $Path -Force
        & mount -t tmpfs -o $Options tmpfs $Path 2>&1 | Out-Null
        return $LASTEXITCODE -eq 0
    }
    $script:IsRoot = (id -u) -eq '0'

    $script:dir = Join-Path $TestDrive 'models [set]'
    $null = New-Item -ItemType Directory $dir
    $script:Model = New-TinyCnn (Join-Path $dir 'model [v1].onnx') 1
    $script:Escaped = [WildcardPattern]::Escape($Model)
    $random = [Random]::new(7)
    $samples = 1..4 | ForEach-Object { , [float[]](1..768 | ForEach-Object { $random.NextDouble() }) }
    $script:Data = New-PtqDataSet -InputObject $samples -Shape 3, 16, 16
    # A data set that records whether anything read it: a refused call must not have started calibrating.
    $script:calibrated = $false
    $script:Watched = New-PtqDataSet -ScriptBlock { $script:calibrated = $true; , [float[]]::new(768) } -Shape 3, 16, 16
    # One quantized model named with brackets, for the cmdlets that read quantized models.
    $script:Quantized = (Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Data |
            Invoke-Quantization -OutputPath (Join-Path $dir 'model [v1].int8.onnx') -SkipHostCheck).OutputPath
}

Describe 'Invoke-Quantization, Measure-ActivationRange and Measure-ModelPerformance have -LiteralPath' {
    It '<_> has -LiteralPath (aliases PSPath and LP) beside the wildcard -Path' -ForEach 'Invoke-Quantization', 'Measure-ActivationRange', 'Measure-ModelPerformance' {
        $command = Get-Command $_
        $command.Parameters.Keys | Should -Contain 'LiteralPath'
        $command.Parameters.LiteralPath.Aliases | Should -Contain 'PSPath'
        $command.Parameters.LiteralPath.Aliases | Should -Contain 'LP'
        $command.Parameters.LiteralPath.ParameterSets.Keys | Should -Be 'LiteralPath'
        $command.Parameters.Path.Attributes.Where({ $_ -is [System.Management.Automation.SupportsWildcardsAttribute] }) | Should -Not -BeNullOrEmpty
    }

    It 'the layer and statistics pipeline still binds layers and statistics, not paths' {
        $r = Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Data |
            Invoke-Quantization -OutputPath (Join-Path $dir 'pipeline [p].int8.onnx') -SkipHostCheck
        $r.SourcePath | Should -Be $Model
        $r.OutputPath | Should -Be (Join-Path $dir 'pipeline [p].int8.onnx')
        Test-Path -LiteralPath $r.OutputPath | Should -BeTrue
    }
}

Describe 'A model file named with brackets works in every cmdlet' {
    It 'Get-OnnxModel and Get-ModelLayer: literal, escaped, and piped from Get-Item' {
        (Get-OnnxModel -LiteralPath $Model).Path | Should -Be $Model
        (Get-OnnxModel -Path $Escaped).Path | Should -Be $Model
        (Get-Item -LiteralPath $Model | Get-OnnxModel).Path | Should -Be $Model
        (Get-ModelLayer -LiteralPath $Model -Name conv1).ModelPath | Should -Be $Model
        (Get-ModelLayer -Path $Escaped -Name conv1).ModelPath | Should -Be $Model
        (Get-Item -LiteralPath $Model | Get-ModelLayer -Name conv1).ModelPath | Should -Be $Model
    }

    It 'a summary from Get-OnnxModel binds to -LiteralPath of Get-ModelLayer (through PSPath)' {
        $summary = Get-OnnxModel -LiteralPath $Model
        $summary.PSPath | Should -Be $Model
        $layers = $summary | Get-ModelLayer -ErrorAction Stop
        $layers.Name | Should -Contain 'conv1'
        $layers[0].ModelSha256 | Should -Be $summary.Sha256
        # And so to the other cmdlets that read models.
        ($summary | Get-OnnxModel).Path | Should -Be $Model
        @($summary | Measure-ModelPerformance -WarmupRuns 1 -Runs 2 -ErrorAction Stop) | Should -HaveCount 1
    }

    It 'a summary that went through serialization still binds literally' {
        $back = [System.Management.Automation.PSSerializer]::Deserialize([System.Management.Automation.PSSerializer]::Serialize((Get-OnnxModel -LiteralPath $Model)))
        ($back | Get-ModelLayer -Name conv1 -ErrorAction Stop).ModelPath | Should -Be $Model
    }

    It 'Measure-ActivationRange: -LiteralPath, escaped -Path, and files or summaries piped in' {
        $expected = @(Measure-ActivationRange -LiteralPath $Model -DataSet $Data -ErrorAction Stop)
        $expected.Count | Should -BeGreaterThan 0
        $expected[0].ModelPath | Should -Be $Model
        @(Measure-ActivationRange -Path $Escaped -DataSet $Data -ErrorAction Stop).Count | Should -Be $expected.Count
        @(Get-Item -LiteralPath $Model | Measure-ActivationRange -DataSet $Data -ErrorAction Stop).Count | Should -Be $expected.Count
        @(Get-ChildItem -LiteralPath $dir -Filter '*.onnx' | Where-Object Name -EQ 'model [v1].onnx' | Measure-ActivationRange -DataSet $Data -ErrorAction Stop).Count | Should -Be $expected.Count
        @(Get-OnnxModel -LiteralPath $Model | Measure-ActivationRange -DataSet $Data -ErrorAction Stop).Count | Should -Be $expected.Count
    }

    It 'Invoke-Quantization: -LiteralPath, escaped -Path, and files or summaries piped in' {
        $cases = @(
            @{ Name = 'literal'; Run = { param($o) Invoke-Quantization -LiteralPath $Model -DataSet $Data -OutputPath $o -SkipHostCheck -ErrorAction Stop } }
            @{ Name = 'escaped'; Run = { param($o) Invoke-Quantization -Path $Escaped -DataSet $Data -OutputPath $o -SkipHostCheck -ErrorAction Stop } }
            @{ Name = 'item'; Run = { param($o) Get-Item -LiteralPath $Model | Invoke-Quantization -DataSet $Data -OutputPath $o -SkipHostCheck -ErrorAction Stop } }
            @{ Name = 'summary'; Run = { param($o) Get-OnnxModel -LiteralPath $Model | Invoke-Quantization -DataSet $Data -OutputPath $o -SkipHostCheck -ErrorAction Stop } }
        )
        foreach ($case in $cases) {
            $out = Join-Path $dir "q-$($case.Name) [x].onnx"
            $r = & $case.Run $out
            $r.SourcePath | Should -Be $Model -Because $case.Name
            $r.OutputPath | Should -Be $out -Because $case.Name
            (Get-OnnxModel -LiteralPath $out).QuantizedFrom | Should -Be (Get-FileHash -LiteralPath $Model).Hash -Because $case.Name
        }
    }

    It 'Measure-ModelPerformance: -LiteralPath, escaped -Path, a FileInfo and a result whose OutputPath has brackets' {
        (Measure-ModelPerformance -LiteralPath $Model -WarmupRuns 1 -Runs 2 -ErrorAction Stop).Model | Should -Be $Model
        (Measure-ModelPerformance -Path $Escaped -WarmupRuns 1 -Runs 2 -ErrorAction Stop).Model | Should -Be $Model
        (Get-Item -LiteralPath $Model | Measure-ModelPerformance -WarmupRuns 1 -Runs 2 -ErrorAction Stop).Model | Should -Be $Model
        $result = [pscustomobject]@{ SourcePath = $Model; OutputPath = $Quantized }
        ($result | Measure-ModelPerformance -WarmupRuns 1 -Runs 2 -ErrorAction Stop).Model | Should -Be $Quantized
    }

    It 'Invoke-ModelInference: a result whose OutputPath has brackets binds literally' {
        $result = [pscustomobject]@{ SourcePath = $Model; OutputPath = $Quantized }
        @($result | Invoke-ModelInference -DataSet $Data -ErrorAction Stop) | Should -HaveCount 4
        @(Invoke-ModelInference -Path ([WildcardPattern]::Escape($Quantized)) -DataSet $Data -ErrorAction Stop) | Should -HaveCount 4
    }

    It 'Test-QuantizedModel: escaped positional paths, -LiteralPath, a result and files piped in' {
        (Test-QuantizedModel $Escaped ([WildcardPattern]::Escape($Quantized)) -DataSet $Data -LatencyRuns 0 -ErrorAction Stop).QuantizedModel | Should -Be $Quantized
        (Test-QuantizedModel -FloatModel $Model -LiteralPath $Quantized -DataSet $Data -LatencyRuns 0 -ErrorAction Stop).FloatModel | Should -Be $Model
        $result = [pscustomobject]@{ SourcePath = $Model; OutputPath = $Quantized }
        ($result | Test-QuantizedModel -DataSet $Data -LatencyRuns 0 -ErrorAction Stop).QuantizedModel | Should -Be $Quantized
        (Get-Item -LiteralPath $Quantized | Test-QuantizedModel -FloatModel $Model -DataSet $Data -LatencyRuns 0 -ErrorAction Stop).QuantizedModel | Should -Be $Quantized
    }

    It 'Import-ActivationRange: -ModelPath follows -Path (escaped) or -LiteralPath (as typed)' {
        $file = Join-Path $dir 'ranges [v1].json'
        Measure-ActivationRange -LiteralPath $Model -DataSet $Data | Export-ActivationRange -Path $file -Force
        @(Import-ActivationRange -LiteralPath $file -ModelPath $Model -ErrorAction Stop).Count | Should -BeGreaterThan 0
        @(Import-ActivationRange -Path ([WildcardPattern]::Escape($file)) -ModelPath $Escaped -ErrorAction Stop).Count | Should -BeGreaterThan 0
        @(Get-Item -LiteralPath $file | Import-ActivationRange -ModelPath $Model -ErrorAction Stop).Count | Should -BeGreaterThan 0
    }
}

Describe 'New-PtqDataSet: -LabelPath and -PreprocessModel follow -Path (escaped) or -LiteralPath (as typed)' {
    BeforeAll {
        $script:idx = Join-Path $TestDrive 'idx [v1]'
        $null = New-Item -ItemType Directory $idx
        $script:images = Copy-Item -LiteralPath (Join-Path $FashionMnist 't10k-images-idx3-ubyte.gz') -Destination (Join-Path $idx 't10k [v1]-images-idx3-ubyte.gz') -PassThru
        $script:labels = Copy-Item -LiteralPath (Join-Path $FashionMnist 't10k-labels-idx1-ubyte.gz') -Destination (Join-Path $idx 'my labels [v1].gz') -PassThru
        $script:prep = Copy-Item -LiteralPath $ResNetPreprocess -Destination (Join-Path $idx 'prep [v1].onnx') -PassThru
    }

    It 'with -Path, escaped brackets name the files' {
        $ds = New-PtqDataSet -Path ([WildcardPattern]::Escape($images.FullName)) -LabelPath ([WildcardPattern]::Escape($labels.FullName)) `
            -PreprocessModel ([WildcardPattern]::Escape($prep.FullName)) -Resize 224 -Scale 1 -MaxSamples 2 -ErrorAction Stop
        $ds.HasLabels | Should -BeTrue
        $ds.LabelPath | Should -Be $labels.FullName
        $ds.PreprocessModel | Should -Be $prep.FullName
    }

    It 'with -LiteralPath, and files piped in, the names are taken as typed' {
        $ds = New-PtqDataSet -LiteralPath $images.FullName -LabelPath $labels.FullName -PreprocessModel $prep.FullName -Resize 224 -Scale 1 -MaxSamples 2 -ErrorAction Stop
        $ds.LabelPath | Should -Be $labels.FullName
        $ds.PreprocessModel | Should -Be $prep.FullName
        ($images | New-PtqDataSet -LabelPath $labels.FullName -Resize 224 -Scale 1 -MaxSamples 2 -ErrorAction Stop).HasLabels | Should -BeTrue
    }
}

Describe 'Test-QuantizedModel: -Path expands wildcards, -LiteralPath does not' {
    BeforeAll {
        $script:wild = Join-Path $TestDrive 'wild'
        $null = New-Item -ItemType Directory $wild
        $script:float = Copy-Item -LiteralPath $Model -Destination (Join-Path $wild 'f.onnx') -PassThru
        foreach ($n in 'a', 'b') { Copy-Item -LiteralPath $Quantized -Destination (Join-Path $wild "$n.int8.onnx") }
    }

    It '-Path with a wildcard compares every quantized model it matches' {
        $reports = @(Test-QuantizedModel -FloatModel $float.FullName -Path (Join-Path $wild '*.int8.onnx') -DataSet $Data -LatencyRuns 0 -ErrorAction Stop)
        $reports | Should -HaveCount 2
        $reports.QuantizedModel | Sort-Object | Should -Be @((Join-Path $wild 'a.int8.onnx'), (Join-Path $wild 'b.int8.onnx'))
    }

    It '-Path reads brackets as a wildcard, as Get-Item does; -LiteralPath takes them as typed' {
        $e = Get-ErrorRecord { Test-QuantizedModel -FloatModel $Model -Path $Quantized -DataSet $Data -LatencyRuns 0 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'PathNotFound,*'
        # The float model follows the set: a pattern under -Path, as typed under -LiteralPath.
        $e = Get-ErrorRecord { Test-QuantizedModel $Model ([WildcardPattern]::Escape($Quantized)) -DataSet $Data -LatencyRuns 0 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'PathNotFound,*'
        $e.TargetObject | Should -Be $Model
        (Test-QuantizedModel -FloatModel $Model -LiteralPath $Quantized -DataSet $Data -LatencyRuns 0 -ErrorAction Stop) | Should -HaveCount 1
    }

    It 'a float model pattern that matches several files is an error naming the pattern' {
        $e = Get-ErrorRecord { Test-QuantizedModel -FloatModel (Join-Path $wild '*.onnx') -Path (Join-Path $wild 'a.int8.onnx') -DataSet $Data -LatencyRuns 0 -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -Be 'PathAmbiguous,PtqTools.Commands.TestQuantizedModelCommand'
        $e.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $e.TargetObject | Should -Be (Join-Path $wild '*.onnx')
    }

    It 'the old parameter name -QuantizedModel still works, literally as before, and a report can be piped back in' {
        $report = Test-QuantizedModel -FloatModel $Model -QuantizedModel $Quantized -DataSet $Data -LatencyRuns 0 -ErrorAction Stop
        $report.QuantizedModel | Should -Be $Quantized
        ($report | Test-QuantizedModel -DataSet $Data -LatencyRuns 0 -ErrorAction Stop).Cosine | Should -Be $report.Cosine
    }
}

Describe 'Output paths are literal' {
    It 'Invoke-Quantization -OutputPath, Export-ActivationRange -Path and Export-QuantizationReport -Path write the name as typed' {
        $stats = Measure-ActivationRange -Path $Escaped -DataSet $Data
        $q = Join-Path $dir 'out [v2].int8.onnx'
        ($stats | Invoke-Quantization -OutputPath $q -SkipHostCheck).OutputPath | Should -Be $q
        $ranges = Join-Path $dir 'out [v2].json'
        $stats | Export-ActivationRange -Path $ranges
        $report = Join-Path $dir 'out [v2].md'
        $stats | Export-QuantizationReport -Path $report -Format Markdown | Out-Null
        foreach ($file in $q, $ranges, $report) { Test-Path -LiteralPath $file -PathType Leaf | Should -BeTrue -Because $file }
        # -LiteralPath is accepted as another name of the Export cmdlets' -Path.
        $stats | Export-ActivationRange -LiteralPath (Join-Path $dir 'lp [v2].json')
        Test-Path -LiteralPath (Join-Path $dir 'lp [v2].json') | Should -BeTrue
    }

    It 'a backtick in an output path is part of the name, not an escape' {
        $typed = Join-Path $dir 'tick `[1`].json'
        Measure-ActivationRange -Path $Escaped -DataSet $Data | Export-ActivationRange -Path $typed
        Test-Path -LiteralPath $typed | Should -BeTrue
    }
}

Describe 'An output folder that cannot be written is found before any calibration' {
    BeforeAll {
        $script:plain = Join-Path $TestDrive 'a-file.txt'
        Set-Content -LiteralPath $plain 'not a folder'
    }
    BeforeEach { $script:calibrated = $false }

    It 'a parent that is a file: OutputFolderNotFound naming it, before calibration (<Name>)' -ForEach @(
        @{ Name = '-Path'; Run = { param($o) Invoke-Quantization -Path $Escaped -DataSet $Watched -OutputPath $o -ErrorAction Stop } }
        @{ Name = 'pipeline'; Run = { param($o) Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Watched | Invoke-Quantization -OutputPath $o -ErrorAction Stop } }
    ) {
        $out = Join-Path $plain 'sub/out.onnx'
        $e = Get-ErrorRecord { & $Run $out }
        $e.FullyQualifiedErrorId | Should -Be 'OutputFolderNotFound,PtqTools.Commands.InvokeQuantizationCommand'
        $calibrated | Should -BeFalse -Because 'the folder is checked before any calibration'
        $e.CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $e.TargetObject | Should -Be (Join-Path $plain 'sub')
        $e.Exception.Message | Should -BeLike "*'$plain' is a file, not a folder*"
        $e = Get-ErrorRecord { & $Run (Join-Path $plain 'out.onnx') }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputFolderNotFound,*'
        $e.TargetObject | Should -Be $plain
        $calibrated | Should -BeFalse
    }

    It 'a read-only folder: OutputNotWritable naming the folder, before calibration, nothing left behind' {
        $ro = Join-Path $TestDrive 'readonly'
        if ($IsRoot) {
            # Root ignores permission bits: a read-only mount stops it.
            if (-not (Mount-Tmpfs $ro 'ro,size=1m')) { Set-ItResult -Skipped -Because 'mounting a read-only tmpfs failed'; return }
            $category = 'WriteError'
        } else {
            $null = New-Item -ItemType Directory $ro
            & chmod 555 $ro
            $category = 'PermissionDenied'
        }
        try {
            $out = Join-Path $ro 'out.onnx'
            # Invoke-Quantization -Path calibrates in the same command (with array data: it takes no script data set);
            # the pipelines calibrate in Measure-ActivationRange, which must not start either.
            $runs = @(
                { Invoke-Quantization -Path $Escaped -DataSet $Data -OutputPath $out -ErrorAction Stop }
                { Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Watched | Invoke-Quantization -OutputPath $out -ErrorAction Stop }
                { Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Watched | Export-ActivationRange -Path (Join-Path $ro 'r.json') -ErrorAction Stop }
                { Get-ModelLayer -LiteralPath $Model | Measure-ActivationRange -DataSet $Watched | Export-QuantizationReport -Path (Join-Path $ro 'r.html') -ErrorAction Stop }
            )
            foreach ($run in $runs) {
                $script:calibrated = $false
                $e = Get-ErrorRecord $run
                $e.FullyQualifiedErrorId | Should -BeLike 'OutputNotWritable,*' -Because "$run"
                $calibrated | Should -BeFalse -Because "$run must fail before calibrating"
                $e.CategoryInfo.Category | Should -Be $category
                $e.TargetObject | Should -Be $ro
                $e.Exception.Message | Should -BeLike "*'$ro'*"
                $e.Exception.Message | Should -Not -BeLike '*.tmp*'
            }
            @(Get-ChildItem -LiteralPath $ro -Force) | Should -HaveCount 0
        } finally {
            if ($IsRoot) { & umount $ro } else { & chmod 755 $ro }
        }
    }

    It '-WhatIf does not write the check file, and the folder check still runs' {
        $e = Get-ErrorRecord { Invoke-Quantization -Path $Escaped -DataSet $Watched -OutputPath (Join-Path $plain 'x.onnx') -WhatIf -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'OutputFolderNotFound,*'
        $before = @(Get-ChildItem -LiteralPath $dir -Force).Count
        Invoke-Quantization -Path $Escaped -DataSet $Data -OutputPath (Join-Path $dir 'whatif.onnx') -WhatIf
        @(Get-ChildItem -LiteralPath $dir -Force).Count | Should -Be $before
    }
}
