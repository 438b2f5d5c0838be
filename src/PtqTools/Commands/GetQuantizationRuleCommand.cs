using System.Management.Automation;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

/// <summary>One architecture rule: its name and what it keeps in float.</summary>
public sealed class QuantizationRule
{
    public string Name { get; set; } = "";
    /// <summary>Graph (a pattern of ops) or Statistics (a calibrated range).</summary>
    public string Kind { get; set; } = "";
    public string Description { get; set; } = "";
}

/// <summary>Lists the architecture rules that keep layers in float by default in Static mode.</summary>
[Cmdlet(VerbsCommon.Get, "QuantizationRule", HelpUri = HelpLinks.Docs + "Get-QuantizationRule.md")]
[OutputType(typeof(QuantizationRule))]
public sealed class GetQuantizationRuleCommand : PtqCmdlet
{
    /// <summary>Rule names or wildcard patterns; all rules by default.</summary>
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(RuleNameCompleter))]
    public string[] Name { get; set; } = { "*" };

    protected override void ProcessRecord()
    {
        var rules = ArchitectureRules.All.Select(r => new QuantizationRule { Name = r.Name, Kind = "Graph", Description = r.Description })
            .Append(new QuantizationRule { Name = ArchitectureRules.RangeRule, Kind = "Statistics", Description = ArchitectureRules.RangeDescription })
            .Append(new QuantizationRule { Name = RegionCost.ShallowRule, Kind = "Speed", Description = RegionCost.ShallowDescription })
            .Append(new QuantizationRule { Name = RegionCost.Rule, Kind = "Speed", Description = RegionCost.Description })
            .ToList();
        foreach (var pattern in Name)
        {
            var wildcard = WildcardPattern.Get(pattern, WildcardOptions.IgnoreCase);
            var matched = rules.Where(r => wildcard.IsMatch(r.Name)).ToList();
            if (matched.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(pattern))
                WriteError(ToErrorRecord(new Core.PtqException("UnknownRule", Core.PtqErrorKind.ObjectNotFound,
                    $"There is no architecture rule '{pattern}'; the rules are {string.Join(", ", ArchitectureRules.Names)}.", pattern), pattern));
            WriteObject(matched, enumerateCollection: true);
        }
    }
}
