<#
.SYNOPSIS
    Quantizes a generated model above 2 GB and measures the peak memory of the process that does it.
.DESCRIPTION
    1. Generates a chain of MatMul layers (x[1,4096] -> MatMul [4096,16384] -> Relu -> MatMul [16384,4096] -> ...)
       whose float32 weights total -SizeGB, written with external data (model.onnx + model.onnx.data): more than one
       protobuf message can hold. The weights are written one tensor at a time.
    2. In a fresh pwsh: Invoke-Quantization -Path model.onnx -DataSet (calibration samples) -OutputPath model.int8.onnx,
       static int8; prints the process's peak resident memory (VmHWM) against the model's size. A second fresh
       process that only imports the module and builds the data set gives the baseline.
    3. In a third process, ONNX Runtime runs the float and the int8 model (from their paths) on held-out samples and
       the cosine of their outputs is printed.
    Needs about 4x -SizeGB of free disk in -OutputFolder (source, prepared copy in a cache of the run, output); the
    files are deleted unless -Keep is given.
    Not part of the test suite: build.ps1 -Task Bench does not run it either (about a minute of CPU and 6 GB of disk).
.EXAMPLE
    dotnet pwsh -NoProfile -File tests/PtqTools.Benchmarks/Measure-LargeModel.ps1 -ModulePath ./out/PtqTools/PtqTools.psd1
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $OutputFolder = (Join-Path ([IO.Path]::GetTempPath()) 'ptq-large-model'),
    [double] $SizeGB = 2.25,
    [int] $CalibrationCount = 8,
    [int] $ThreadCount = 2,
    [string] $Child = '',
    [switch] $Keep
)
$ErrorActionPreference = 'Stop'
$ModulePath = (Resolve-Path $ModulePath).Path
$modelPath = Join-Path $OutputFolder 'large.onnx'
$outputPath = Join-Path $OutputFolder 'large.int8.onnx'
$hidden = 4096; $wide = 16384

$moduleFolder = Join-Path (Split-Path $ModulePath) 'dependencies'   # the engine's dependencies (docs/platforms.md)
function Import-Assembly([string] $Name) { Add-Type -Path (Join-Path $moduleFolder $Name) }
function Get-PeakMemoryBytes { [long]((Get-Content /proc/self/status | Select-String '^VmHWM:') -replace '\D', '') * 1024 }
function New-Samples([int] $Count, [int] $Seed) {
    $random = [Random]::new($Seed)
    foreach ($i in 1..$Count) { , [float[]]@(foreach ($k in 1..$hidden) { [float]($random.NextDouble() * 2 - 1) }) }
}

if ($Child -in 'quantize', 'baseline') {
    Import-Module $ModulePath
    $samples = @(New-Samples $CalibrationCount 1)
    $data = New-PtqDataSet -InputObject $samples -Shape $hidden
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $result = if ($Child -eq 'quantize') { Invoke-Quantization -Path $modelPath -DataSet $data -OutputPath $outputPath -ThreadCount $ThreadCount -Force }
    [pscustomobject]@{
        Seconds = $clock.Elapsed.TotalSeconds; PeakBytes = Get-PeakMemoryBytes
        QuantizedLayers = $result.QuantizedLayerCount; OutputSizeBytes = $result.OutputSizeBytes; SourceSizeBytes = $result.SourceSizeBytes
    } | ConvertTo-Json -Compress
    return
}
if ($Child -eq 'verify') {
    Import-Assembly 'Microsoft.ML.OnnxRuntime.dll'
    Add-Type -IgnoreWarnings -CompilerOptions '/nowarn:CS1701' -ReferencedAssemblies (Join-Path $moduleFolder 'Microsoft.ML.OnnxRuntime.dll') -TypeDefinition @'
public static class PtqLargeModelOutputs
{
    public static float[] ToArray(Microsoft.ML.OnnxRuntime.OrtValue value) => value.GetTensorDataAsSpan<float>().ToArray();
}
'@
    $options = [Microsoft.ML.OnnxRuntime.SessionOptions]::new()
    $options.IntraOpNumThreads = $ThreadCount
    $cosines = foreach ($path in $modelPath, $outputPath) {
        $session = [Microsoft.ML.OnnxRuntime.InferenceSession]::new($path, $options)
        , @(foreach ($x in New-Samples 4 2) {
                $value = [Microsoft.ML.OnnxRuntime.OrtValue]::CreateTensorValueFromMemory([float[]]$x, [long[]](1, $hidden))
                $results = $session.Run([Microsoft.ML.OnnxRuntime.RunOptions]::new(), [string[]]'x', [Microsoft.ML.OnnxRuntime.OrtValue[]]$value, [string[]]'y')
                , [PtqLargeModelOutputs]::ToArray($results[0])
                $results.Dispose(); $value.Dispose()
            })
        $session.Dispose()
    }
    $float, $int8 = $cosines
    $values = for ($i = 0; $i -lt $float.Count; $i++) {
        $a = $float[$i]; $b = $int8[$i]; $dot = 0.0; $na = 0.0; $nb = 0.0
        for ($k = 0; $k -lt $a.Length; $k++) { $dot += $a[$k] * $b[$k]; $na += $a[$k] * $a[$k]; $nb += $b[$k] * $b[$k] }
        $dot / [Math]::Sqrt($na * $nb)
    }
    [pscustomobject]@{ MinCosine = ($values | Measure-Object -Minimum).Minimum } | ConvertTo-Json -Compress
    return
}

