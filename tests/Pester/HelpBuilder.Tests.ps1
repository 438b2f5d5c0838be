#Requires -Version 7.0
# Tests for tools/HelpBuilder.psm1 (markdown -> MAML / about_*.help.txt) on pages written to $TestDrive.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '../../tools/HelpBuilder.psm1') -Force

    $script:docs = Join-Path $TestDrive 'docs'
    $script:out = Join-Path $TestDrive 'out'
    New-Item -ItemType Directory -Path $docs | Out-Null

    $page = @'
---
external help file: Fake-Help.xml
Module Name: Fake
online version: https://example.com/get-fakething
schema: 2.0.0
---

# Get-FakeThing

## SYNOPSIS
Gets fake things where size < limit & name matches.

## SYNTAX

### Path (Default)
```
Get-FakeThing [-Path] <String[]> [-Limit <Int32>] [-Force] [<CommonParameters>]
```

### LiteralPath
```
Get-FakeThing -LiteralPath <String[]> [[-Limit] <Int32>] [-Force] [<CommonParameters>]
```

## DESCRIPTION
The `Get-FakeThing` cmdlet compares a < b && c > d
and returns things.

Second paragraph.

## EXAMPLES

### Example 1: Get one thing
```powershell
PS> Get-FakeThing -Path ./a.txt
```

Gets the thing at ./a.txt.

### Example 2: Filter with < and &
```
PS> Get-FakeThing ./*.txt | Where-Object { $_.Size -lt 10 -and $_.Name -ne '&' }
```

Only small things & friends.

## PARAMETERS

### -Path
Paths, wildcards allowed.

```yaml
Type: String[]
Parameter Sets: Path
Aliases:

Required: True
Position: 0
Default value: None
Accept pipeline input: True (ByPropertyName, ByValue)
Accept wildcard characters: True
```

### -LiteralPath
Literal paths.

```yaml
Type: String[]
Parameter Sets: LiteralPath
Aliases: PSPath, LP

Required: True
Position: Named
Default value: None
Accept pipeline input: True (ByPropertyName)
Accept wildcard characters: False
```

### -Limit
Limit < 100 & > 0.

```yaml
Type: Int32
Parameter Sets: Path
Aliases:

Required: False
Position: Named
Default value: 10
Accept pipeline input: False
Accept wildcard characters: False
```

```yaml
Type: Int32
Parameter Sets: LiteralPath
Aliases:

Required: False
Position: 1
Default value: 10
Accept pipeline input: False
Accept wildcard characters: False
```

### -Force
Forces it.

```yaml
Type: SwitchParameter
Parameter Sets: (All)
Aliases:

Required: False
Position: Named
Default value: False
Accept pipeline input: False
Accept wildcard characters: False
```

### CommonParameters
This cmdlet supports the common parameters.

## INPUTS

### System.String
Paths can be piped.

## OUTPUTS

### Fake.Thing

## NOTES
Notes & more.

## RELATED LINKS

[about_Fake](about_Fake.md)

[Fake docs](https://example.com/fake)
'@

    # Minimal page: CRLF line endings, ~~~ fences without a language, no optional sections.
    $minimal = (@(
            '# Set-FakeThing'
            ''
            '## SYNOPSIS'
            'Sets a fake thing.'
            ''
            '## SYNTAX'
            ''
            '~~~'
            'Set-FakeThing [-Value] <String> [<CommonParameters>]'
            '~~~'
            ''
            '## PARAMETERS'
            ''
            '### -Value'
            'The value.'
            ''
            '~~~'
            'Type: String'
            'Required: True'
            'Position: 0'
            '~~~'
        ) -join "`r`n") + "`r`n"

    $about = @'
# about_Fake

## SHORT DESCRIPTION
Describes the `Fake` module.

## LONG DESCRIPTION
Fake things are fake.

```powershell
Get-FakeThing ./a.txt
```
'@

    $utf8 = [System.Text.UTF8Encoding]::new($false)
    [IO.File]::WriteAllText((Join-Path $docs 'Get-FakeThing.md'), $page, $utf8)
    [IO.File]::WriteAllText((Join-Path $docs 'Set-FakeThing.md'), $minimal, $utf8)
    [IO.File]::WriteAllText((Join-Path $docs 'about_Fake.md'), $about, $utf8)
    [IO.File]::WriteAllText((Join-Path $docs 'README.md'), "# Not a help page`n", $utf8)

    $script:xmlPath = Join-Path $out 'Fake-Help.xml'
    $script:result = ConvertTo-MamlHelp -SourcePath $docs -OutputPath $xmlPath -WarningAction SilentlyContinue
    $script:raw = [IO.File]::ReadAllText($xmlPath)
    $script:xml = [xml]::new()
    $xml.Load($xmlPath)

    $script:ns = [System.Xml.XmlNamespaceManager]::new($xml.NameTable)
    $ns.AddNamespace('msh', 'http://msh')
    $ns.AddNamespace('maml', 'http://schemas.microsoft.com/maml/2004/10')
    $ns.AddNamespace('command', 'http://schemas.microsoft.com/maml/dev/command/2004/10')
    $ns.AddNamespace('dev', 'http://schemas.microsoft.com/maml/dev/2004/10')

    function script:Get-CommandNode([string]$Name) {
        $xml.SelectSingleNode("/msh:helpItems/command:command[command:details/command:name='$Name']", $ns)
    }
}

