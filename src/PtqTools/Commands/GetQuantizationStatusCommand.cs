using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

/// <summary>Whether quantized outputs are current for their sources and the given options, and if not, why: the
/// decision Update-QuantizedModel makes before it quantizes anything.</summary>
[Cmdlet(VerbsCommon.Get, "QuantizationStatus", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Get-QuantizationStatus.md")]
[OutputType(typeof(QuantizationStatus))]
public sealed class GetQuantizationStatusCommand : SourceModelsCmdlet
{
    /// <summary>The output file, or a folder holding &lt;source name&gt;.int8.onnx files.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string OutputPath { get; set; } = "";

    QuantizationOptions _options = null!;

    protected override void Begin()
    {
        try { _options = BuildOptions(); }
        catch (PtqException ex) { Fail(ex); }
    }

    protected override void EndProcessing()
    {
        if (Sources.Count == 0) return;
        var output = ResolveOutput(OutputPath);
        bool folder = Directory.Exists(output);
        if (Sources.Count > 1 && !folder)
            Fail(new PtqException("OutputPathNotFolder", PtqErrorKind.InvalidArgument,
                $"{Sources.Count} models came in; -OutputPath must then be an existing folder, and '{output}' is not.", output));
        const string activity = "Checking quantized outputs";
        var progress = Progress(1, activity, "models");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < Sources.Count; i++)
        {
            var source = Sources[i];
            progress.Report(new RunProgress(i, Sources.Count, i / Math.Max(clock.Elapsed.TotalSeconds, 1e-3), source));
            var target = folder ? OutputIn(output, _options, source) : output;
            Try(() => WriteObject(QuantizationStatusCheck.Check(source, target, _options, Cancel)), source);
        }
        CompleteProgress(1, activity);
    }
}
