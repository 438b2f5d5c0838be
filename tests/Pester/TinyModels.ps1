# Small models and images the Pester tests build: dot-source in BeforeAll after importing the module. The generated
# ONNX classes and SkiaSharp come from the module folder's dependencies, loaded here in the default load context (the
# module runs its own copies in its own context). SkiaSharp's native library is in runtimes/<rid>/native, which only
# the module's context resolves: a copy beside a copy of SkiaSharp.dll lets the default context find it.
$moduleFolder = Join-Path (Split-Path $env:PTQTOOLS_MODULE) 'dependencies'
if (-not ('SkiaSharp.SKBitmap' -as [type])) {
    $skiaCopy = Join-Path ([IO.Path]::GetTempPath()) "ptqtools-pester-skia-$PID"
    $null = New-Item -ItemType Directory $skiaCopy -Force
    $rid = '{0}-{1}' -f $(if ($IsWindows) { 'win' } elseif ($IsMacOS) { 'osx' } else { 'linux' }), [Runtime.InteropServices.RuntimeInformation]::ProcessArchitecture.ToString().ToLowerInvariant()
    Copy-Item (Join-Path $moduleFolder 'SkiaSharp.dll'), (Join-Path $moduleFolder "runtimes/$rid/native/*SkiaSharp*") $skiaCopy -Force
    Add-Type -Path (Join-Path $skiaCopy 'SkiaSharp.dll')
}
Add-Type -Path (Join-Path $moduleFolder 'Google.Protobuf.dll'), (Join-Path $moduleFolder 'OnnxSharp.dll')

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
# A small CNN on 3x16x16 images: Conv 5x5, Relu, Conv 3x3, GlobalAveragePool, Flatten, Gemm. Different seeds give
# different weights. Wide enough (32 channels, 75 and 288 products per output) that its int8 layers pay in ONNX Runtime,
# so the speed rules (ShallowConv, SlowRegion) quantize it; a narrower one would be written as the float model.
function New-TinyCnn([string] $Path, [int] $Seed = 1) {
    $r = [Random]::new($Seed)
    $m = [Onnx.ModelProto]::new(); $m.IrVersion = 8; $m.ProducerName = 'PtqTools.Tests'
    $op = [Onnx.OperatorSetIdProto]::new(); $op.Version = 13; $m.OpsetImport.Add($op)
    $g = [Onnx.GraphProto]::new(); $g.Name = 'tiny'; $m.Graph = $g
    $g.Input.Add((New-Value 'x' 1, 3, 16, 16))
    $g.Initializer.Add((New-Tensor 'w1' (32, 3, 5, 5) $r)); $g.Initializer.Add((New-Tensor 'b1' (, 32) $r))
    $g.Initializer.Add((New-Tensor 'w2' (32, 32, 3, 3) $r)); $g.Initializer.Add((New-Tensor 'b2' (, 32) $r))
    $g.Initializer.Add((New-Tensor 'w3' (10, 32) $r)); $g.Initializer.Add((New-Tensor 'b3' (, 10) $r))
    $g.Node.Add((New-Node Conv conv1 x, w1, b1 c1 @{ pads = @(2, 2, 2, 2) }))
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
