# Runs the code of every example in the help pages (docs/en-US), each in a runspace of its own with the built
# module imported: an example that no longer works fails here.
BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot '../../tools/HelpBuilder.psm1') -Force
    $script:examples = foreach ($page in Get-ChildItem (Join-Path $PSScriptRoot '../../docs/en-US') -Filter '*-*.md') {
        $help = Get-MarkdownHelp -Path $page.FullName
        $i = 0
        foreach ($example in $help.Examples) {
            $i++
            @{ Command = $help.Name; Number = $i; Title = $example.Title; Code = $example.Code }
        }
    }
}

BeforeAll {
    $script:iss = [initialsessionstate]::CreateDefault2()
    $script:iss.ImportPSModule($env:PTQTOOLS_MODULE)
}

Describe '<Command> example <Number>: <Title>' -ForEach $examples {
    It 'runs without error' {
        $ps = [powershell]::Create($iss)
        try {
            $null = $ps.AddScript("`$ErrorActionPreference = 'Stop'; `$ProgressPreference = 'SilentlyContinue'`n$Code").AddCommand('Out-String')
            $output = $ps.Invoke()
            $errors = @($ps.Streams.Error)
            $errors | Should -BeNullOrEmpty -Because "the example printed:`n$output"
        } finally { $ps.Dispose() }
    }
}
