using System.Management.Automation;
using PtqTools.Core.Calibration;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

/// <summary>Loads statistics written by Export-ActivationRange, checking that they belong to the model.</summary>
[Cmdlet(VerbsData.Import, "ActivationRange", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Import-ActivationRange.md")]
[OutputType(typeof(TensorStatistics))]
public sealed class ImportActivationRangeCommand : PtqCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>The model the ranges are for (it must have the SHA-256 recorded in the file). Without it, the model at
    /// the recorded path is checked when it exists. It follows the command's choice: a pattern that must match one
    /// file with -Path, taken as typed with -LiteralPath.</summary>
    [Parameter]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string? ModelPath { get; set; }

    protected override void ProcessRecord()
    {
        var files = ParameterSetName == "Path" ? ResolveExisting(Path, literal: false) : ResolveExisting(LiteralPath, literal: true);
        string? model = null;
        if (ModelPath is not null && !Try(() => model = ResolveOneExisting(ModelPath, literal: ParameterSetName == "LiteralPath"), ModelPath)) return;
        foreach (var file in files)
            Try(() =>
            {
                var (stats, modelChecked) = ActivationRangeStore.Load(file, model);
                if (!modelChecked)
                    WriteWarning($"The model the ranges in '{file}' were measured on ('{stats.FirstOrDefault()?.ModelPath}') is not there to check; give -ModelPath.");
                WriteObject(stats, enumerateCollection: true);
            }, file);
    }
}