AfterAll {
    Remove-Module HelpBuilder -ErrorAction SilentlyContinue
}

Describe 'ConvertTo-MamlHelp' {
    It 'returns the written file' {
        $result | Should -BeOfType [System.IO.FileInfo]
        $result.FullName | Should -Be $xmlPath
    }

    It 'writes well-formed MAML with the helpItems root' {
        $xml.DocumentElement.LocalName | Should -Be 'helpItems'
        $xml.DocumentElement.NamespaceURI | Should -Be 'http://msh'
        $xml.DocumentElement.GetAttribute('schema') | Should -Be 'maml'
    }

    It 'writes UTF-8 without a byte order mark' {
        $bytes = [IO.File]::ReadAllBytes($xmlPath)
        $bytes[0] | Should -Be ([byte][char]'<')
    }

    It 'writes one command per Verb-Noun page and skips about_ and other pages' {
        $names = @($xml.SelectNodes('/msh:helpItems/command:command/command:details/command:name', $ns) | ForEach-Object InnerText)
        $names | Should -Be @('Get-FakeThing', 'Set-FakeThing')
    }

    It 'writes name, verb, noun and synopsis' {
        $c = Get-CommandNode 'Get-FakeThing'
        $c.SelectSingleNode('command:details/command:verb', $ns).InnerText | Should -Be 'Get'
        $c.SelectSingleNode('command:details/command:noun', $ns).InnerText | Should -Be 'FakeThing'
        $c.SelectSingleNode('command:details/maml:description/maml:para', $ns).InnerText |
            Should -Be 'Gets fake things where size < limit & name matches.'
    }

    It 'writes one description paragraph per markdown paragraph' {
        $paras = (Get-CommandNode 'Get-FakeThing').SelectNodes('maml:description/maml:para', $ns)
        $paras.Count | Should -Be 2
        $paras[0].InnerText | Should -Be 'The Get-FakeThing cmdlet compares a < b && c > d and returns things.'
    }

    It 'writes one syntax item per parameter set with the parameters of its syntax line' {
        $items = (Get-CommandNode 'Get-FakeThing').SelectNodes('command:syntax/command:syntaxItem', $ns)
        $items.Count | Should -Be 2
        @($items[0].SelectNodes('command:parameter/maml:name', $ns) | ForEach-Object InnerText) | Should -Be @('Path', 'Limit', 'Force')
        @($items[1].SelectNodes('command:parameter/maml:name', $ns) | ForEach-Object InnerText) | Should -Be @('LiteralPath', 'Limit', 'Force')
    }

    It 'uses the parameter details of the matching parameter set in syntax items' {
        $items = (Get-CommandNode 'Get-FakeThing').SelectNodes('command:syntax/command:syntaxItem', $ns)
        $limitPath = $items[0].SelectSingleNode("command:parameter[maml:name='Limit']", $ns)
        $limitLiteral = $items[1].SelectSingleNode("command:parameter[maml:name='Limit']", $ns)
        $limitPath.GetAttribute('position') | Should -Be 'named'
        $limitLiteral.GetAttribute('position') | Should -Be '1'
        $path = $items[0].SelectSingleNode("command:parameter[maml:name='Path']", $ns)
        $path.GetAttribute('required') | Should -Be 'true'
        $path.GetAttribute('globbing') | Should -Be 'true'
        $path.GetAttribute('pipelineInput') | Should -Be 'True (ByPropertyName, ByValue)'
        # switches carry no value in syntax
        $items[0].SelectSingleNode("command:parameter[maml:name='Force']/command:parameterValue", $ns) | Should -BeNullOrEmpty
    }

    It 'writes every documented parameter except CommonParameters with its details' {
        $params = (Get-CommandNode 'Get-FakeThing').SelectNodes('command:parameters/command:parameter', $ns)
        $params.Count | Should -Be 4
        $lit = $params | Where-Object { $_.SelectSingleNode('maml:name', $ns).InnerText -eq 'LiteralPath' }
        $lit.GetAttribute('aliases') | Should -Be 'PSPath, LP'
        $lit.GetAttribute('position') | Should -Be 'named'
        $lit.GetAttribute('variableLength') | Should -Be 'true'
        $lit.SelectSingleNode('dev:type/maml:name', $ns).InnerText | Should -Be 'String[]'
        $lit.SelectSingleNode('dev:defaultValue', $ns).InnerText | Should -Be 'None'
        $lit.SelectSingleNode('maml:description/maml:para', $ns).InnerText | Should -Be 'Literal paths.'
    }

    It 'writes the examples with the prompt stripped from the code' {
        $examples = (Get-CommandNode 'Get-FakeThing').SelectNodes('command:examples/command:example', $ns)
        $examples.Count | Should -Be 2
        $examples[0].SelectSingleNode('maml:title', $ns).InnerText | Should -Match 'Example 1: Get one thing'
        $examples[0].SelectSingleNode('dev:code', $ns).InnerText | Should -Be 'Get-FakeThing -Path ./a.txt'
        $examples[0].SelectSingleNode('dev:remarks/maml:para', $ns).InnerText | Should -Be 'Gets the thing at ./a.txt.'
        $examples[1].SelectSingleNode('dev:code', $ns).InnerText |
            Should -Be "Get-FakeThing ./*.txt | Where-Object { `$_.Size -lt 10 -and `$_.Name -ne '&' }"
    }

    It 'writes inputs, outputs, notes and related links' {
        $c = Get-CommandNode 'Get-FakeThing'
        $c.SelectSingleNode('command:inputTypes/command:inputType/dev:type/maml:name', $ns).InnerText | Should -Be 'System.String'
        $c.SelectSingleNode('command:returnValues/command:returnValue/dev:type/maml:name', $ns).InnerText | Should -Be 'Fake.Thing'
        $c.SelectSingleNode('maml:alertSet/maml:alert/maml:para', $ns).InnerText | Should -Be 'Notes & more.'
        $links = $c.SelectNodes('command:relatedLinks/maml:navigationLink', $ns)
        @($links | ForEach-Object { $_.SelectSingleNode('maml:linkText', $ns).InnerText }) | Should -Be @('Online Version:', 'about_Fake', 'Fake docs')
        $links[0].SelectSingleNode('maml:uri', $ns).InnerText | Should -Be 'https://example.com/get-fakething'
    }

    It 'escapes < and & in text' {
        $raw | Should -Match ([regex]::Escape('size &lt; limit &amp; name'))
        $raw | Should -Match ([regex]::Escape('a &lt; b &amp;&amp; c'))
        $raw | Should -Match ([regex]::Escape('Limit &lt; 100 &amp;'))
        $raw | Should -Match ([regex]::Escape("-ne '&amp;'"))
        $raw | Should -Not -Match 'size < limit'
        $raw | Should -Not -Match "'&'"
    }

    It 'reads a CRLF page with ~~~ fences and no optional sections' {
        $c = Get-CommandNode 'Set-FakeThing'
        $c.SelectNodes('command:syntax/command:syntaxItem', $ns).Count | Should -Be 1
        $c.SelectNodes('command:parameters/command:parameter', $ns).Count | Should -Be 1
        $c.SelectNodes('command:examples/command:example', $ns).Count | Should -Be 0
        $c.SelectSingleNode('command:syntax/command:syntaxItem/command:parameter', $ns).GetAttribute('position') | Should -Be '0'
    }

    It 'is readable by Get-Help' {
        $modulePath = Join-Path $TestDrive 'FakeHelp.psm1'
        Set-Content -LiteralPath $modulePath -Value @"
function Get-FakeThing {
    # .EXTERNALHELP $xmlPath
    [CmdletBinding(DefaultParameterSetName = 'Path')]
    param(
        [Parameter(Mandatory, Position = 0, ParameterSetName = 'Path')][string[]]`$Path,
        [Parameter(Mandatory, ParameterSetName = 'LiteralPath')][string[]]`$LiteralPath,
        [int]`$Limit,
        [switch]`$Force
    )
}
"@
        $module = Import-Module $modulePath -PassThru -Force
        try {
            $help = Get-Help Get-FakeThing -Full
            $help.Synopsis | Should -Be 'Gets fake things where size < limit & name matches.'
            @($help.parameters.parameter).Count | Should -Be 4
            @($help.examples.example).Count | Should -Be 2
            ((Get-Help Get-FakeThing -Examples) | Out-String) | Should -Match ([regex]::Escape('Get-FakeThing -Path ./a.txt'))
        }
        finally {
            Remove-Module $module
        }
    }
}

