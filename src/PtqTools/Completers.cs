using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using PtqTools.Core.Onnx;

namespace PtqTools;

/// <summary>Completes layer (node) names read from the model named by -Path or -LiteralPath on the same command.</summary>
public sealed class LayerNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        bool literal = fakeBoundParameters.Contains("LiteralPath");
        var raw = literal ? fakeBoundParameters["LiteralPath"] : fakeBoundParameters["Path"];
        var path = raw switch { string s => s, IEnumerable e => e.Cast<object>().FirstOrDefault()?.ToString(), _ => null };
        if (string.IsNullOrEmpty(path)) return Array.Empty<CompletionResult>();
        try
        {
            using var ps = PowerShell.Create(RunspaceMode.CurrentRunspace);
            var resolved = ps.AddCommand("Resolve-Path").AddParameter(literal ? "LiteralPath" : "Path", path).Invoke<PathInfo>().FirstOrDefault()?.ProviderPath;
            if (resolved is null || !File.Exists(resolved)) return Array.Empty<CompletionResult>();
            var word = wordToComplete.Trim('\'', '"');
            // The stored graph's names: preparation keeps them (BatchNormalization aside), without running ONNX Runtime.
            return OnnxModelIO.NodeNames(resolved)
                .Where(n => n.Name.Length > 0 && n.Name.StartsWith(word, StringComparison.OrdinalIgnoreCase))
                .Select(n => new CompletionResult(Quote(n.Name), n.Name, CompletionResultType.ParameterValue, $"{n.OpType} {n.Name}"))
                .ToList();
        }
        catch (Exception ex) when (ex is Core.PtqException or IOException or UnauthorizedAccessException or RuntimeException)
        {
            return Array.Empty<CompletionResult>();
        }
    }

    static string Quote(string name) => name.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '$' or '`' or ';' or '(' or ')' or '{' or '}' or ',')
        ? "'" + name.Replace("'", "''") + "'" : name;
}

/// <summary>Completes the names of the architecture rules (-SkipRule).</summary>
public sealed class RuleNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var word = wordToComplete.Trim('\'', '"');
        return Core.Quantization.ArchitectureRules.Names.Append("*")
            .Where(n => n.StartsWith(word, StringComparison.OrdinalIgnoreCase))
            .Select(n => new CompletionResult(n == "*" ? "'*'" : n, n, CompletionResultType.ParameterValue, n == "*" ? "every rule" : n))
            .ToList();
    }
}
