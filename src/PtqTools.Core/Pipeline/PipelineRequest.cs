using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Pipeline;

/// <summary>Everything one quantization of one model needs: the model, its statistics or data, the options, the
/// output, and the checks after writing. Built by the cmdlets from their parameters; checked as a whole by
/// <see cref="QuantizationPipeline.Validate"/> before any work.</summary>
public sealed class PipelineRequest
{
    /// <summary>The prepared model, or null with <see cref="Prepare"/> (a command prepares only after its checks).</summary>
    public PreparedModel? Prepared { get; init; }

    /// <summary>Prepares the model when <see cref="Prepared"/> is null.</summary>
    public Func<PreparedModel>? Prepare { get; init; }

    /// <summary>The source model's path (that of <see cref="Prepared"/> when it is given).</summary>
    public string? ModelPath { get; init; }

    public string SourcePath => Prepared?.SourcePath ?? ModelPath ?? "";

    /// <summary>The statistics that came in were measured on the equalized model (<see cref="Quantizer.ForOptions"/>),
    /// so -Equalize is not applied again; a command refuses -Equalize with statistics.</summary>
    public bool StatisticsOfEqualizedModel { get; init; }
    public required QuantizationOptions Options { get; init; }
    public required string OutputPath { get; init; }

    /// <summary>Statistics that came in (Measure-ActivationRange): static mode then skips calibration. In the
    /// weight modes they only say which layers were selected.</summary>
    public IReadOnlyCollection<TensorStatistics>? Statistics { get; init; }

    /// <summary>The layers that came through the pipeline (null: all).</summary>
    public IReadOnlySet<string>? Selected { get; init; }

    /// <summary>Calibration data: static calibration, SmoothQuant, the outlier split and GPTQ run over it.</summary>
    public PtqDataSet? Data { get; init; }

    public int Threads { get; init; } = 1;

    /// <summary>Overwrite an existing output file.</summary>
    public bool Force { get; init; }

    /// <summary>The output checks of a command (source, existing file, folder); the library entry points leave
    /// them to their callers.</summary>
    public bool CheckOutput { get; init; }

    /// <summary>The fidelity check after writing a static model (<see cref="FidelityGuard"/>); null: none.</summary>
    public FidelityRequest? Fidelity { get; init; }

    /// <summary>Accuracy-aware quantization (<see cref="AccuracyAwareSearch"/>) instead of one write; null: none.</summary>
    public SearchRequest? Search { get; init; }

    /// <summary>The host check after writing (<see cref="HostGuard"/>).</summary>
    public bool HostCheck { get; init; }
}

public sealed record FidelityRequest(double MinCosine, TimeSpan Budget);

public sealed record SearchRequest(PtqDataSet? Evaluation, TaskMetric? Metric, double MaxDrop, TimeSpan Budget);

/// <summary>How the pipeline reports to its caller (a cmdlet renders these as progress, verbose and warning
/// records). Every call comes on the caller's thread.</summary>
public interface IPipelineReporter
{
    /// <summary>Progress of one activity; <paramref name="id"/> keeps the activities of one command apart.</summary>
    IProgress<RunProgress>? Progress(int id, string activity, string unit = "samples");

    void Complete(int id, string activity);

    void Verbose(string message);

    void Warning(string message);
}

/// <summary>A reporter that reports nothing (the library entry points).</summary>
public sealed class SilentReporter : IPipelineReporter
{
    public static readonly SilentReporter Instance = new();
    public IProgress<RunProgress>? Progress(int id, string activity, string unit = "samples") => null;
    public void Complete(int id, string activity) { }
    public void Verbose(string message) { }
    public void Warning(string message) { }
}
