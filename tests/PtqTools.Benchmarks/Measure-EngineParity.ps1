<#
.SYNOPSIS
    Int8 ResNet18 (-CalibrationCount training images, 100 by default as in the Bench task; default options) on the
    PtqTools engine vs ONNX Runtime: parity over 100 evaluation images in steps of the output scale, and one-thread
    latency side by side in the same run.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Build; dotnet pwsh -NoProfile -File tests/PtqTools.Benchmarks/Measure-EngineParity.ps1
#>
param([string] $ModulePath = (Join-Path $PSScriptRoot '../../out/PtqTools/PtqTools.psd1'), [int] $CalibrationCount = 100,
    [string] $OutputPath = (Join-Path ([IO.Path]::GetTempPath()) 'ptqtools-parity-resnet18.int8.onnx'))
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
. (Join-Path $PSScriptRoot '../Pester/TestData.ps1')
$calib = New-ResNetDataSet -Split train -Count $CalibrationCount
$int8 = $OutputPath
$null = Invoke-Quantization -Path $ResNet18 -DataSet $calib -OutputPath $int8 -Force
$data = New-ResNetDataSet -Split t10k -Count 100 -Skip 300
$ort = @(Invoke-ModelInference $int8 $data -Engine OnnxRuntime -ThreadCount 1)
$own = @(Invoke-ModelInference $int8 $data -Engine PtqTools -ThreadCount 1)
$med = { param($xs) ($xs | Sort-Object)[[int][math]::Floor($xs.Count / 2)] }
"ORT int8 median ms (1 thread): {0:N2}" -f (& $med ($ort | Select-Object -Skip 5).Milliseconds)
"PtqTools int8 median ms (1 thread, {1}): {0:N2}" -f (& $med ($own | Select-Object -Skip 5).Milliseconds), $own[0].KernelPath
$within = 0; $same = 0; $n = 0; $worst = 0
foreach ($i in 0..($ort.Count - 1)) {
    $a = [float[]]$ort[$i].Outputs[0]; $b = [float[]]$own[$i].Outputs[0]
    $s = [float[]]($a | Sort-Object -Unique); $step = [double]::MaxValue
    for ($k = 1; $k -lt $s.Count; $k++) { $step = [Math]::Min($step, $s[$k] - $s[$k - 1]) }
    for ($k = 0; $k -lt $a.Count; $k++) { $d = [Math]::Abs($a[$k] - $b[$k]) / $step; $n++; if ($d -le 1.001) { $within++ }; if ($d -lt 0.001) { $same++ }; $worst = [Math]::Max($worst, $d) }
}
"{0} images, {1} elements: {2:P3} within 1 step, {3:P3} identical, largest difference {4:N2} steps ({5} calibration images)" -f $ort.Count, $n, ($within / $n), ($same / $n), $worst, $CalibrationCount
