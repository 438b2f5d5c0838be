# Runs the code of every example in the help pages (docs/en-US) with the built module: an example that no longer
# works fails here. The examples of one page run in order in one runspace (later examples may use what earlier ones
# made), in a new empty working folder. An example whose code says "(not run by the example tests)" and why is
# reported as skipped.
BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot '../../tools/HelpBuilder.psm1') -Force
    $script:pages = foreach ($page in Get-ChildItem (Join-Path $PSScriptRoot '../../docs/en-US') -Filter '*-*.md') {
        $help = Get-MarkdownHelp -Path $page.FullName
        $i = 0
        @{
            Command = $help.Name
            Examples = @(foreach ($example in $help.Examples) {
                    $i++
                    @{ Number = $i; Title = $example.Title; Code = $example.Code; Skip = $example.Code -match '\(not run by the example tests\)' }
                })
        }
    }
}

Describe '<Command> examples' -ForEach $pages {
    BeforeAll {
        $iss = [initialsessionstate]::CreateDefault2()
        $iss.ImportPSModule($env:PTQTOOLS_MODULE)
        $script:ps = [powershell]::Create($iss)
        $script:folder = Join-Path $TestDrive $Command
        $null = New-Item -ItemType Directory $folder
        $null = $ps.AddCommand('Set-Location').AddParameter('LiteralPath', $folder).Invoke()
        $ps.Commands.Clear()
    }
    AfterAll { $ps.Dispose() }

    It 'example <Number>: <Title>' -ForEach $Examples {
        if ($Skip) { Set-ItResult -Skipped -Because 'its code says it is not run by the example tests'; return }
        $ps.Streams.Error.Clear()
        $null = $ps.AddScript("`$ErrorActionPreference = 'Stop'; `$ProgressPreference = 'SilentlyContinue'`n$Code").AddCommand('Out-String')
        try { $output = $ps.Invoke() } finally { $ps.Commands.Clear() }
        @($ps.Streams.Error) | Should -BeNullOrEmpty -Because "the example printed:`n$output"
    }
}
