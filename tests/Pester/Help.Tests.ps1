#Requires -Version 7.4
# Checks that the help of the BUILT module agrees with the cmdlets: Get-Help finds a synopsis, a description and
# examples for every exported cmdlet, and the markdown source (docs/en-US/<Verb-Noun>.md) documents exactly the
# real parameters, with their real types, parameter sets, positions, aliases and pipeline binding.
# The examples are not run here.

BeforeDiscovery {
    if (-not $env:PTQTOOLS_MODULE) { throw 'Set $env:PTQTOOLS_MODULE to the built module manifest (out/PtqTools/PtqTools.psd1).' }
    $module = Import-Module $env:PTQTOOLS_MODULE -Force -PassThru
    $script:commandCases = @($module.ExportedCmdlets.Keys | Sort-Object | ForEach-Object { @{ Name = $_ } })
    $docs = Join-Path $PSScriptRoot '../../docs/en-US'
    $script:aboutCases = @(Get-ChildItem -Path $docs -Filter 'about_*.md' -File | ForEach-Object { @{ Name = $_.BaseName } })
}

BeforeAll {
    $script:module = Import-Module $env:PTQTOOLS_MODULE -Force -PassThru
    Import-Module (Join-Path $PSScriptRoot '../../tools/HelpBuilder.psm1') -Force
    $script:docs = Join-Path $PSScriptRoot '../../docs/en-US'

    # Common parameters are documented once, under CommonParameters; -WhatIf and -Confirm get their own sections
    # on SupportsShouldProcess cmdlets, and are checked separately.
    $script:commonNames = [System.Collections.Generic.HashSet[string]]::new([string[]]@(
            [System.Management.Automation.Cmdlet]::CommonParameters
            [System.Management.Automation.Cmdlet]::OptionalCommonParameters), [StringComparer]::OrdinalIgnoreCase)

    function script:Get-RealParameter([string] $Name) {
        (Get-Command -Name $Name -Module $module.Name).Parameters.Values |
            Where-Object { -not $commonNames.Contains($_.Name) }
    }

    function script:Get-Page([string] $Name) {
        $path = Join-Path $docs "$Name.md"
        if (-not (Test-Path -LiteralPath $path)) { throw "No help page $path." }
        Get-MarkdownHelp -Path $path
    }

    function script:Get-DocumentedParameter([string] $Name) {
        (Get-Page $Name).Parameters | Where-Object { $_.Name -notin 'WhatIf', 'Confirm' }
    }

    # The parameter set names as the markdown writes them: '(All)' for a parameter in every set.
    function script:Get-RealSetName([System.Management.Automation.ParameterMetadata] $Parameter) {
        @($Parameter.ParameterSets.Keys | ForEach-Object { if ($_ -eq '__AllParameterSets') { '(All)' } else { $_ } } | Sort-Object)
    }

    # A documented type names the real one: 'String[]' or 'System.String[]' for [string[]], and so on.
    function script:Test-TypeName([string] $Documented, [type] $Real) {
        $d = $Documented.Trim()
        $d -eq $Real.Name -or $d -eq $Real.FullName -or
        ($Real.FullName -like 'System.Management.Automation.*' -and $d -eq $Real.FullName.Substring('System.Management.Automation.'.Length))
    }

    function script:Format-Difference([string] $Label, [object[]] $Items) {
        $list = @($Items | Where-Object { $_ })
        if ($list.Count) { "${Label}: $($list -join ', ')" }
    }
}

AfterAll {
    Remove-Module HelpBuilder -ErrorAction SilentlyContinue
}

