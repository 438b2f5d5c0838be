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

# Debian packages some tests read or run: build.ps1 -Task Test installs them where it can (apt-get as root). Where one
# is missing, the tests that need it are skipped and the reason printed (Pester counts them as skipped, never as
# passed). Each can be pointed elsewhere by a variable, e.g. at a missing path to see the skip.
$script:OnnxTestData = if ($env:PTQTOOLS_TEST_ONNX_DATA) { $env:PTQTOOLS_TEST_ONNX_DATA } else { '/usr/share/libonnx-testdata/data' }
$script:ChromiumPath = if ($env:PTQTOOLS_TEST_CHROMIUM) { $env:PTQTOOLS_TEST_CHROMIUM } else { (Get-Command chromium -ErrorAction SilentlyContinue).Source }
$script:SshdPath = if ($env:PTQTOOLS_TEST_SSHD) { $env:PTQTOOLS_TEST_SSHD } else { '/usr/sbin/sshd' }
# The reason a test that needs the package cannot run here, or $null when it can.
function Get-MissingPackageReason([ValidateSet('libonnx-testdata', 'chromium', 'openssh-server')] [string] $Package) {
    $install = 'build.ps1 -Task Test installs it with apt-get when run as root'
    switch ($Package) {
        'libonnx-testdata' { if (-not (Test-Path $OnnxTestData)) { "Debian's libonnx-testdata is not installed ($OnnxTestData is missing; $install)" } }
        'chromium' { if (-not $ChromiumPath -or -not (Test-Path $ChromiumPath)) { "Debian's chromium is not installed (no chromium command; $install)" } }
        'openssh-server' {
            if (-not $IsLinux) { 'the remoting test starts OpenSSH servers on 127.0.0.1 and runs on Linux only' }
            elseif (-not (Test-Path $SshdPath)) { "Debian's openssh-server is not installed ($SshdPath is missing; $install)" }
        }
    }
}
# For BeforeDiscovery: $true (and the reason printed) when the blocks that need the package are to be skipped.
function Test-SkipForPackage([string] $Package, [string] $What) {
    $reason = Get-MissingPackageReason $Package
    if ($reason) { Write-Host "Skipped: $What, because $reason." }
    [bool]$reason
}

# Runs a script block whose cmdlets use -ErrorAction Stop; returns the ErrorRecord it raised, or $null.
function Get-ErrorRecord([scriptblock] $Script) {
    try { $null = & $Script } catch { return $_ }
    return $null
}
