# Paths of the real model and data the Pester tests use; dot-source in BeforeAll / BeforeDiscovery.
$nugetRoot = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path $HOME '.nuget/packages' }
$script:ModelFolder = Join-Path $nugetRoot 'microsoft.ml.dnnimagefeaturizer.resnet18/0.23.1/tools/DnnImageModels'
$script:ResNet18 = Join-Path $ModelFolder 'ResNet18Onnx/ResNet18.onnx'
$script:ResNetPreprocess = Join-Path $ModelFolder 'ResNetPrepOnnx/ResNetPreprocess.onnx'
# Debian's dataset-fashion-mnist when installed, else the sample shipped in the repository.
$script:FashionMnist = if (Test-Path '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz') {
    '/usr/share/datasets/fashion-mnist'
} else {
    Join-Path $PSScriptRoot '../data/fashion-mnist-sample'
}
foreach ($required in $ResNet18, $ResNetPreprocess, (Join-Path $FashionMnist 'train-images-idx3-ubyte.gz')) {
    if (-not (Test-Path $required)) { throw "Test data missing: $required (run build.ps1 -Task Build to restore it)." }
}

# ResNet18 expects RGB pixels 0..255, resized to 224, minus its mean image (the package's preprocessing graph).
function New-ResNetDataSet([string] $Split, [int] $Count, [int] $Skip = 0) {
    New-PtqDataSet -Path (Join-Path $FashionMnist "$Split-images-idx3-ubyte.gz") -Resize 224 -Scale 1 `
        -PreprocessModel $ResNetPreprocess -MaxSamples $Count -Skip $Skip
}

# Runs a script block whose cmdlets use -ErrorAction Stop; returns the ErrorRecord it raised, or $null.
function Get-ErrorRecord([scriptblock] $Script) {
    try { $null = & $Script } catch { return $_ }
    return $null
}
