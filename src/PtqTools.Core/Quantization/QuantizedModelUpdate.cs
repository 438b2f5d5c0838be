using System.Text.Json;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>What Update-QuantizedModel did with one model.</summary>
public enum UpdateStatus
{
    /// <summary>The output was (re)written.</summary>
    Quantized,
    /// <summary>The output was current: nothing was done.</summary>
    UpToDate,
    /// <summary>Quantizing failed; ErrorId and Message say why, and any earlier output is untouched.</summary>
    Failed,
    /// <summary>The output needed work, and -Confirm's answer was no.</summary>
    Skipped,
}

/// <summary>One model of an Update-QuantizedModel run (one object per model, and one record of the JSON log).</summary>
public sealed class QuantizedModelUpdate
{
    public string SourcePath { get; set; } = "";
    public string OutputPath { get; set; } = "";
    /// <summary>Quantized, UpToDate, Failed or Skipped.</summary>
    public string Status { get; set; } = "";
    /// <summary>Why the output was (or would have been) written: the <see cref="OutputState"/> of the up-to-date
    /// decision (Missing, SourceChanged, TargetChanged, OptionsChanged, NotQuantized, Unreadable), Forced (-Force on
    /// a current output), or Current for an output that was up to date.</summary>
    public string Reason { get; set; } = "";
    /// <summary>The up-to-date decision's sentence, or the error message of a failure.</summary>
    public string Message { get; set; } = "";
    public double Seconds { get; set; }
    /// <summary>Output size over source size, for a model quantized by this run.</summary>
    public double? SizeRatio { get; set; }
    /// <summary>The stable error id of a failure (ModelNotOnnx, DataSetRequired, ...).</summary>
    public string? ErrorId { get; set; }
    public string SourceSha256 { get; set; } = "";
    public string? OutputSha256 { get; set; }
}

/// <summary>The summary record of an Update-QuantizedModel log.</summary>
public sealed class UpdateSummary
{
    public string Date { get; set; } = "";
    public string Computer { get; set; } = Environment.MachineName;
    public string Tool { get; set; } = "";
    public string Options { get; set; } = "";
    public string OutputFolder { get; set; } = "";
    public int Models { get; set; }
    public int Quantized { get; set; }
    public int UpToDate { get; set; }
    public int Failed { get; set; }
    public int Skipped { get; set; }
    /// <summary>True when the run was stopped (Ctrl+C, or the scheduler ending the process) before every model was done.</summary>
    public bool Stopped { get; set; }
    public double Seconds { get; set; }

    public static UpdateSummary Of(IReadOnlyCollection<QuantizedModelUpdate> records, int models, string options, string outputFolder, double seconds, bool stopped) => new()
    {
        Date = DateTime.UtcNow.ToString("o", System.Globalization.CultureInfo.InvariantCulture),
        Tool = $"PtqTools {Quantizer.ToolVersion}",
        Options = options,
        OutputFolder = outputFolder,
        Models = models,
        Quantized = records.Count(r => r.Status == nameof(UpdateStatus.Quantized)),
        UpToDate = records.Count(r => r.Status == nameof(UpdateStatus.UpToDate)),
        Failed = records.Count(r => r.Status == nameof(UpdateStatus.Failed)),
        Skipped = records.Count(r => r.Status == nameof(UpdateStatus.Skipped)),
        Stopped = stopped,
        Seconds = Math.Round(seconds, 2),
    };
}

/// <summary>The JSON log of a batch run: { "Summary": {...}, "Models": [ {...}, ... ] }, written atomically.</summary>
public static class UpdateLog
{
    // NewLine "\n": indented JSON takes Environment.NewLine by default, and the log ends with "\n" (on Windows it had
    // CRLF lines and an LF end); every platform writes the same text.
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NewLine = "\n", Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string ToJson(UpdateSummary summary, IEnumerable<QuantizedModelUpdate> records) =>
        JsonSerializer.Serialize(new { Summary = summary, Models = records.ToArray() }, Json);

    public static void Write(string path, UpdateSummary summary, IEnumerable<QuantizedModelUpdate> records) =>
        OnnxModelIO.WriteAtomically(path, System.Text.Encoding.UTF8.GetBytes(ToJson(summary, records) + "\n"));
}