# 1. Generate the model, one weight tensor at a time.
Import-Assembly 'Google.Protobuf.dll'
Import-Assembly 'OnnxSharp.dll'
Add-Type -TypeDefinition @'
using System;
using System.IO;
public static class PtqLargeModelWriter
{
    /// <summary>Appends count float32 values, uniform in [-scale, scale], at the next 4 KiB boundary; returns the offset.</summary>
    public static long Append(FileStream stream, long count, float scale, int seed)
    {
        long offset = (stream.Position + 4095) / 4096 * 4096;
        stream.SetLength(Math.Max(stream.Length, offset));
        stream.Position = offset;
        var random = new Random(seed);
        var chunk = new float[1 << 20];
        for (long left = count; left > 0;)
        {
            int n = (int)Math.Min(chunk.Length, left);
            for (int i = 0; i < n; i++) chunk[i] = (random.NextSingle() * 2 - 1) * scale;
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(chunk.AsSpan(0, n)));
            left -= n;
        }
        return offset;
    }
}
'@
$null = New-Item -ItemType Directory -Force $OutputFolder
Remove-Item -Force -ErrorAction Ignore $modelPath, "$modelPath.data", $outputPath, "$outputPath.data"
$layerBytes = 4L * $hidden * $wide
$layers = [int][Math]::Ceiling($SizeGB * 1GB / $layerBytes)
$model = [Onnx.ModelProto]::new()
$model.IrVersion = 8
$model.ProducerName = 'Measure-LargeModel.ps1'
$opset = [Onnx.OperatorSetIdProto]::new(); $opset.Domain = ''; $opset.Version = 13
$model.OpsetImport.Add($opset)
$graph = [Onnx.GraphProto]::new(); $graph.Name = 'large'
$model.Graph = $graph
function New-Value([string] $Name, [long[]] $Dims) {
    $vi = [Onnx.ValueInfoProto]::new(); $vi.Name = $Name
    $vi.Type = [Onnx.TypeProto]::new(); $vi.Type.TensorType = [Onnx.TypeProto+Types+Tensor]::new(); $vi.Type.TensorType.ElemType = 1
    $vi.Type.TensorType.Shape = [Onnx.TensorShapeProto]::new()
    foreach ($d in $Dims) { $dim = [Onnx.TensorShapeProto+Types+Dimension]::new(); $dim.DimValue = $d; $vi.Type.TensorType.Shape.Dim.Add($dim) }
    $vi
}
function New-Node([string] $Op, [string] $Name, [string[]] $Inputs, [string] $Output) {
    $node = [Onnx.NodeProto]::new(); $node.OpType = $Op; $node.Name = $Name
    foreach ($i in $Inputs) { $node.Input.Add($i) }
    $node.Output.Add($Output); $node
}
$graph.Input.Add((New-Value 'x' 1, $hidden))
$clock = [Diagnostics.Stopwatch]::StartNew()
$stream = [IO.FileStream]::new("$modelPath.data", 'CreateNew', 'Write', 'None', 1MB)
try {
    $current = 'x'; $width = $hidden
    for ($l = 0; $l -lt $layers; $l++) {
        $next = if ($width -eq $hidden) { $wide } else { $hidden }
        $offset = [PtqLargeModelWriter]::Append($stream, [long]$width * $next, [float][Math]::Sqrt(6.0 / $width), 100 + $l)
        $w = [Onnx.TensorProto]::new(); $w.Name = "w$l"; $w.DataType = 1; $w.Dims.Add($width); $w.Dims.Add($next)
        $w.DataLocation = [Onnx.TensorProto+Types+DataLocation]::External
        foreach ($kv in @(('location', 'large.onnx.data'), ('offset', "$offset"), ('length', "$(4L * $width * $next)"))) {
            $e = [Onnx.StringStringEntryProto]::new(); $e.Key = $kv[0]; $e.Value = $kv[1]; $w.ExternalData.Add($e)
        }
        $graph.Initializer.Add($w)
        $out = if ($l -eq $layers - 1) { 'y' } else { "h$l" }
        $graph.Node.Add((New-Node 'MatMul' "matmul$l" $current, "w$l" $(if ($l -eq $layers - 1) { 'y' } else { "m$l" })))
        if ($l -lt $layers - 1) { $graph.Node.Add((New-Node 'Relu' "relu$l" "m$l" $out)) }
        $current = $out; $width = $next
    }
} finally { $stream.Dispose() }
$graph.Output.Add((New-Value 'y' 1, $width))
[IO.File]::WriteAllBytes($modelPath, [Google.Protobuf.MessageExtensions]::ToByteArray($model))
$size = (Get-Item $modelPath).Length + (Get-Item "$modelPath.data").Length
"Generated {0}: {1} MatMul layers, {2:N0} bytes ({3:N2} GiB) in {4:N0} s" -f $modelPath, $layers, $size, ($size / 1GB), $clock.Elapsed.TotalSeconds | Out-Host