Describe 'Get-MarkdownHelp' {
    BeforeAll {
        $script:md = Get-MarkdownHelp -Path (Join-Path $docs 'Get-FakeThing.md')
    }

    It 'parses name, synopsis, description and notes' {
        $md.Name | Should -Be 'Get-FakeThing'
        $md.Synopsis | Should -Be 'Gets fake things where size < limit & name matches.'
        $md.Description | Should -Match '^The Get-FakeThing cmdlet'
        $md.Notes | Should -Be 'Notes & more.'
    }

    It 'parses the parameters without CommonParameters' {
        @($md.Parameters.Name) | Should -Be @('Path', 'LiteralPath', 'Limit', 'Force')
        $path = $md.Parameters | Where-Object Name -EQ 'Path'
        $path.Type | Should -Be 'String[]'
        $path.Required | Should -BeTrue
        $path.Position | Should -Be '0'
        $path.Globbing | Should -BeTrue
        $path.PipelineInput | Should -Be 'True (ByPropertyName, ByValue)'
        $path.ParameterSets | Should -Be @('Path')
        ($md.Parameters | Where-Object Name -EQ 'LiteralPath').Aliases | Should -Be @('PSPath', 'LP')
        ($md.Parameters | Where-Object Name -EQ 'Limit').ParameterSets | Should -Be @('Path', 'LiteralPath')
        ($md.Parameters | Where-Object Name -EQ 'Limit').DefaultValue | Should -Be '10'
        ($md.Parameters | Where-Object Name -EQ 'Force').ParameterSets | Should -Be @('(All)')
    }

    It 'parses the syntax blocks' {
        @($md.Syntax.ParameterSetName) | Should -Be @('Path', 'LiteralPath')
        $md.Syntax[0].IsDefault | Should -BeTrue
        @($md.Syntax[1].Parameters | Where-Object Required | ForEach-Object Name) | Should -Be @('LiteralPath')
    }

    It 'parses the examples with runnable code' {
        $md.Examples.Count | Should -Be 2
        $md.Examples[0].Title | Should -Be 'Example 1: Get one thing'
        $md.Examples[0].Code | Should -Be 'Get-FakeThing -Path ./a.txt'
        $md.Examples[1].Remarks | Should -Be 'Only small things & friends.'
        { [scriptblock]::Create($md.Examples[1].Code) } | Should -Not -Throw
    }

    It 'parses inputs, outputs and links' {
        $md.Inputs[0].Type | Should -Be 'System.String'
        $md.Inputs[0].Description | Should -Be 'Paths can be piped.'
        $md.Outputs[0].Type | Should -Be 'Fake.Thing'
        @($md.Links.Text) | Should -Be @('about_Fake', 'Fake docs')
        $md.OnlineVersion | Should -Be 'https://example.com/get-fakething'
    }

    It 'gives the same result for CRLF and LF line endings' {
        $crlf = Join-Path $TestDrive 'crlf.md'
        [IO.File]::WriteAllText($crlf, ((Get-Content -Raw (Join-Path $docs 'Get-FakeThing.md')) -replace "`r?`n", "`r`n"))
        $a = Get-MarkdownHelp -Path $crlf | Select-Object -Property * -ExcludeProperty Path
        $b = $md | Select-Object -Property * -ExcludeProperty Path
        ($a | ConvertTo-Json -Depth 10) | Should -Be ($b | ConvertTo-Json -Depth 10)
    }
}

Describe 'ConvertTo-AboutHelp' {
    BeforeAll {
        $script:aboutFiles = @(ConvertTo-AboutHelp -SourcePath $docs -OutputFolder $out)
        $script:aboutLines = [IO.File]::ReadAllLines((Join-Path $out 'about_Fake.help.txt'))
    }

    It 'converts only about_ pages' {
        $aboutFiles.Name | Should -Be @('about_Fake.help.txt')
    }

    It 'turns headings into plain upper-case headings' {
        $aboutLines[0..5] | Should -Be @('TOPIC', '    about_Fake', '', 'SHORT DESCRIPTION', '    Describes the Fake module.', '')
        $aboutLines | Should -Contain 'SHORT DESCRIPTION'
        $aboutLines | Should -Contain 'LONG DESCRIPTION'
        ($aboutLines -match '^#') | Should -BeNullOrEmpty
    }

    It 'indents code by 4 spaces without fences' {
        $aboutLines | Should -Contain '    Get-FakeThing ./a.txt'
        ($aboutLines -match '```') | Should -BeNullOrEmpty
    }
}
