using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Runtime;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Fuzz;

/// <summary>How one case ended: every stage ran (Valid), or a stage raised a PtqException (Refused, with its
/// ErrorId), or a stage raised anything else (Unexpected: a finding, as is a crash or a hang of the worker).</summary>
public enum Outcome { Valid, Refused, Unexpected }

public sealed record CaseResult(Outcome Outcome, string Stage, string Detail);

/// <summary>
/// Feeds one case folder to the code paths of the cmdlets that read a model, in the order a pipeline uses them:
/// Get-OnnxModel (load and validate), Get-ModelLayer (prepare: ONNX Runtime's optimizer, opset upgrade; list
/// layers), Invoke-ModelInference -Engine OnnxRuntime (a session on the file as given), Measure-ActivationRange,
/// Invoke-Quantization (static QDQ, QOperator, dynamic), Invoke-ModelInference -Engine PtqTools (the integer
/// engine), ONNX Runtime on the quantized model, Test-QuantizedModel (both models compared), Measure-LayerError
/// (up to 8 quantized layers) and Measure-ModelPerformance.
/// </summary>
public static class CaseRunner
{
    /// <summary>Random data is made for inputs up to this many elements; a larger declared input is not fed.</summary>
    const long MaxFedElements = 1 << 22;

    public static CaseResult Run(string folder, string? tensorProtoData, int variant)
    {
        var path = Path.Combine(folder, "model.onnx");
        string stage = "load";
        try
        {
            ModelInspector.Summarize(path);
            stage = "prepare";
            var prepared = ModelPreparer.Prepare(path);
            var layers = ModelInspector.Layers(prepared);
            var data = DataFor(prepared.Model, tensorProtoData);
            stage = "ort-source";
            if (data is not null)
                foreach (var _ in ModelInference.Run(path, data, InferenceEngine.OnnxRuntime, 1, null, CancellationToken.None)) { }
            else using (OrtRunner.FromFile(path)) { }
            if (data is null) return new(Outcome.Valid, "prepare", $"{layers.Count} layers; no data to feed");
            stage = "calibrate";
            var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
            var output = Path.Combine(folder, "out.int8.onnx");
            string detail = $"{layers.Count} layers";
            List<PtqTools.Core.Model.TensorStatistics>? stats = null;
            if (plan.Activations.Count > 0 && plan.QuantizedLayers.Count > 0)
            {
                stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, new CalibrationOptions(), null, CancellationToken.None);
                stage = "quantize";
                var options = new QuantizationOptions { Format = (variant & 1) == 0 ? QuantFormat.QDQ : QuantFormat.QOperator };
                QuantizationPipeline.Run(prepared, stats, options, output, CancellationToken.None);
                detail += $", {plan.QuantizedLayers.Count} quantized ({options.Format})";
            }
            else
            {
                stage = "quantize-dynamic";
                try
                {
                    QuantizationPipeline.RunWithoutCalibration(prepared, null, new QuantizationOptions { Mode = QuantMode.Dynamic }, output, CancellationToken.None);
                    detail += ", dynamic";
                }
                catch (PtqException ex) when (ex.ErrorId == "NothingToQuantize")
                {
                    return new(Outcome.Valid, stage, detail + "; nothing to quantize");
                }
            }
            stage = "engine";
            try
            {
                foreach (var _ in ModelInference.Run(output, data, InferenceEngine.PtqTools, 1, null, CancellationToken.None)) { }
                detail += ", engine ran";
            }
            catch (PtqException ex) when (ex.ErrorId is "EngineOpNotSupported" or "EngineInputCount")
            {
                detail += $", engine refused ({ex.ErrorId})";
            }
            stage = "ort-quantized";
            foreach (var _ in ModelInference.Run(output, data, InferenceEngine.OnnxRuntime, 1, null, CancellationToken.None)) { }
            stage = "compare";
            ModelComparer.Compare(path, output, data, 1, 0, null, null, CancellationToken.None);
            if (stats is not null && plan.QuantizedLayers.Count <= 8)
            {
                stage = "layer-error";
                LayerErrorAnalyzer.Run(prepared, stats, new QuantizationOptions(), data, 1, null, CancellationToken.None);
            }
            stage = "performance";
            PerformanceMeter.Measure(output, data, 1, 1, 0, 2, null, CancellationToken.None);
            return new(Outcome.Valid, stage, detail);
        }
        catch (PtqException ex)
        {
            return new(Outcome.Refused, stage, ex.ErrorId);
        }
        catch (Exception ex)
        {
            if (Environment.GetEnvironmentVariable("PTQ_FUZZ_THROW") == "1") throw;
            // The whole trace goes to standard error, which the supervisor saves with the finding.
            Console.Error.WriteLine(ex.ToString());
            return new(Outcome.Unexpected, stage, $"{ex.GetType().Name}: {FirstLine(ex.Message)} @ {FirstFrame(ex)}");
        }
    }

    /// <summary>The conformance test's own samples, else two random samples shaped like the first input.</summary>
    static PtqDataSet? DataFor(ModelProto prepared, string? tensorProtoData)
    {
        if (tensorProtoData is not null) return DataSetReader.FromTensorProto(new[] { tensorProtoData }, new PtqDataSet());
        var inits = prepared.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = prepared.Graph.Input.Where(i => !inits.Contains(i.Name)).ToList();
        if (inputs.Count != 1 || inputs[0].Type?.TensorType is not { ElemType: 1, Shape: { } shape } || shape.Dim.Count == 0) return null;
        var dims = shape.Dim.Skip(1).Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : 1).ToArray();
        long n = 1;
        foreach (var d in dims)
        {
            if (d <= 0 || d > MaxFedElements) return null;
            n *= d;
            if (n > MaxFedElements) return null;
        }
        var random = new Random(11);
        var samples = new float[2][];
        for (int s = 0; s < samples.Length; s++)
        {
            samples[s] = new float[n];
            for (int i = 0; i < n; i++) samples[s][i] = (float)(random.NextDouble() * 2 - 1);
        }
        return DataSetReader.FromArrays(samples, dims.Select(d => (int)d).ToArray(), null, new PtqDataSet());
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    static string FirstFrame(Exception ex) =>
        (ex.StackTrace ?? "").Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Contains("PtqTools.Core", StringComparison.Ordinal)) ?? "?";
}
