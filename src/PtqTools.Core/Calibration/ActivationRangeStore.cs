using System.Text.Json;
using System.Text.Json.Serialization;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Calibration;

/// <summary>The file Export-ActivationRange writes: a versioned envelope tied to the model's SHA-256.</summary>
public sealed class ActivationRangeFile
{
    public const string SchemaName = "PtqTools.ActivationRange";
    public const int CurrentVersion = 1;

    public string Schema { get; set; } = SchemaName;
    public int Version { get; set; } = CurrentVersion;
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    public string Created { get; set; } = "";
    public List<TensorStatistics> Statistics { get; set; } = new();
}

/// <summary>Saves, loads and merges calibration statistics (the calibration cache).</summary>
public static class ActivationRangeStore
{
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The JSON text of statistics of one model.</summary>
    public static byte[] Serialize(IReadOnlyList<TensorStatistics> stats)
    {
        var model = SingleModel(stats);
        var file = new ActivationRangeFile
        {
            ModelPath = model.ModelPath, ModelSha256 = model.ModelSha256,
            Created = DateTime.UtcNow.ToString("o"), Statistics = stats.ToList(),
        };
        return JsonSerializer.SerializeToUtf8Bytes(file, Json);
    }

    public static void Save(IReadOnlyList<TensorStatistics> stats, string path) => OnnxModelIO.WriteAtomically(path, Serialize(stats));

    /// <summary>Reads a file written by <see cref="Save"/>; checks the schema and version, and that the model the
    /// statistics were measured on is the one at <paramref name="modelPath"/> (or at the recorded path when null and
    /// the file exists there). Returns the statistics and whether the model could be checked.</summary>
    public static (List<TensorStatistics> Stats, bool ModelChecked) Load(string path, string? modelPath)
    {
        if (!File.Exists(path))
            throw new PtqException("PathNotFound", PtqErrorKind.ObjectNotFound, $"The file '{path}' does not exist.", path);
        ActivationRangeFile? file;
        try
        {
            using var stream = File.OpenRead(path);
            file = JsonSerializer.Deserialize<ActivationRangeFile>(stream, Json);
        }
        catch (JsonException ex)
        {
            throw new PtqException("ActivationRangeFileInvalid", PtqErrorKind.InvalidData, $"'{path}' is not an activation range file: {ex.Message}", path, ex);
        }
        if (file is null || file.Schema != ActivationRangeFile.SchemaName)
            throw new PtqException("ActivationRangeFileInvalid", PtqErrorKind.InvalidData,
                $"'{path}' is not an activation range file (schema '{file?.Schema}', expected '{ActivationRangeFile.SchemaName}').", path);
        if (file.Version != ActivationRangeFile.CurrentVersion)
            throw new PtqException("ActivationRangeVersionUnsupported", PtqErrorKind.InvalidData,
                $"'{path}' has schema version {file.Version}; this PtqTools reads version {ActivationRangeFile.CurrentVersion}.", path);
        foreach (var s in file.Statistics)
            if (!string.Equals(s.ModelSha256, file.ModelSha256, StringComparison.OrdinalIgnoreCase))
                throw new PtqException("ActivationRangeFileInvalid", PtqErrorKind.InvalidData,
                    $"'{path}' mixes models: tensor '{s.Tensor}' is of model {s.ModelSha256}, the file of {file.ModelSha256}.", path);
        string? check = modelPath ?? (File.Exists(file.ModelPath) ? file.ModelPath : null);
        if (check is null) return (file.Statistics, false);
        if (!File.Exists(check))
            throw new PtqException("PathNotFound", PtqErrorKind.ObjectNotFound, $"The model '{check}' does not exist.", check);
        var sha = OnnxModelIO.Sha256(check);
        if (!string.Equals(sha, file.ModelSha256, StringComparison.OrdinalIgnoreCase))
            throw new PtqException("ModelMismatch", PtqErrorKind.InvalidData,
                $"'{path}' holds ranges measured on a model with SHA-256 {file.ModelSha256}, but '{check}' has SHA-256 {sha}. Calibrate this model again, or point -ModelPath at the model the ranges belong to.", check);
        var full = Path.GetFullPath(check);
        foreach (var s in file.Statistics) s.ModelPath = full;
        return (file.Statistics, true);
    }

    static TensorStatistics SingleModel(IReadOnlyList<TensorStatistics> stats)
    {
        if (stats.Count == 0)
            throw new PtqException("NothingToExport", PtqErrorKind.InvalidArgument, "No statistics were given.", null);
        var first = stats[0];
        foreach (var s in stats)
            if (!string.Equals(s.ModelSha256, first.ModelSha256, StringComparison.OrdinalIgnoreCase))
                throw new PtqException("ModelMismatch", PtqErrorKind.InvalidArgument,
                    $"The statistics are of different models ('{first.ModelPath}' {first.ModelSha256} and '{s.ModelPath}' {s.ModelSha256}); one file holds one model.", s.Tensor);
        return first;
    }

    /// <summary>
    /// Combines shards (statistics of the same model calibrated on parts of the data) into what one run over all of
    /// it gives: min/max exactly, histograms exactly (they merge at the coarser width, which is the width one run
    /// would reach), then every method's range is recomputed from the merged state.
    /// </summary>
    public static List<TensorStatistics> Merge(IReadOnlyList<TensorStatistics> stats, CalibrationOptions? options = null)
    {
        var model = SingleModel(stats);
        var result = new List<TensorStatistics>();
        foreach (var group in stats.GroupBy(s => s.Tensor, StringComparer.Ordinal))
        {
            var first = group.First();
            var opts = options ?? new CalibrationOptions(ParseMethod(first.Method), first.Symmetric, first.Percentile);
            if (options is null)
                foreach (var s in group)
                    if (s.Method != first.Method || s.Symmetric != first.Symmetric || s.Percentile != first.Percentile)
                        throw new PtqException("MergeOptionsDiffer", PtqErrorKind.InvalidArgument,
                            $"Shards of tensor '{s.Tensor}' were calibrated with different options ({first.Method}, symmetric {first.Symmetric}, percentile {first.Percentile} and {s.Method}, symmetric {s.Symmetric}, percentile {s.Percentile}). Give -Method (and -Symmetric, -Percentile) to choose.", s.Tensor);
            var observer = new TensorObserver();
            foreach (var s in group) observer.Merge(s);
            var layers = group.SelectMany(s => s.Layers).Distinct(StringComparer.Ordinal).ToArray();
            var merged = observer.ToStatistics(first.ModelPath, model.ModelSha256, first.Tensor, layers, opts);
            // The fidelity check of the merged statistics runs on the held-out samples of the first shard that has some.
            merged.HeldOut = group.Select(s => s.HeldOut).FirstOrDefault(h => h is not null);
            result.Add(merged);
        }
        return result;
    }

    public static CalibrationMethod ParseMethod(string name) =>
        Enum.TryParse<CalibrationMethod>(name, ignoreCase: true, out var m) && Enum.IsDefined(m)
            ? m
            : throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument,
                $"Unknown calibration method '{name}' (known: {string.Join(", ", Enum.GetNames<CalibrationMethod>())}).", name);
}
