using Google.Protobuf;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Whether a quantized output is current for its source and the options of a run, and if not, why.</summary>
public enum OutputState
{
    /// <summary>The output records the source's SHA-256 and these options: nothing to do.</summary>
    Current,
    /// <summary>There is no output file.</summary>
    Missing,
    /// <summary>The output file is not a readable ONNX model.</summary>
    Unreadable,
    /// <summary>The output is an ONNX model without the PtqTools metadata (ptq.source_sha256, ptq.options).</summary>
    NotQuantized,
    /// <summary>The output was quantized from another source (the source changed since).</summary>
    SourceChanged,
    /// <summary>The output was written for another CPU class (ptq.target).</summary>
    TargetChanged,
    /// <summary>The output was written with other options (ptq.options).</summary>
    OptionsChanged,
}

/// <summary>The up-to-date decision for one source and one output (Get-QuantizationStatus, Update-QuantizedModel).</summary>
public sealed class QuantizationStatus
{
    public string SourcePath { get; set; } = "";
    public string OutputPath { get; set; } = "";
    /// <summary>Current when the output needs no work; otherwise the first reason it does.</summary>
    public string State { get; set; } = nameof(OutputState.Missing);
    public bool IsCurrent { get; set; }
    /// <summary>A sentence: what differs, with the recorded and the expected values.</summary>
    public string Reason { get; set; } = "";
    public string SourceSha256 { get; set; } = "";
    /// <summary>The source SHA-256 the output records (ptq.source_sha256), or null.</summary>
    public string? RecordedSourceSha256 { get; set; }
    /// <summary>The options string this run would record (ptq.options).</summary>
    public string Options { get; set; } = "";
    public string? RecordedOptions { get; set; }
    /// <summary>The resolved CPU class this run would write for, and the one the output records (ptq.target).</summary>
    public string Target { get; set; } = "";
    public string? RecordedTarget { get; set; }
}

/// <summary>The one implementation of "is this output up to date": the output's metadata must record the SHA-256 of
/// the current source (as <see cref="OnnxModelIO.Sha256(string)"/> computes it, side files included) and exactly the
/// options string the given options record, whose resolved target is compared first.</summary>
public static class QuantizationStatusCheck
{
    public static QuantizationStatus Check(string sourcePath, string outputPath, QuantizationOptions options, CancellationToken cancel = default)
    {
        var target = QuantTargets.Resolve(options.Target);
        var status = new QuantizationStatus
        {
            SourcePath = Path.GetFullPath(sourcePath),
            OutputPath = Path.GetFullPath(outputPath),
            Options = options.ToString(),
            Target = target.ToString(),
        };
        status.SourceSha256 = OnnxModelIO.Sha256(sourcePath);
        cancel.ThrowIfCancellationRequested();
        return Decide(status, outputPath);
    }

    static QuantizationStatus Decide(QuantizationStatus s, string outputPath)
    {
        QuantizationStatus Set(OutputState state, string reason)
        {
            s.State = state.ToString();
            s.IsCurrent = state == OutputState.Current;
            s.Reason = reason;
            return s;
        }
        if (!File.Exists(outputPath)) return Set(OutputState.Missing, $"'{s.OutputPath}' does not exist.");
        Dictionary<string, string>? meta;
        try { meta = ReadMetadata(outputPath); }
        catch (IOException ex) { return Set(OutputState.Unreadable, $"'{s.OutputPath}' cannot be read: {ex.Message}"); }
        catch (UnauthorizedAccessException ex) { return Set(OutputState.Unreadable, $"'{s.OutputPath}' cannot be read: {ex.Message}"); }
        if (meta is null) return Set(OutputState.Unreadable, $"'{s.OutputPath}' is not a readable ONNX model.");
        s.RecordedSourceSha256 = meta.GetValueOrDefault("ptq.source_sha256");
        s.RecordedOptions = meta.GetValueOrDefault("ptq.options");
        s.RecordedTarget = meta.GetValueOrDefault("ptq.target");
        if (s.RecordedSourceSha256 is null || s.RecordedOptions is null)
            return Set(OutputState.NotQuantized, $"'{s.OutputPath}' was not written by PtqTools: it records no source SHA-256 and options.");
        if (!string.Equals(s.RecordedSourceSha256, s.SourceSha256, StringComparison.OrdinalIgnoreCase))
            return Set(OutputState.SourceChanged, $"The source changed: its SHA-256 is {Short(s.SourceSha256)}, the output was quantized from {Short(s.RecordedSourceSha256)}.");
        // Models written before ptq.target was recorded: the options string still carries target=.
        var recordedTarget = s.RecordedTarget ?? TargetInOptions(s.RecordedOptions);
        if (!string.Equals(recordedTarget, s.Target, StringComparison.OrdinalIgnoreCase))
            return Set(OutputState.TargetChanged, $"The output was written for {recordedTarget ?? "no recorded CPU class"}, this run writes for {s.Target}.");
        if (!string.Equals(s.RecordedOptions, s.Options, StringComparison.Ordinal))
            return Set(OutputState.OptionsChanged, $"The options changed: {Difference(s.RecordedOptions, s.Options)}.");
        return Set(OutputState.Current, "The output records the source's SHA-256 and these options.");
    }