# The prepared copy (its own 2.25 GiB side file) goes to a cache of this run, deleted with the rest.
$env:PTQTOOLS_CACHE = Join-Path $OutputFolder 'cache'
try {
    $pwsh = Join-Path $PSHOME 'pwsh.dll'
    $run = { param($what) & dotnet $pwsh -NoProfile -NonInteractive -File $PSCommandPath -ModulePath $ModulePath -OutputFolder $OutputFolder -CalibrationCount $CalibrationCount -ThreadCount $ThreadCount -Child $what | Select-Object -Last 1 | ConvertFrom-Json }
    $baseline = & $run 'baseline'
    $quantized = & $run 'quantize'
    $verify = & $run 'verify'
    $outSide = Test-Path "$outputPath.data"
    "Baseline (pwsh, module, data set): peak {0:N0} MiB" -f ($baseline.PeakBytes / 1MB) | Out-Host
    ("Quantized {0} layers (static int8, {1} calibration samples, {2} threads) in {3:N0} s: peak memory {4:N0} MiB = {5:N2}x the model's {6:N0} MiB " +
        "({7:N2}x above the baseline process); output {8:N0} MiB ({9}), min cosine vs float {10:N4}") -f `
        $quantized.QuantizedLayers, $CalibrationCount, $ThreadCount, $quantized.Seconds, ($quantized.PeakBytes / 1MB), ($quantized.PeakBytes / $size), ($size / 1MB),
        (($quantized.PeakBytes - $baseline.PeakBytes) / $size), ($quantized.OutputSizeBytes / 1MB),
        $(if ($outSide) { 'with external data' } else { 'inline' }), $verify.MinCosine | Out-Host
    if ($quantized.PeakBytes -ge 1.5 * $size) { Write-Warning "Peak memory is not below 1.5x the model's size." }
} finally {
    if (-not $Keep) {
        Remove-Item -Force -ErrorAction Ignore $modelPath, "$modelPath.data", $outputPath, "$outputPath.data"
        Remove-Item -Recurse -Force -ErrorAction Ignore $env:PTQTOOLS_CACHE
    }
}