Describe 'Help of <Name>' -ForEach $commandCases {
    BeforeAll {
        $help = Get-Help -Name $Name -Full
        $command = Get-Command -Name $Name -Module $module.Name
    }

    It 'has a synopsis that is not the generated syntax' {
        $synopsis = ([string]$help.Synopsis).Trim()
        $synopsis | Should -Not -BeNullOrEmpty
        $synopsis | Should -Not -Match "^$([regex]::Escape($Name))(\s|$)" -Because 'a synopsis that starts with the command name is the syntax PowerShell makes up when no help is found'
        $synopsis | Should -Not -Match '<CommonParameters>'
    }

    It 'has a description' {
        $text = (@($help.Description) | ForEach-Object { $_.Text }) -join "`n"
        $text.Trim() | Should -Not -BeNullOrEmpty
    }

    It 'has at least two examples, each with code and remarks' {
        $examples = @($help.Examples.Example)
        $examples.Count | Should -BeGreaterOrEqual 2
        foreach ($ex in $examples) {
            ([string]$ex.Code).Trim() | Should -Not -BeNullOrEmpty -Because "example '$($ex.Title)' needs code"
            ((@($ex.Remarks) | ForEach-Object { $_.Text }) -join '').Trim() | Should -Not -BeNullOrEmpty -Because "example '$($ex.Title)' needs remarks"
        }
    }

    It 'describes every parameter in Get-Help' {
        $undescribed = foreach ($p in Get-RealParameter $Name) {
            $h = @($help.Parameters.Parameter) | Where-Object Name -EQ $p.Name
            if (-not $h -or -not ((@($h.Description) | ForEach-Object { $_.Text }) -join '').Trim()) { $p.Name }
        }
        @($undescribed) -join ', ' | Should -BeNullOrEmpty -Because 'every parameter needs a description in Get-Help'
    }

    It 'documents every real parameter, and no other, in its markdown page' {
        $real = @(Get-RealParameter $Name | ForEach-Object Name)
        $documented = @(Get-DocumentedParameter $Name | ForEach-Object Name)
        $missing = $real | Where-Object { $_ -notin $documented } | Sort-Object
        $extra = $documented | Where-Object { $_ -notin $real } | Sort-Object
        $problems = @(
            Format-Difference 'not documented' $missing
            Format-Difference 'documented but not a parameter' $extra
        )
        $problems -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents the real type of every parameter' {
        $page = Get-Page $Name
        $wrong = foreach ($p in Get-RealParameter $Name) {
            $d = $page.Parameters | Where-Object Name -EQ $p.Name
            if (-not $d) { continue }
            $types = @($d.ParameterSetDetails | ForEach-Object { $_.Type } | Where-Object { $_ })
            if (-not $types.Count) { $types = @($d.Type) }
            foreach ($t in $types | Select-Object -Unique) {
                if (-not (Test-TypeName $t $p.ParameterType)) { "-$($p.Name): documented $t, is $($p.ParameterType.Name)" }
            }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents the real parameter sets of every parameter' {
        $page = Get-Page $Name
        $wrong = foreach ($p in Get-RealParameter $Name) {
            $d = $page.Parameters | Where-Object Name -EQ $p.Name
            if (-not $d) { continue }
            $real = Get-RealSetName $p
            $documented = @($d.ParameterSets | Sort-Object -Unique)
            if (($real -join ',') -ne ($documented -join ',')) { "-$($p.Name): documented $($documented -join ', '), is $($real -join ', ')" }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents whether each parameter is mandatory, and its position, in each set' {
        $page = Get-Page $Name
        $wrong = foreach ($p in Get-RealParameter $Name) {
            $d = $page.Parameters | Where-Object Name -EQ $p.Name
            if (-not $d) { continue }
            foreach ($set in $p.ParameterSets.GetEnumerator()) {
                $setName = if ($set.Key -eq '__AllParameterSets') { '(All)' } else { $set.Key }
                $detail = $d.ParameterSetDetails | Where-Object { $_.ParameterSets -contains $setName } | Select-Object -First 1
                if (-not $detail) { "-$($p.Name): no yaml block for set $setName"; continue }
                if ($detail.Required -ne $set.Value.IsMandatory) {
                    "-$($p.Name) in ${setName}: documented Required $($detail.Required), is $($set.Value.IsMandatory)"
                }
                $realPosition = if ($set.Value.Position -lt 0) { 'Named' } else { [string]$set.Value.Position }
                if ($detail.Position -ne $realPosition) {
                    "-$($p.Name) in ${setName}: documented Position $($detail.Position), is $realPosition"
                }
            }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents the aliases and the pipeline input of every parameter' {
        $page = Get-Page $Name
        $wrong = foreach ($p in Get-RealParameter $Name) {
            $d = $page.Parameters | Where-Object Name -EQ $p.Name
            if (-not $d) { continue }
            $realAliases = @($p.Aliases | Sort-Object) -join ', '
            foreach ($detail in $d.ParameterSetDetails) {
                $docAliases = @($detail.Aliases | Sort-Object) -join ', '
                if ($docAliases -ne $realAliases) { "-$($p.Name): documented aliases '$docAliases', are '$realAliases'" }
            }
            foreach ($set in $p.ParameterSets.GetEnumerator()) {
                $setName = if ($set.Key -eq '__AllParameterSets') { '(All)' } else { $set.Key }
                $detail = $d.ParameterSetDetails | Where-Object { $_.ParameterSets -contains $setName } | Select-Object -First 1
                if (-not $detail) { continue }
                $kinds = @(
                    if ($set.Value.ValueFromPipelineByPropertyName) { 'ByPropertyName' }
                    if ($set.Value.ValueFromPipeline) { 'ByValue' }
                )
                $real = if ($kinds.Count) { "True ($($kinds -join ', '))" } else { 'False' }
                $documented = ($detail.PipelineInput -replace '\s+', ' ').Trim()
                if ($documented -ne $real) { "-$($p.Name) in ${setName}: documented pipeline input '$documented', is '$real'" }
            }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents the accepted values of parameters with a ValidateSet' {
        $page = Get-Page $Name
        $wrong = foreach ($p in Get-RealParameter $Name) {
            $d = $page.Parameters | Where-Object Name -EQ $p.Name
            if (-not $d) { continue }
            $set = $p.Attributes | Where-Object { $_ -is [System.Management.Automation.ValidateSetAttribute] } | Select-Object -First 1
            $real = if ($set) { @($set.ValidValues) -join ', ' } else { '' }
            $documented = @($d.AcceptedValues) -join ', '
            if ($documented -ne $real) { "-$($p.Name): documented accepted values '$documented', are '$real'" }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'has one syntax block per real parameter set, marking the default one' {
        $page = Get-Page $Name
        $real = @($command.ParameterSets | ForEach-Object Name | Sort-Object)
        $documented = @($page.Syntax | ForEach-Object ParameterSetName | Sort-Object)
        ($documented -join ', ') | Should -Be ($real -join ', ')
        if ($command.ParameterSets.Count -gt 1) {
            @($page.Syntax | Where-Object IsDefault | ForEach-Object ParameterSetName) | Should -Be @($command.DefaultParameterSet)
        }
    }

    It 'names the parameters of each set in its syntax block' {
        $page = Get-Page $Name
        $wrong = foreach ($set in $command.ParameterSets) {
            $syntax = $page.Syntax | Where-Object ParameterSetName -EQ $set.Name
            if (-not $syntax) { continue }
            $real = @($set.Parameters | Where-Object { -not $commonNames.Contains($_.Name) } | ForEach-Object Name | Sort-Object)
            $documented = @($syntax.Parameters | Where-Object { $_.Name -ne 'CommonParameters' -and $_.Name -notin 'WhatIf', 'Confirm' } | ForEach-Object Name | Sort-Object)
            if (($real -join ',') -ne ($documented -join ',')) { "$($set.Name): syntax has $($documented -join ', '), set has $($real -join ', ')" }
        }
        @($wrong) -join '; ' | Should -BeNullOrEmpty
    }

    It 'documents -WhatIf and -Confirm exactly when it supports ShouldProcess' {
        $page = Get-Page $Name
        $documented = @($page.Parameters | Where-Object { $_.Name -in 'WhatIf', 'Confirm' } | ForEach-Object Name | Sort-Object)
        $expected = if ($command.Parameters.ContainsKey('WhatIf')) { @('Confirm', 'WhatIf') } else { @() }
        ($documented -join ', ') | Should -Be ($expected -join ', ')
    }

    It 'names its real output types under OUTPUTS' {
        $page = Get-Page $Name
        $documented = @($page.Outputs | ForEach-Object Type)
        $real = @($command.OutputType | ForEach-Object Name)
        $real.Count | Should -BeGreaterThan 0 -Because 'every cmdlet declares [OutputType]'
        foreach ($t in $real) { $documented | Should -Contain $t }
    }
}

Describe 'About topic <Name>' -ForEach $aboutCases {
    It 'is found by Get-Help' {
        $topic = Get-Help -Name $Name
        $topic | Should -Not -BeNullOrEmpty
        $text = if ($topic -is [string]) { $topic } else { $topic | Out-String }
        $text | Should -Match ([regex]::Escape($Name))
        $text | Should -Match 'SHORT DESCRIPTION'
        $text | Should -Match 'LONG DESCRIPTION'
    }
}

Describe 'Help pages' {
    It 'has a page for every exported cmdlet and no page for anything else' {
        $pages = @(Get-ChildItem -Path $docs -Filter '*-*.md' -File | ForEach-Object BaseName | Sort-Object)
        $cmdlets = @($module.ExportedCmdlets.Keys | Sort-Object)
        ($pages -join ', ') | Should -Be ($cmdlets -join ', ')
    }

    It 'has the about_PtqTools topic' {
        Join-Path $docs 'about_PtqTools.md' | Should -Exist
    }
}