    static string Short(string hash) => hash.Length > 12 ? hash[..12] + "..." : hash;

    static string? TargetInOptions(string options) =>
        options.Split(';').FirstOrDefault(p => p.StartsWith("target=", StringComparison.Ordinal))?["target=".Length..] is { } t
            ? Enum.TryParse<QuantTarget>(t, ignoreCase: true, out var parsed) ? parsed.ToString() : t
            : null;

    /// <summary>The parts of two options strings (split at ';') that differ: "recorded 'a' instead of 'b'".</summary>
    public static string Difference(string recorded, string expected)
    {
        var was = recorded.Split(';');
        var now = expected.Split(';');
        var gone = was.Except(now, StringComparer.Ordinal).ToList();
        var added = now.Except(was, StringComparer.Ordinal).ToList();
        if (gone.Count == 0 && added.Count == 0) return $"recorded '{recorded}', expected '{expected}'";
        return $"the output records '{(gone.Count == 0 ? "" : string.Join(";", gone))}' where this run has '{(added.Count == 0 ? "" : string.Join(";", added))}'";
    }

    /// <summary>The metadata of an ONNX file, read without parsing its graph (a model's top-level fields are
    /// walked and skipped); null when the file is not an ONNX model (no IR version or no graph).</summary>
    public static Dictionary<string, string>? ReadMetadata(string path)
    {
        const int IrVersion = 1, Graph = 7, MetadataProps = 14;
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        bool hasIr = false, hasGraph = false;
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16);
        try
        {
            using var input = new CodedInputStream(file, leaveOpen: true);
            for (uint tag; (tag = input.ReadTag()) != 0;)
            {
                int field = WireFormat.GetTagFieldNumber(tag);
                var wire = WireFormat.GetTagWireType(tag);
                if (field == IrVersion && wire == WireFormat.WireType.Varint)
                {
                    hasIr = input.ReadInt64() > 0;
                }
                else if (field == MetadataProps && wire == WireFormat.WireType.LengthDelimited)
                {
                    var entry = new global::Onnx.StringStringEntryProto();
                    input.ReadMessage(entry);
                    result[entry.Key] = entry.Value;   // the last entry of a key wins, as in the parsed model
                }
                else
                {
                    if (field == Graph && wire == WireFormat.WireType.LengthDelimited) hasGraph = true;
                    input.SkipLastField();
                }
            }
        }
        catch (InvalidProtocolBufferException) { return null; }
        catch (InvalidOperationException) { return null; }
        return hasIr && hasGraph ? result : null;
    }
}

/// <summary>Where a quantized model goes when the output is a folder.</summary>
public static class QuantizationOutputs
{
    /// <summary>"&lt;source name&gt;.int8.onnx", or ".int4.onnx" for 4-bit weight-only models.</summary>
    public static string FileName(QuantizationOptions options, string sourcePath) =>
        Path.GetFileNameWithoutExtension(sourcePath) + (options.Mode == QuantMode.WeightOnly && options.WeightBits == 4 ? ".int4.onnx" : ".int8.onnx");
}
