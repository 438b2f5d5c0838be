#Requires -Version 7.0
<#
.SYNOPSIS
    Builds PowerShell help (MAML and about_*.help.txt) from platyPS-style markdown, without platyPS.

.DESCRIPTION
    ConvertTo-MamlHelp   docs/en-US/Verb-Noun.md -> <Module>.dll-Help.xml (one file for all cmdlets)
    ConvertTo-AboutHelp  docs/en-US/about_*.md   -> about_*.help.txt
    Get-MarkdownHelp     one Verb-Noun.md        -> parsed object (used by the help tests)

    The markdown layout is the one platyPS 0.14 writes (front matter, # Name, ## SYNOPSIS, ## SYNTAX with
    ### <SetName> [(Default)] and a fenced syntax line, ## DESCRIPTION, ## EXAMPLES with ### <title>,
    ## PARAMETERS with ### -<Name> and a ```yaml block, ## INPUTS, ## OUTPUTS, ## NOTES, ## RELATED LINKS).
    CRLF or LF, fences with or without a language tag, and missing optional sections are all accepted.
#>

Set-StrictMode -Version 3.0

$script:NsMsh = 'http://msh'
$script:NsMaml = 'http://schemas.microsoft.com/maml/2004/10'
$script:NsCommand = 'http://schemas.microsoft.com/maml/dev/command/2004/10'
$script:NsDev = 'http://schemas.microsoft.com/maml/dev/2004/10'
$script:NsMSHelp = 'http://msdn.microsoft.com/mshelp'

$script:ListItemPattern = '^\s*(?:[-*+]|\d{1,9}[.)])\s+'
$script:PromptPattern = '^\s*PS(?:\s[^>\n]*)?>\s?'
$script:LinkPattern = '\[(?<text>[^\]]*)\]\((?<uri>[^)\s]*)(?:\s+"[^"]*")?\)'

#region Markdown tokenizer

function Split-MdLine {
    # Reads a file (any BOM / encoding that ReadAllText detects) and returns its lines with CRLF/CR normalized.
    param([Parameter(Mandatory)][string]$LiteralPath)
    $text = [System.IO.File]::ReadAllText($LiteralPath)
    $text = $text -replace "`r`n?", "`n"
    , $text.Split("`n")
}

function Read-MdFrontMatter {
    # Returns @{ Metadata = ordered dictionary; Body = remaining lines }.
    param([string[]]$Lines)
    $meta = [ordered]@{}
    $start = 0
    while ($start -lt $Lines.Count -and $Lines[$start] -match '^\s*$') { $start++ }
    if ($start -lt $Lines.Count -and $Lines[$start] -match '^---\s*$') {
        $end = -1
        for ($j = $start + 1; $j -lt $Lines.Count; $j++) {
            if ($Lines[$j] -match '^(?:---|\.\.\.)\s*$') { $end = $j; break }
        }
        if ($end -gt 0) {
            for ($j = $start + 1; $j -lt $end; $j++) {
                if ($Lines[$j] -match '^\s*(?<k>[^:#][^:]*?)\s*:\s*(?<v>.*?)\s*$') {
                    $meta[$Matches.k] = $Matches.v.Trim('"', "'")
                }
            }
            $start = $end + 1
        }
    }
    $body = if ($start -lt $Lines.Count) { $Lines[$start..($Lines.Count - 1)] } else { @() }
    @{ Metadata = $meta; Body = [string[]]$body }
}

function Get-MdBlock {
    # Splits markdown lines into a flat list of blocks:
    #   Heading (Level, Text), Code (Lang, Text), Para (Lines)
    # Fenced code (``` or ~~~, optional info string), indented code, ATX headings and paragraphs are recognized;
    # everything else (lists, tables, quotes) is kept as paragraph lines.
    param([string[]]$Lines)
    $blocks = [System.Collections.Generic.List[object]]::new()
    $n = $Lines.Count
    $i = 0
    $fenceRe = '^(?<indent> {0,3})(?<fence>`{3,}|~{3,})[ \t]*(?<info>[^`]*?)\s*$'
    $headRe = '^ {0,3}(?<h>#{1,6})(?:[ \t]+(?<t>.*?))?[ \t]*$'
    while ($i -lt $n) {
        $line = $Lines[$i]
        if ($line -match '^\s*$') { $i++; continue }

        if ($line -match $fenceRe) {
            $fence = $Matches.fence
            $indent = $Matches.indent.Length
            $info = $Matches.info
            $lang = if ($info) { ($info -split '\s+')[0].Trim('{', '}', '.') } else { '' }
            $closeRe = '^ {0,3}' + [regex]::Escape([string]$fence[0]) + '{' + $fence.Length + ',}\s*$'
            $code = [System.Collections.Generic.List[string]]::new()
            $i++
            while ($i -lt $n -and $Lines[$i] -notmatch $closeRe) {
                $l = $Lines[$i]
                $k = 0
                while ($k -lt $indent -and $k -lt $l.Length -and $l[$k] -eq ' ') { $k++ }
                $code.Add($l.Substring($k).TrimEnd())
                $i++
            }
            $i++ # closing fence (or end of file for an unclosed fence)
            $blocks.Add([pscustomobject]@{ Kind = 'Code'; Level = 0; Lang = $lang; Text = ($code -join "`n"); Lines = $null })
            continue
        }

        if ($line -match $headRe) {
            $t = [string]$Matches.t
            $t = ($t -replace '(?:^|\s+)#+\s*$', '').Trim()
            $blocks.Add([pscustomobject]@{ Kind = 'Heading'; Level = $Matches.h.Length; Lang = $null; Text = $t; Lines = $null })
            $i++
            continue
        }

        if ($line -match '^(?: {4}|\t)') {
            # Indented code block: runs while lines are indented or blank.
            $code = [System.Collections.Generic.List[string]]::new()
            while ($i -lt $n -and ($Lines[$i] -match '^(?: {4}|\t)' -or $Lines[$i] -match '^\s*$')) {
                $code.Add(($Lines[$i] -replace '^(?: {4}|\t)', '').TrimEnd())
                $i++
            }
            while ($code.Count -gt 0 -and $code[$code.Count - 1] -eq '') { $code.RemoveAt($code.Count - 1) }
            $blocks.Add([pscustomobject]@{ Kind = 'Code'; Level = 0; Lang = ''; Text = ($code -join "`n"); Lines = $null })
            continue
        }

        $para = [System.Collections.Generic.List[string]]::new()
        while ($i -lt $n -and $Lines[$i] -notmatch '^\s*$' -and $Lines[$i] -notmatch $headRe -and $Lines[$i] -notmatch $fenceRe) {
            $para.Add($Lines[$i])
            $i++
        }
        $blocks.Add([pscustomobject]@{ Kind = 'Para'; Level = 0; Lang = $null; Text = $null; Lines = [string[]]$para })
    }
    , $blocks.ToArray()
}

function Split-MdSection {
    # Groups blocks under the headings of the given level. Returns @{ Preamble = blocks; Sections = @(@{Title; Blocks}) }.
    param([object[]]$Blocks, [int]$Level)
    $pre = [System.Collections.Generic.List[object]]::new()
    $sections = [System.Collections.Generic.List[object]]::new()
    $current = $null
    foreach ($b in $Blocks) {
        if ($b.Kind -eq 'Heading' -and $b.Level -le $Level) {
            if ($b.Level -eq $Level) {
                $current = @{ Title = $b.Text; Blocks = [System.Collections.Generic.List[object]]::new() }
                $sections.Add($current)
                continue
            }
            $current = $null # a higher-level heading ends the group
            continue
        }
        if ($null -ne $current) { $current.Blocks.Add($b) } else { $pre.Add($b) }
    }
    @{ Preamble = $pre.ToArray(); Sections = $sections.ToArray() }
}

function Join-MdParagraph {
    # Joins the soft-wrapped lines of a paragraph with spaces; list items, table rows and hard breaks keep their line.
    param([string[]]$Lines)
    $sb = [System.Text.StringBuilder]::new()
    $hardBreak = $false
    foreach ($raw in $Lines) {
        $isRow = $raw -match $script:ListItemPattern -or $raw -match '^\s*\|' -or $raw -match '^\s*>'
        $line = if ($raw -match $script:ListItemPattern -or $raw -match '^\s*\|') { $raw.TrimEnd() } else { $raw.Trim() }
        $endsHard = $raw -match '(?:  |\\)$'
        if ($endsHard) { $line = $line.TrimEnd('\').TrimEnd() }
        if ($sb.Length -gt 0) {
            if ($isRow -or $hardBreak) { [void]$sb.Append("`n") } else { [void]$sb.Append(' ') }
        }
        [void]$sb.Append($line)
        $hardBreak = $endsHard -or ($raw -match '^\s*\|')
    }
    $sb.ToString()
}

function Format-InlineText {
    param([string]$Text)
    $t = [regex]::Replace($Text, $script:LinkPattern, {
            param($m)
            $u = $m.Groups['uri'].Value
            if ($u -match '^[a-z][a-z0-9+.-]*://') { '{0} ({1})' -f $m.Groups['text'].Value, $u } else { $m.Groups['text'].Value }
        })
    $t = $t -replace '<(https?://[^>\s]+)>', '$1'
    $t = $t -replace '(`+)(.+?)\1', '$2'
    $t -replace '\*\*(.+?)\*\*', '$1'
}

function ConvertTo-MdProse {
    # Renders blocks as plain text: paragraphs separated by a blank line, inline markup (code spans, bold, links)
    # reduced to text, code verbatim. (Code is not indented: Get-Help trims the start of every maml:para.)
    param([object[]]$Blocks)
    $parts = foreach ($b in $Blocks) {
        switch ($b.Kind) {
            'Para' { Format-InlineText (Join-MdParagraph $b.Lines) }
            'Heading' { Format-InlineText $b.Text }
            'Code' { $b.Text.Trim("`n") }
        }
    }
    (@($parts) | Where-Object { $_ -ne '' }) -join "`n`n"
}

function Test-YamlBlock {
    param($Block)
    if ($Block.Kind -ne 'Code') { return $false }
    if ($Block.Lang -match '^ya?ml$') { return $true }
    (-not $Block.Lang) -and ($Block.Text -match '(?m)^\s*(?:Type|Required|Position|Parameter Sets)\s*:')
}

function ConvertFrom-SimpleYaml {
    param([string]$Text)
    $h = @{}
    foreach ($l in $Text -split "`n") {
        if ($l -match '^\s*(?<k>[^:#][^:]*?)\s*:\s*(?<v>.*?)\s*$') { $h[$Matches.k.ToLowerInvariant()] = $Matches.v }
    }
    $h
}

function Split-List {
    param([string]$Value)
    if ([string]::IsNullOrWhiteSpace($Value)) { return , [string[]]@() }
    # "None" alone means an empty list (platyPS writes "Aliases: None"); in a list it is a value (-OverflowFix None).
    $items = @($Value -split ',' | ForEach-Object { $_.Trim() } | Where-Object { $_ })
    if ($items.Count -eq 1 -and $items[0] -eq 'None') { return , [string[]]@() }
    , [string[]]$items
}

function ConvertTo-Bool {
    param([string]$Value, [bool]$Default = $false)
    if ([string]::IsNullOrWhiteSpace($Value)) { return $Default }
    $Value.TrimStart() -match '^(?:true|yes|\$true)\b'
}

#endregion

#region Page parser

function Get-SyntaxParameter {
    # Parses one syntax line ("Verb-Noun [-Path] <String[]> [-Force] [<CommonParameters>]") into parameter usages.
    param([string]$Line, [string]$CommandName)
    $body = $Line.Trim()
    if ($CommandName -and $body.StartsWith($CommandName, [System.StringComparison]::OrdinalIgnoreCase)) {
        $body = $body.Substring($CommandName.Length)
    }
    else {
        $body = $body -replace '^\S+', ''
    }
    $val = '(?:<[^>]*>|\{[^}]*\})'
    $re = '\[\[-(?<optPos>\w+)\]\s*(?<optPosV>' + $val + ')?\s*\]' +
    '|\[-(?<reqPos>\w+)\]\s*(?<reqPosV>' + $val + ')' +
    '|\[-(?<opt>\w+)(?:\s+(?<optV>' + $val + '))?\s*\]' +
    '|(?<![\w<.`-])-(?<req>\w+)(?:\s+(?<reqV>' + $val + '))?'
    $result = foreach ($m in [regex]::Matches($body, $re)) {
        $kind = foreach ($g in 'optPos', 'reqPos', 'opt', 'req') { if ($m.Groups[$g].Success) { $g; break } }
        $v = $m.Groups[$kind + 'V']
        $type = 'SwitchParameter'
        $accepted = [string[]]@()
        if ($v.Success) {
            if ($v.Value.StartsWith('<')) { $type = $v.Value.Trim('<', '>').Trim() }
            else {
                $type = ''
                $accepted = [string[]]@($v.Value.Trim('{', '}') -split '\|' | ForEach-Object { $_.Trim() } | Where-Object { $_ })
            }
        }
        [pscustomobject]@{
            Name           = $m.Groups[$kind].Value
            Type           = $type
            AcceptedValues = $accepted
            Required       = $kind -in 'reqPos', 'req'
            Positional     = $kind -in 'reqPos', 'optPos'
        }
    }
    , [object[]]@($result)
}

function Get-SyntaxSet {
    param([object[]]$Blocks, [string]$CommandName)
    $sets = [System.Collections.Generic.List[object]]::new()
    $addCodeBlocks = {
        param([object[]]$codeBlocks, [string]$setTitle)
        $setName = $null; $isDefault = $false
        if ($setTitle) {
            if ($setTitle -match '^(?<n>.*?)\s*\((?<d>Default)\)\s*$') { $setName = $Matches.n.Trim(); $isDefault = $true }
            else { $setName = $setTitle.Trim() }
        }
        $entries = [System.Collections.Generic.List[string]]::new()
        foreach ($cb in $codeBlocks) {
            foreach ($l in $cb.Text -split "`n") {
                $t = $l.Trim()
                if (-not $t) { continue }
                $t = $t -replace $script:PromptPattern, ''
                $startsEntry = $entries.Count -eq 0 -or
                ($CommandName -and $t.StartsWith($CommandName + ' ', [System.StringComparison]::OrdinalIgnoreCase)) -or
                ($CommandName -and $t -ieq $CommandName)
                if ($startsEntry) { $entries.Add($t) } else { $entries[$entries.Count - 1] += ' ' + $t }
            }
        }
        $k = 0
        foreach ($e in $entries) {
            $name = if ($setName -and $k -eq 0) { $setName } elseif ($setName) { "$setName$($k + 1)" } else { $null }
            $sets.Add([pscustomobject]@{
                    ParameterSetName = $name
                    IsDefault        = $isDefault -and $k -eq 0
                    Text             = $e
                    Parameters       = Get-SyntaxParameter -Line $e -CommandName $CommandName
                })
            $k++
        }
    }
    $split = Split-MdSection -Blocks $Blocks -Level 3
    $pre = @($split.Preamble | Where-Object Kind -EQ 'Code')
    if ($pre.Count) { & $addCodeBlocks $pre $null }
    foreach ($s in $split.Sections) {
        $code = @($s.Blocks | Where-Object Kind -EQ 'Code')
        if ($code.Count) { & $addCodeBlocks $code $s.Title }
    }
    if ($sets.Count -eq 1 -and -not $sets[0].ParameterSetName) { $sets[0].ParameterSetName = '__AllParameterSets' }
    $i = 1
    foreach ($s in $sets) { if (-not $s.ParameterSetName) { $s.ParameterSetName = "Set$i" }; $i++ }
    , $sets.ToArray()
}

function ConvertTo-ExampleCode {
    param([string]$Text)
    ((($Text -split "`n") | ForEach-Object { $_ -replace $script:PromptPattern, '' }) -join "`n").Trim("`n")
}

function Read-MarkdownHelpPage {
    param([Parameter(Mandatory)][string]$LiteralPath)

    $fm = Read-MdFrontMatter -Lines (Split-MdLine -LiteralPath $LiteralPath)
    $blocks = Get-MdBlock -Lines $fm.Body
    $fileName = [System.IO.Path]::GetFileNameWithoutExtension($LiteralPath)

    $top = Split-MdSection -Blocks $blocks -Level 1
    $name = if ($top.Sections.Count) { $top.Sections[0].Title } else { $fileName }
    if (-not $name) { $name = $fileName }
    $pageBlocks = if ($top.Sections.Count) { @($top.Sections | ForEach-Object { $_.Blocks }) } else { $blocks }

    $h2 = Split-MdSection -Blocks $pageBlocks -Level 2
    $section = @{}
    foreach ($s in $h2.Sections) {
        $key = ($s.Title -replace '\s+', ' ').Trim().ToUpperInvariant()
        if (-not $section.ContainsKey($key)) { $section[$key] = $s.Blocks.ToArray() }
    }
    $get = { param($k) if ($section.ContainsKey($k)) { , [object[]]$section[$k] } else { , [object[]]@() } }

    # SYNTAX
    $syntax = Get-SyntaxSet -Blocks (& $get 'SYNTAX') -CommandName $name

    # EXAMPLES
    $examples = foreach ($ex in (Split-MdSection -Blocks (& $get 'EXAMPLES') -Level 3).Sections) {
        $intro = [System.Collections.Generic.List[object]]::new()
        $code = [System.Collections.Generic.List[string]]::new()
        $rest = [System.Collections.Generic.List[object]]::new()
        $state = 'intro'
        foreach ($b in $ex.Blocks) {
            $isRunnable = $b.Kind -eq 'Code' -and $b.Lang -notmatch '^(?:output|text|console|plaintext|txt)$'
            if ($state -eq 'intro') {
                if ($isRunnable) { $code.Add((ConvertTo-ExampleCode $b.Text)); $state = 'code' }
                else { $intro.Add($b) }
            }
            elseif ($state -eq 'code' -and $isRunnable) { $code.Add((ConvertTo-ExampleCode $b.Text)) }
            else { $state = 'remarks'; $rest.Add($b) }
        }
        @{
            Title        = $ex.Title
            Introduction = ConvertTo-MdProse $intro.ToArray()
            Code         = $code -join "`n`n"
            Remarks      = ConvertTo-MdProse $rest.ToArray()
        }
    }

    # PARAMETERS
    $parameters = foreach ($p in (Split-MdSection -Blocks (& $get 'PARAMETERS') -Level 3).Sections) {
        if (-not $p.Title.StartsWith('-')) { continue } # CommonParameters, WorkflowCommonParameters
        $pName = $p.Title.TrimStart('-').Trim()
        $yamls = @($p.Blocks | Where-Object { Test-YamlBlock $_ })
        $desc = ConvertTo-MdProse @($p.Blocks | Where-Object { -not (Test-YamlBlock $_) })
        $details = foreach ($y in $yamls) {
            $h = ConvertFrom-SimpleYaml $y.Text
            $sets = Split-List $h['parameter sets']
            if ($sets.Count -eq 0) { $sets = [string[]]@('(All)') }
            @{
                Type           = [string]$h['type']
                ParameterSets  = $sets
                Aliases        = Split-List $h['aliases']
                AcceptedValues = Split-List $h['accepted values']
                Required       = ConvertTo-Bool $h['required']
                Position       = if ($h['position']) { $h['position'] } else { 'Named' }
                DefaultValue   = if ($h['default value']) { $h['default value'] } else { 'None' }
                PipelineInput  = if ($h['accept pipeline input']) { $h['accept pipeline input'] } else { 'False' }
                Globbing       = ConvertTo-Bool $h['accept wildcard characters']
            }
        }
        $details = @($details)
        $type = ''
        foreach ($d in $details) { if ($d.Type) { $type = $d.Type; break } }
        if (-not $type) {
            # fall back to the syntax lines
            foreach ($s in $syntax) { foreach ($sp in $s.Parameters) { if (-not $type -and $sp.Name -eq $pName -and $sp.Type) { $type = $sp.Type } } }
        }
        $first = if ($details.Count) { $details[0] } else { $null }
        $allSets = if ($details.Count) { [string[]]@($details | ForEach-Object { $_.ParameterSets } | Select-Object -Unique) } else { [string[]]@('(All)') }
        @{
            Name                = $pName
            Description         = $desc
            Type                = $type
            ParameterSets       = $allSets
            Aliases             = if ($first) { $first.Aliases } else { [string[]]@() }
            AcceptedValues      = if ($first) { $first.AcceptedValues } else { [string[]]@() }
            Required            = if ($first) { $first.Required } else { $false }
            Position            = if ($first) { $first.Position } else { 'Named' }
            DefaultValue        = if ($first) { $first.DefaultValue } else { 'None' }
            PipelineInput       = if ($first) { $first.PipelineInput } else { 'False' }
            Globbing            = if ($first) { $first.Globbing } else { $false }
            ParameterSetDetails = [object[]]$details
        }
    }

    # INPUTS / OUTPUTS
    $typeList = {
        param([object[]]$sectionBlocks)
        $split = Split-MdSection -Blocks $sectionBlocks -Level 3
        $items = [System.Collections.Generic.List[object]]::new()
        foreach ($b in $split.Preamble) {
            # tolerate "None" or a type name written as a paragraph instead of a ### heading
            if ($b.Kind -eq 'Para') { foreach ($l in $b.Lines) { if ($l.Trim()) { $items.Add(@{ Type = $l.Trim().Trim('`', '*'); Description = '' }) } } }
        }
        foreach ($s in $split.Sections) { $items.Add(@{ Type = $s.Title; Description = ConvertTo-MdProse $s.Blocks.ToArray() }) }
        , $items.ToArray()
    }

    # RELATED LINKS
    $links = [System.Collections.Generic.List[object]]::new()
    foreach ($b in (& $get 'RELATED LINKS')) {
        if ($b.Kind -ne 'Para') { continue }
        foreach ($l in $b.Lines) {
            $t = ($l -replace $script:ListItemPattern, '').Trim()
            if (-not $t) { continue }
            $ms = [regex]::Matches($t, $script:LinkPattern)
            if ($ms.Count) { foreach ($m in $ms) { $links.Add(@{ Text = $m.Groups['text'].Value; Uri = $m.Groups['uri'].Value }) } }
            elseif ($t -match '^<(?<u>[a-z]+://[^>]+)>$') { $links.Add(@{ Text = $Matches.u; Uri = $Matches.u }) }
            else { $links.Add(@{ Text = $t; Uri = '' }) }
        }
    }

    $online = if ($fm.Metadata.Contains('online version')) { [string]$fm.Metadata['online version'] } else { '' }
    [pscustomobject]@{
        PSTypeName    = 'PtqTools.MarkdownHelp'
        Name          = $name
        Synopsis      = ConvertTo-MdProse (& $get 'SYNOPSIS')
        Syntax        = $syntax
        Description   = ConvertTo-MdProse (& $get 'DESCRIPTION')
        Examples      = [object[]]@($examples)
        Parameters    = [object[]]@($parameters)
        Inputs        = & $typeList (& $get 'INPUTS')
        Outputs       = & $typeList (& $get 'OUTPUTS')
        Notes         = ConvertTo-MdProse (& $get 'NOTES')
        Links         = $links.ToArray()
        OnlineVersion = $online
        Metadata      = $fm.Metadata
        Path          = $LiteralPath
    }
}

#endregion

#region MAML writer

function Remove-InvalidXmlChar {
    param([string]$Text)
    if ($null -eq $Text) { return '' }
    $Text -replace '[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]', ''
}

function Write-MamlElement {
    param([System.Xml.XmlWriter]$Writer, [string]$Prefix, [string]$Name, [string]$Text)
    $ns = switch ($Prefix) { 'maml' { $script:NsMaml } 'command' { $script:NsCommand } 'dev' { $script:NsDev } }
    $Writer.WriteElementString($Prefix, $Name, $ns, (Remove-InvalidXmlChar $Text))
}

function Write-MamlPara {
    # Writes one <maml:para> per blank-line-separated paragraph of $Text.
    param([System.Xml.XmlWriter]$Writer, [string]$Text)
    if ([string]::IsNullOrWhiteSpace($Text)) { return }
    foreach ($p in ($Text -split '\n[ \t]*\n')) {
        if ($p.Trim()) { Write-MamlElement $Writer 'maml' 'para' $p.TrimEnd() }
    }
}

function Write-MamlDescription {
    param([System.Xml.XmlWriter]$Writer, [string]$Text)
    $Writer.WriteStartElement('maml', 'description', $script:NsMaml)
    Write-MamlPara $Writer $Text
    $Writer.WriteEndElement()
}

function Write-MamlParameter {
    param(
        [System.Xml.XmlWriter]$Writer,
        [hashtable]$Parameter,
        [bool]$Required,
        [string]$Position,
        [switch]$InSyntax
    )
    $type = if ($Parameter.Type) { $Parameter.Type } else { 'Object' }
    $isSwitch = $type -match '^(?:System\.Management\.Automation\.)?SwitchParameter$'
    $pos = if ([string]::IsNullOrWhiteSpace($Position) -or $Position -match '^named$') { 'named' } else { $Position.Trim() }
    $aliases = if ($Parameter.Aliases -and @($Parameter.Aliases).Count) { $Parameter.Aliases -join ', ' } else { 'none' }
    $variableLength = if ($type.EndsWith('[]')) { 'true' } else { 'false' }

    $Writer.WriteStartElement('command', 'parameter', $script:NsCommand)
    $Writer.WriteAttributeString('required', $Required.ToString().ToLowerInvariant())
    $Writer.WriteAttributeString('variableLength', $variableLength)
    $Writer.WriteAttributeString('globbing', ([bool]$Parameter.Globbing).ToString().ToLowerInvariant())
    $Writer.WriteAttributeString('pipelineInput', (Remove-InvalidXmlChar $Parameter.PipelineInput))
    $Writer.WriteAttributeString('position', $pos)
    $Writer.WriteAttributeString('aliases', $aliases)
    Write-MamlElement $Writer 'maml' 'name' $Parameter.Name
    Write-MamlDescription $Writer $Parameter.Description
    if ($InSyntax -and $Parameter.AcceptedValues -and @($Parameter.AcceptedValues).Count) {
        $Writer.WriteStartElement('command', 'parameterValueGroup', $script:NsCommand)
        foreach ($v in $Parameter.AcceptedValues) {
            $Writer.WriteStartElement('command', 'parameterValue', $script:NsCommand)
            $Writer.WriteAttributeString('required', 'false')
            $Writer.WriteAttributeString('command', 'variableLength', $script:NsCommand, 'false')
            $Writer.WriteString((Remove-InvalidXmlChar $v))
            $Writer.WriteEndElement()
        }
        $Writer.WriteEndElement()
    }
    if (-not ($InSyntax -and $isSwitch)) {
        $Writer.WriteStartElement('command', 'parameterValue', $script:NsCommand)
        $Writer.WriteAttributeString('required', $(if ($isSwitch) { 'false' } else { 'true' }))
        $Writer.WriteAttributeString('variableLength', $variableLength)
        $Writer.WriteString((Remove-InvalidXmlChar $type))
        $Writer.WriteEndElement()
    }
    $Writer.WriteStartElement('dev', 'type', $script:NsDev)
    Write-MamlElement $Writer 'maml' 'name' $type
    Write-MamlElement $Writer 'maml' 'uri' ''
    $Writer.WriteEndElement()
    Write-MamlElement $Writer 'dev' 'defaultValue' $(if ($Parameter.DefaultValue) { $Parameter.DefaultValue } else { 'None' })
    $Writer.WriteEndElement()
}

function Find-ParameterDetail {
    # The yaml block of $Parameter that applies to parameter set $SetName (or $null).
    param([hashtable]$Parameter, [string]$SetName)
    foreach ($d in $Parameter.ParameterSetDetails) { if ($d.ParameterSets -contains $SetName) { return $d } }
    foreach ($d in $Parameter.ParameterSetDetails) { if ($d.ParameterSets -contains '(All)') { return $d } }
    $null
}

function Write-MamlCommand {
    param([System.Xml.XmlWriter]$Writer, [object]$Page)
    $w = $Writer
    $verb, $noun = if ($Page.Name -match '^(?<v>[^-]+)-(?<n>.+)$') { $Matches.v, $Matches.n } else { $Page.Name, '' }

    $w.WriteStartElement('command', 'command', $script:NsCommand)
    $w.WriteAttributeString('xmlns', 'maml', $null, $script:NsMaml)
    $w.WriteAttributeString('xmlns', 'dev', $null, $script:NsDev)
    $w.WriteAttributeString('xmlns', 'MSHelp', $null, $script:NsMSHelp)

    $w.WriteStartElement('command', 'details', $script:NsCommand)
    Write-MamlElement $w 'command' 'name' $Page.Name
    Write-MamlElement $w 'command' 'verb' $verb
    Write-MamlElement $w 'command' 'noun' $noun
    Write-MamlDescription $w $Page.Synopsis
    $w.WriteEndElement()

    Write-MamlDescription $w $Page.Description

    # syntax: one item per parameter set, parameters in syntax-line order
    $byName = @{}
    foreach ($p in $Page.Parameters) { $byName[$p.Name] = $p }
    $w.WriteStartElement('command', 'syntax', $script:NsCommand)
    foreach ($set in $Page.Syntax) {
        $w.WriteStartElement('command', 'syntaxItem', $script:NsCommand)
        Write-MamlElement $w 'maml' 'name' $Page.Name
        foreach ($sp in $set.Parameters) {
            $p = $byName[$sp.Name]
            if ($null -eq $p) {
                Write-Warning "$($Page.Name): parameter -$($sp.Name) is in the syntax of set '$($set.ParameterSetName)' but not documented under ## PARAMETERS."
                $p = @{
                    Name = $sp.Name; Description = ''; Type = $sp.Type; Aliases = @(); AcceptedValues = $sp.AcceptedValues
                    DefaultValue = 'None'; PipelineInput = 'False'; Globbing = $false; ParameterSetDetails = @()
                }
            }
            $d = Find-ParameterDetail -Parameter $p -SetName $set.ParameterSetName
            $required = if ($d) { $d.Required } else { $sp.Required }
            $position = if ($d) { $d.Position } elseif ($sp.Positional) { [string]([array]::IndexOf(@($set.Parameters | Where-Object Positional), $sp)) } else { 'named' }
            $effective = $p.Clone()
            if (-not $effective.Type) { $effective.Type = $sp.Type }
            if ((-not $effective.AcceptedValues -or -not @($effective.AcceptedValues).Count) -and @($sp.AcceptedValues).Count) { $effective.AcceptedValues = $sp.AcceptedValues }
            if ($d) {
                foreach ($k in 'PipelineInput', 'Globbing', 'DefaultValue', 'Aliases') { $effective[$k] = $d[$k] }
            }
            Write-MamlParameter -Writer $w -Parameter $effective -Required $required -Position $position -InSyntax
        }
        $w.WriteEndElement()
    }
    $w.WriteEndElement()

    $w.WriteStartElement('command', 'parameters', $script:NsCommand)
    foreach ($p in $Page.Parameters) {
        Write-MamlParameter -Writer $w -Parameter $p -Required $p.Required -Position $p.Position
    }
    $w.WriteEndElement()

    foreach ($kind in @(
            @{ Outer = 'inputTypes'; Inner = 'inputType'; Items = $Page.Inputs },
            @{ Outer = 'returnValues'; Inner = 'returnValue'; Items = $Page.Outputs })) {
        $w.WriteStartElement('command', $kind.Outer, $script:NsCommand)
        foreach ($t in $kind.Items) {
            $w.WriteStartElement('command', $kind.Inner, $script:NsCommand)
            $w.WriteStartElement('dev', 'type', $script:NsDev)
            Write-MamlElement $w 'maml' 'name' $t.Type
            $w.WriteEndElement()
            Write-MamlDescription $w $t.Description
            $w.WriteEndElement()
        }
        $w.WriteEndElement()
    }

    $w.WriteStartElement('maml', 'alertSet', $script:NsMaml)
    if ($Page.Notes) {
        $w.WriteStartElement('maml', 'alert', $script:NsMaml)
        Write-MamlPara $w $Page.Notes
        $w.WriteEndElement()
    }
    $w.WriteEndElement()

    $w.WriteStartElement('command', 'examples', $script:NsCommand)
    foreach ($ex in $Page.Examples) {
        $w.WriteStartElement('command', 'example', $script:NsCommand)
        Write-MamlElement $w 'maml' 'title' ('---------- {0} ----------' -f $ex.Title)
        Write-MamlElement $w 'dev' 'code' $ex.Code
        $w.WriteStartElement('dev', 'remarks', $script:NsDev)
        Write-MamlPara $w ((@($ex.Introduction, $ex.Remarks) | Where-Object { $_ }) -join "`n`n")
        $w.WriteEndElement()
        $w.WriteEndElement()
    }
    $w.WriteEndElement()

    $w.WriteStartElement('command', 'relatedLinks', $script:NsCommand)
    $allLinks = @()
    if ($Page.OnlineVersion) { $allLinks += @{ Text = 'Online Version:'; Uri = $Page.OnlineVersion } }
    $allLinks += $Page.Links
    foreach ($l in $allLinks) {
        $w.WriteStartElement('maml', 'navigationLink', $script:NsMaml)
        Write-MamlElement $w 'maml' 'linkText' $l.Text
        # Only absolute URIs are useful to Get-Help -Online; links to sibling .md pages keep just their text.
        Write-MamlElement $w 'maml' 'uri' $(if ($l.Uri -match '^[a-z][a-z0-9+.-]*://') { $l.Uri } else { '' })
        $w.WriteEndElement()
    }
    $w.WriteEndElement()

    $w.WriteEndElement() # command:command
}

#endregion

#region About topics

function Format-WrappedText {
    param([string]$Text, [int]$Width = 80, [string]$FirstIndent = '', [string]$Indent = '')
    $lines = [System.Collections.Generic.List[string]]::new()
    $current = $FirstIndent
    $empty = $true
    foreach ($word in ($Text -split '\s+' | Where-Object { $_ })) {
        if (-not $empty -and ($current.Length + 1 + $word.Length) -gt $Width) {
            $lines.Add($current)
            $current = $Indent + $word
        }
        elseif ($empty) { $current += $word }
        else { $current += ' ' + $word }
        $empty = $false
    }
    if (-not $empty) { $lines.Add($current) }
    $lines
}

function ConvertTo-AboutText {
    param([object[]]$Blocks)
    $out = [System.Collections.Generic.List[string]]::new()
    $afterSubHeading = $false
    foreach ($b in $Blocks) {
        # blank line between blocks, except that a section heading is directly followed by its text
        if ($out.Count -gt 0 -and -not $afterSubHeading) { $out.Add('') }
        $afterSubHeading = $b.Kind -eq 'Heading' -and $b.Level -gt 1
        switch ($b.Kind) {
            'Heading' {
                if ($b.Level -eq 1) { $out.Add((Format-InlineText $b.Text)) }
                else { $out.Add((Format-InlineText $b.Text).ToUpperInvariant()) }
            }
            'Code' {
                foreach ($l in $b.Text -split "`n") { $out.Add($(if ($l) { '    ' + $l } else { '' })) }
            }
            'Para' {
                if ($b.Lines[0] -match '^\s*\|') {
                    foreach ($l in $b.Lines) { $out.Add((Format-InlineText $l.TrimEnd())) }
                    continue
                }
                # split into list items (each with its continuation lines) and plain text
                $items = [System.Collections.Generic.List[object]]::new()
                foreach ($l in $b.Lines) {
                    if ($l -match '^(?<ind>\s*)(?<mark>(?:[-*+]|\d{1,9}[.)]))\s+(?<rest>.*)$') {
                        $items.Add(@{ Indent = $Matches.ind.Length; Marker = $Matches.mark; Text = $Matches.rest })
                    }
                    elseif ($items.Count -eq 0) { $items.Add(@{ Indent = 0; Marker = $null; Text = $l.Trim() }) }
                    else { $items[$items.Count - 1].Text += ' ' + $l.Trim() }
                }
                foreach ($it in $items) {
                    $text = Format-InlineText $it.Text
                    if ($it.Marker) {
                        $marker = if ($it.Marker -match '^[-*+]$') { '-' } else { $it.Marker }
                        $first = (' ' * $it.Indent) + $marker + ' '
                        Format-WrappedText -Text $text -FirstIndent $first -Indent (' ' * $first.Length) | ForEach-Object { $out.Add($_) }
                    }
                    else {
                        Format-WrappedText -Text $text | ForEach-Object { $out.Add($_) }
                    }
                }
            }
        }
    }
    $out
}

#endregion

#region Public functions

function Get-MarkdownHelp {
    <#
    .SYNOPSIS
        Parses a platyPS-style cmdlet help page (Verb-Noun.md).
    .DESCRIPTION
        Returns Name, Synopsis, Syntax, Description, Examples (@{Title; Introduction; Code; Remarks}), Parameters
        (@{Name; Description; Type; ParameterSets; Aliases; AcceptedValues; Required; Position; DefaultValue;
        PipelineInput; Globbing; ParameterSetDetails}), Inputs and Outputs (@{Type; Description}), Notes,
        Links (@{Text; Uri}), OnlineVersion, Metadata (front matter) and Path. Example code has any leading
        "PS> " prompt removed, so it can be run as is. CommonParameters is not listed in Parameters.
    .EXAMPLE
        Get-ChildItem docs/en-US/*-*.md | Get-MarkdownHelp | Select-Object Name, Synopsis
    #>
    [CmdletBinding()]
    [OutputType('PtqTools.MarkdownHelp')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('FullName')]
        [string[]]$Path
    )
    process {
        foreach ($item in $Path) {
            foreach ($resolved in Resolve-Path -Path $item -ErrorAction Stop) {
                Read-MarkdownHelpPage -LiteralPath $resolved.ProviderPath
            }
        }
    }
}

function ConvertTo-MamlHelp {
    <#
    .SYNOPSIS
        Converts every Verb-Noun.md page in a folder into one MAML help file (e.g. PtqTools.dll-Help.xml).
    .DESCRIPTION
        about_*.md and files not named Verb-Noun.md are skipped. The output is UTF-8 without BOM, written with
        System.Xml.XmlWriter, and its folder is created when missing. Returns the written file.
    .EXAMPLE
        ConvertTo-MamlHelp -SourcePath docs/en-US -OutputPath out/PtqTools/en-US/PtqTools.dll-Help.xml
    #>
    [CmdletBinding()]
    [OutputType([System.IO.FileInfo])]
    param(
        [Parameter(Mandatory, Position = 0)][string]$SourcePath,
        [Parameter(Mandatory, Position = 1)][string]$OutputPath
    )
    $source = (Resolve-Path -LiteralPath $SourcePath -ErrorAction Stop).ProviderPath
    $target = $PSCmdlet.GetUnresolvedProviderPathFromPSPath($OutputPath)

    $files = @(Get-ChildItem -LiteralPath $source -Filter '*.md' -File |
        Where-Object { $_.Name -notlike 'about_*' -and $_.Name -match '^[A-Za-z]+-[A-Za-z0-9_]+\.md$' } |
        Sort-Object -Property Name -Culture ([cultureinfo]::InvariantCulture))
    if ($files.Count -eq 0) { Write-Warning "No Verb-Noun.md help pages found in '$source'." }

    $pages = foreach ($f in $files) {
        $page = Read-MarkdownHelpPage -LiteralPath $f.FullName
        if ($page.Name -ne $f.BaseName) { Write-Warning "$($f.Name): page title '# $($page.Name)' does not match the file name." }
        if (-not $page.Synopsis) { Write-Warning "$($f.Name): empty ## SYNOPSIS." }
        if (-not $page.Syntax.Count) { Write-Warning "$($f.Name): no syntax block under ## SYNTAX." }
        Write-Verbose "$($f.Name): $($page.Syntax.Count) parameter set(s), $($page.Parameters.Count) parameter(s), $($page.Examples.Count) example(s)"
        $page
    }

    $dir = [System.IO.Path]::GetDirectoryName($target)
    if ($dir) { [void][System.IO.Directory]::CreateDirectory($dir) }

    $settings = [System.Xml.XmlWriterSettings]::new()
    $settings.Encoding = [System.Text.UTF8Encoding]::new($false)
    $settings.Indent = $true
    $settings.IndentChars = '  '
    $settings.NewLineChars = "`n"
    $settings.NewLineHandling = [System.Xml.NewLineHandling]::Replace
    $writer = [System.Xml.XmlWriter]::Create($target, $settings)
    try {
        $writer.WriteStartDocument()
        $writer.WriteStartElement('helpItems', $script:NsMsh)
        $writer.WriteAttributeString('schema', 'maml')
        foreach ($page in @($pages)) { Write-MamlCommand -Writer $writer -Page $page }
        $writer.WriteEndElement()
        $writer.WriteWhitespace("`n")
        $writer.WriteEndDocument()
    }
    finally {
        $writer.Dispose()
    }
    Get-Item -LiteralPath $target
}

function ConvertTo-AboutHelp {
    <#
    .SYNOPSIS
        Converts every about_*.md in a folder into about_*.help.txt (plain text about topics).
    .DESCRIPTION
        The head is the conventional one (TOPIC, the topic name, SHORT DESCRIPTION and the short description on one
        line, line 5, which Get-Help about_* shows as the synopsis). Below it, headings lose their # marks
        (lower-level headings are upper-cased),
        paragraphs and list items are re-wrapped at 80 columns, inline markdown (code spans, bold, links) is
        reduced to text, and code blocks are indented by 4 spaces. Output is UTF-8 without BOM. Returns the
        written files.
    .EXAMPLE
        ConvertTo-AboutHelp -SourcePath docs/en-US -OutputFolder out/PtqTools/en-US
    #>
    [CmdletBinding()]
    [OutputType([System.IO.FileInfo])]
    param(
        [Parameter(Mandatory, Position = 0)][string]$SourcePath,
        [Parameter(Mandatory, Position = 1)][string]$OutputFolder
    )
    $source = (Resolve-Path -LiteralPath $SourcePath -ErrorAction Stop).ProviderPath
    $target = $PSCmdlet.GetUnresolvedProviderPathFromPSPath($OutputFolder)
    [void][System.IO.Directory]::CreateDirectory($target)
    $utf8 = [System.Text.UTF8Encoding]::new($false)

    $files = Get-ChildItem -LiteralPath $source -Filter 'about_*.md' -File | Sort-Object -Property Name
    foreach ($f in $files) {
        $fm = Read-MdFrontMatter -Lines (Split-MdLine -LiteralPath $f.FullName)
        $blocks = [object[]](Get-MdBlock -Lines $fm.Body)
        # The conventional head: Get-Help about_* takes line 5 of the file as the topic's synopsis, so the short
        # description is that one line, whatever its length.
        #   TOPIC / <4 spaces>about_X / blank / SHORT DESCRIPTION / <4 spaces>one line / blank / LONG DESCRIPTION ...
        $head = [System.Collections.Generic.List[string]]::new()
        $rest = $blocks
        if ($blocks.Count -gt 0 -and $blocks[0].Kind -eq 'Heading' -and $blocks[0].Level -eq 1) {
            $head.Add('TOPIC'); $head.Add('    ' + (Format-InlineText $blocks[0].Text).Trim()); $head.Add('')
            $rest = @($blocks | Select-Object -Skip 1)
            if ($rest.Count -ge 2 -and $rest[0].Kind -eq 'Heading' -and $rest[0].Text -match '^\s*SHORT DESCRIPTION\s*$' -and $rest[1].Kind -eq 'Para') {
                $short = Format-InlineText ((@($rest[1].Lines) | ForEach-Object { $_.Trim() }) -join ' ')
                $head.Add('SHORT DESCRIPTION'); $head.Add('    ' + $short.Trim()); $head.Add('')
                $rest = @($rest | Select-Object -Skip 2)
            }
        }
        $text = ((@($head) + @(ConvertTo-AboutText -Blocks $rest)) -join "`n").TrimEnd() + "`n"
        $out = [System.IO.Path]::Combine($target, $f.BaseName + '.help.txt')
        [System.IO.File]::WriteAllText($out, $text, $utf8)
        Get-Item -LiteralPath $out
    }
}

#endregion

Export-ModuleMember -Function ConvertTo-MamlHelp, ConvertTo-AboutHelp, Get-MarkdownHelp
