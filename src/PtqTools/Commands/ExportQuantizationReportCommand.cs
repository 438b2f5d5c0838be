using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Reporting;

namespace PtqTools.Commands;

[Cmdlet(VerbsData.Export, "QuantizationReport", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, HelpUri = HelpLinks.Docs + "Export-QuantizationReport.md")]
[OutputType(typeof(FileInfo))]
public sealed class ExportQuantizationReportCommand : PtqCmdlet
{
    /// <summary>Report objects: quantization results, accuracy reports, layer errors, performance, statistics.</summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>The file to write.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [Alias("LiteralPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter]
    [ValidateSet("Html", "Markdown", "Json")]
    public string Format { get; set; } = "Html";

    [Parameter]
    public SwitchParameter Force { get; set; }

    readonly QuantizationReportData _data = new();

    // The output path is taken as typed (output paths are never patterns). Its folder is checked here, before the
    // commands earlier in the pipeline do their work.
    protected override void Begin()
    {
        try { CheckOutputFile(ResolveOutput(Path)); }
        catch (PtqException ex) { Fail(ex); }
    }

    protected override void ProcessRecord()
    {
        foreach (var o in InputObject)
            Try(() =>
            {
                if (PipelineObjects.Has(o, "Rank", "IsolatedSqnrDb", "Layer")) _data.Layers.Add(PipelineObjects.To<LayerError>(o));
                else if (PipelineObjects.Has(o, "P50Ms", "Model")) _data.Performance.Add(PipelineObjects.To<ModelPerformance>(o));
                else if (PipelineObjects.Has(o, "FloatModel", "QuantizedModel", "Cosine")) _data.Accuracy.Add(ToAccuracy(o));
                else if (PipelineObjects.Has(o, "Tensor", "RangeMin", "RangeMax")) _data.Statistics.Add(PipelineObjects.To<TensorStatistics>(o));
                else if (PipelineObjects.Has(o, "SourcePath", "OutputPath", "QuantizedLayerCount")) _data.Results.Add(ToResult(o));
                else WriteError(PipelineObjects.Unexpected(o, "results of Invoke-Quantization, Test-QuantizedModel, Measure-LayerError, Measure-ModelPerformance or Measure-ActivationRange"));
            }, o);
    }

    // Nested paired differences come back as property bags after deserialization.
    static AccuracyReport ToAccuracy(PSObject o)
    {
        if (o.BaseObject is AccuracyReport live) return live;
        var copy = new PSObject();
        foreach (var p in o.Properties.Where(p => p.Name is not ("AccuracyDrop" or "MetricDrop" or "Outputs"))) copy.Properties.Add(new PSNoteProperty(p.Name, p.Value));
        var report = PipelineObjects.To<AccuracyReport>(copy);
        report.AccuracyDrop = Nested(o, "AccuracyDrop");
        report.MetricDrop = Nested(o, "MetricDrop");
        return report;
    }

    static QuantizationResult ToResult(PSObject o)
    {
        if (o.BaseObject is QuantizationResult live) return live;
        var copy = new PSObject();
        foreach (var p in o.Properties.Where(p => p.Name is not ("AccuracyDrop" or "Candidates" or "HostCheck"))) copy.Properties.Add(new PSNoteProperty(p.Name, p.Value));
        var result = PipelineObjects.To<QuantizationResult>(copy);
        result.AccuracyDrop = Nested(o, "AccuracyDrop");
        if (o.Properties["HostCheck"]?.Value is { } check && PSObject.AsPSObject(check).Properties["Status"] is not null)
            result.HostCheck = PipelineObjects.To<HostCheck>(PSObject.AsPSObject(check));
        if (o.Properties["Candidates"]?.Value is { } candidates)
            result.Candidates = LanguagePrimitives.GetEnumerable(candidates)?.Cast<object>()
                .Select(c => PipelineObjects.To<SearchCandidate>(PSObject.AsPSObject(c))).ToArray() ?? Array.Empty<SearchCandidate>();
        return result;
    }

    static PairedDifference? Nested(PSObject o, string name) =>
        o.Properties[name]?.Value is { } v ? PipelineObjects.To<PairedDifference>(PSObject.AsPSObject(v)) : null;

    protected override void EndProcessing()
    {
        if (_data.IsEmpty) return;
        var target = ResolveOutput(Path);
        Try(() =>
        {
            if (File.Exists(target) && !Force)
                throw new PtqException("OutputExists", PtqErrorKind.ResourceExists, $"'{target}' exists; use -Force to overwrite it.", target);
            if (!Directory.Exists(System.IO.Path.GetDirectoryName(target)))
                throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder of '{target}' does not exist.", target);
            if (!ShouldProcess(target, $"Write the {Format} quantization report")) return;
            var text = Format switch
            {
                "Markdown" => QuantizationReport.ToMarkdown(_data),
                "Json" => QuantizationReport.ToJson(_data),
                _ => QuantizationReport.ToHtml(_data),
            };
            Cancel.ThrowIfCancellationRequested();
            OnnxModelIO.WriteAtomically(target, System.Text.Encoding.UTF8.GetBytes(text));
            WriteObject(FileItem(target));
        }, target);
    }
}
