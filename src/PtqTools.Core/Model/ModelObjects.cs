namespace PtqTools.Core.Model;

/// <summary>Summary of a model file (Get-OnnxModel).</summary>
public sealed class ModelSummary
{
    public string Name { get; set; } = "";
    public string Path { get; set; } = "";
    public string Sha256 { get; set; } = "";
    public long IrVersion { get; set; }
    public int Opset { get; set; }
    /// <summary>The operator sets the model imports: domain ("ai.onnx" for the default one) and version.</summary>
    public ValueList<OpsetImport> OpsetImports { get; set; } = new();
    public string Producer { get; set; } = "";
    /// <summary>The graph's inputs (initializers excepted) and outputs: name, element type and shape.</summary>
    public ValueList<TensorInfo> Inputs { get; set; } = new();
    public ValueList<TensorInfo> Outputs { get; set; } = new();
    public int NodeCount { get; set; }
    /// <summary>How many nodes of each operator type (subgraphs included), most frequent first.</summary>
    public ValueList<OpTypeCount> OpTypes { get; set; } = new();
    public long ParameterCount { get; set; }
    public long SizeBytes { get; set; }
    /// <summary>Set on models this tool wrote: the source's SHA-256 and the options used.</summary>
    public string? QuantizedFrom { get; set; }
    public string? QuantizationOptions { get; set; }
    /// <summary>The CPU class a PtqTools model was written for (its metadata ptq.target).</summary>
    public string? QuantizationTarget { get; set; }
}

/// <summary>One layer (node) of a model as it is quantized (Get-ModelLayer).</summary>
public sealed class ModelLayer
{
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    public int Index { get; set; }
    public string Name { get; set; } = "";
    public string OpType { get; set; } = "";
    public string Domain { get; set; } = "";
    /// <summary>Path of the subgraph holding the layer; empty for the main graph.</summary>
    public string Scope { get; set; } = "";
    public ValueList<string> Inputs { get; set; } = new();
    public ValueList<string> Outputs { get; set; } = new();
    public string? WeightName { get; set; }
    public ValueList<long> WeightShape { get; set; } = new();
    public long ParameterCount { get; set; }
    public bool Quantizable { get; set; }
    public string Reason { get; set; } = "";
}

/// <summary>What Invoke-Quantization did to one model.</summary>
public sealed class QuantizationResult
{
    public string SourcePath { get; set; } = "";
    public string SourceSha256 { get; set; } = "";
    public string OutputPath { get; set; } = "";
    public string OutputSha256 { get; set; } = "";
    public string Mode { get; set; } = "Static";
    public string Format { get; set; } = "QDQ";
    public string Options { get; set; } = "";
    public long SourceSizeBytes { get; set; }
    public long OutputSizeBytes { get; set; }
    public double SizeRatio { get; set; }
    public int QuantizedLayerCount { get; set; }
    /// <summary>Layers folded into a quantized neighbour (a Relu into its producer's range).</summary>
    public int FoldedLayerCount { get; set; }
    public int FloatLayerCount { get; set; }
    public ValueList<string> QuantizedLayers { get; set; } = new();
    /// <summary>Every layer's decision: layer, operator type, quantized or not, and why (its text is
    /// "name (OpType): reason").</summary>
    public ValueList<QuantizationDecision> Decisions { get; set; } = new();
    /// <summary>The CPU class the model is written for (Portable, or a class; Host is resolved), and the class of
    /// the machine that wrote it.</summary>
    public string Target { get; set; } = "Portable";
    public string HostClass { get; set; } = "";
    /// <summary>The fix applied where u8 x s8 pair sums could leave int16 on the target ("" where the target's
    /// kernels are exact), the layers it changed, and the layers in which such a sum can still leave int16.</summary>
    public string OverflowFix { get; set; } = "";
    public ValueList<string> PairSafeLayers { get; set; } = new();
    public ValueList<string> OverflowLayers { get; set; } = new();
    /// <summary>The check after writing : the written model run by this host's
    /// ONNX Runtime against the exact integer result on a few calibration samples.</summary>
    public Model.HostCheck? HostCheck { get; set; }
    /// <summary>The written model against the float model on held-out samples (static mode; null when skipped).</summary>
    public Model.FidelityCheck? Fidelity { get; set; }
    /// <summary>Accuracy-aware quantization (-MaxAccuracyDrop): the goal, the drop reached with its interval, whether
    /// the goal was met, the layers kept in float for it, and a sentence that says so.</summary>
    public double? MaxAccuracyDrop { get; set; }
    public Model.PairedDifference? AccuracyDrop { get; set; }
    public bool? GoalMet { get; set; }
    public ValueList<string> KeptInFloat { get; set; } = new();
    public int CandidatesTried { get; set; }
    /// <summary>Every model the search measured, in order: layers kept in float, drop, whether it meets the goal.</summary>
    public ValueList<Model.SearchCandidate> Candidates { get; set; } = new();
    /// <summary>Wall time of the search, and the budget it was given.</summary>
    public double SearchSeconds { get; set; }
    public double TimeBudgetSeconds { get; set; }
    public string? SearchSummary { get; set; }
}

/// <summary>Fidelity of one output of the quantized model against the float model.</summary>
public sealed class OutputComparison
{
    public string Output { get; set; } = "";
    public double Cosine { get; set; }
    public double MinCosine { get; set; }
    public double SqnrDb { get; set; }
    public double MaxAbsError { get; set; }
    public double MeanAbsError { get; set; }
    /// <summary>Mean squared error over all elements of all samples.</summary>
    public double Mse { get; set; }
    /// <summary>Share of samples whose arg-max agrees; set when the output holds class scores.</summary>
    public double? Top1Agreement { get; set; }

    public override string ToString() => FormattableString.Invariant($"{Output}: cosine {Cosine:0.####}, SQNR {SqnrDb:0.##} dB");
}

/// <summary>The float and the quantized model on the same evaluation data (Test-QuantizedModel).</summary>
public sealed class AccuracyReport
{
    public string FloatModel { get; set; } = "";
    public string QuantizedModel { get; set; } = "";
    /// <summary>The CPU class whose ONNX Runtime int8 arithmetic the PtqTools engine emulated to compute the quantized
    /// model's outputs (Test-QuantizedModel -Target); empty when ONNX Runtime computed them on this host.</summary>
    public string Target { get; set; } = "";
    public string DataSet { get; set; } = "";
    public int SampleCount { get; set; }
    /// <summary>The first output's figures, repeated at the top for sorting and tables.</summary>
    public double Cosine { get; set; }
    public double SqnrDb { get; set; }
    public double MaxAbsError { get; set; }
    public double? Top1Agreement { get; set; }
    public ValueList<OutputComparison> Outputs { get; set; } = new();
    public double? FloatAccuracy { get; set; }
    public double? QuantizedAccuracy { get; set; }
    /// <summary>Share of labelled samples whose label is among the 5 highest scores (class scores, more than 5 classes).</summary>
    public double? FloatTop5Accuracy { get; set; }
    public double? QuantizedTop5Accuracy { get; set; }
    /// <summary>Top-1 accuracy drop (float minus quantized) with its paired 95% interval and McNemar's p-value.</summary>
    public Model.PairedDifference? AccuracyDrop { get; set; }
    /// <summary>The task metric given with -Metric: its name, its mean on each model, and the drop with its interval.</summary>
    public string? MetricName { get; set; }
    public double? FloatMetric { get; set; }
    public double? QuantizedMetric { get; set; }
    public Model.PairedDifference? MetricDrop { get; set; }
    public int Threads { get; set; }
    public double FloatLatencyMs { get; set; }
    public double QuantizedLatencyMs { get; set; }
    public double Speedup { get; set; }
    public long FloatSizeBytes { get; set; }
    public long QuantizedSizeBytes { get; set; }
    public double SizeRatio { get; set; }
    /// <summary>When the model has an attention mask (<see cref="Runtime.TokenMask"/>): which positions were left
    /// out of the figures of its per-token outputs (and of what -Metric receives); empty when every position counts.</summary>
    public string PaddingExcluded { get; set; } = "";
}

/// <summary>The quantization error of one layer's output against float (Measure-LayerError).</summary>
public sealed class LayerError
{
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    /// <summary>1 for the layer that hurts most by itself (lowest isolated SQNR).</summary>
    public int Rank { get; set; }
    public string Layer { get; set; } = "";
    public string OpType { get; set; } = "";
    /// <summary>The layer's output tensor that is compared.</summary>
    public string Tensor { get; set; } = "";
    /// <summary>Error of the output with only this layer quantized.</summary>
    public double IsolatedSqnrDb { get; set; }
    public double IsolatedMse { get; set; }
    /// <summary>Error of the model's first output with only this layer quantized: what the layer alone costs the
    /// model (the accuracy-aware search ranks by it, since a layer's own SQNR does not say how much of its error
    /// reaches the output).</summary>
    public double IsolatedOutputSqnrDb { get; set; }
    /// <summary>Error of the output with every layer of the plan quantized (what the layer inherits plus its own).</summary>
    public double AccumulatedSqnrDb { get; set; }
    public double AccumulatedMse { get; set; }
    /// <summary>The weight against its int8 round trip; null for a layer without weight.</summary>
    public double? WeightSqnrDb { get; set; }
    /// <summary>The float input activations against their quantized round trip with the calibrated range.</summary>
    public double? ActivationSqnrDb { get; set; }
    public int SampleCount { get; set; }
    public long ElementCount { get; set; }
    /// <summary>The CPU class whose ONNX Runtime int8 arithmetic the PtqTools engine emulated for the quantized
    /// layers (Measure-LayerError -Target); empty when ONNX Runtime ran them on this host.</summary>
    public string Target { get; set; } = "";
}

/// <summary>Speed and memory of one model (Measure-ModelPerformance).</summary>
public sealed class ModelPerformance
{
    public string Model { get; set; } = "";
    public string Engine { get; set; } = "OnnxRuntime";
    /// <summary>The kernel path the PtqTools engine took (empty for ONNX Runtime).</summary>
    public string KernelPath { get; set; } = "";
    public int Threads { get; set; }
    public int BatchSize { get; set; }
    public int WarmupRuns { get; set; }
    public int Runs { get; set; }
    /// <summary>Latency of one batch: median, 90th and 99th percentile, mean (milliseconds).</summary>
    public double P50Ms { get; set; }
    public double P90Ms { get; set; }
    public double P99Ms { get; set; }
    public double MeanMs { get; set; }
    /// <summary>Samples per second over the timed runs (batch size x runs / total time).</summary>
    public double SamplesPerSecond { get; set; }
    /// <summary>Peak resident memory of the process while the model was loaded and run (on Linux the kernel's
    /// high-water mark, reset before loading: PeakMemoryMethod "VmHWM"; elsewhere sampled after each run).</summary>
    public long PeakMemoryBytes { get; set; }
    /// <summary>That peak minus the resident memory before the model was loaded: what the model and its runs added.</summary>
    public long MemoryGrowthBytes { get; set; }
    public string PeakMemoryMethod { get; set; } = "";
    public long SizeBytes { get; set; }
    /// <summary>What was fed: a data set sample, or seeded random values.</summary>
    public string Input { get; set; } = "";
}

/// <summary>A graph input or output: its name, element type and shape (a dimension is a number, a symbolic name, or
/// "?" when unknown; Shape is empty when the rank is unknown or the value is a scalar, see <see cref="RankKnown"/>).</summary>
public sealed class TensorInfo
{
    public string Name { get; set; } = "";
    public string ElementType { get; set; } = "";
    public ValueList<string> Shape { get; set; } = new();
    public bool RankKnown { get; set; } = true;

    /// <summary>"name: float32[1,3,224,224]" (the text Get-OnnxModel showed before these were objects).</summary>
    public override string ToString() => $"{Name}: {ElementType}" + (RankKnown ? "[" + string.Join(",", Shape) + "]" : "?");
}

/// <summary>An operator set a model imports.</summary>
public sealed class OpsetImport
{
    /// <summary>"ai.onnx" for the default domain.</summary>
    public string Domain { get; set; } = "";
    public long Version { get; set; }

    public override string ToString() => $"{Domain}:{Version}";
}

/// <summary>How many nodes of one operator type a model has.</summary>
public sealed class OpTypeCount
{
    public string OpType { get; set; } = "";
    public int Count { get; set; }

    public override string ToString() => $"{OpType}:{Count}";
}

/// <summary>What Invoke-Quantization decided for one layer.</summary>
public sealed class QuantizationDecision
{
    public string Layer { get; set; } = "";
    public string OpType { get; set; } = "";
    public bool Quantized { get; set; }
    /// <summary>Folded into a quantized producer's range (a Relu): it runs in int8 without being quantized itself.</summary>
    public bool Folded { get; set; }
    public string Reason { get; set; } = "";

    /// <summary>"name (OpType): reason".</summary>
    public override string ToString() => $"{Layer} ({OpType}): {Reason}";
}

/// <summary>One entry of the prepared-model cache (Get-PtqCache).</summary>
public sealed class PtqCacheEntry
{
    /// <summary>SHA-256 of the source model the entry was prepared from.</summary>
    public string Sha256 { get; set; } = "";
    /// <summary>The preparation version that wrote it; entries of another version are never read again (Stale).</summary>
    public string Version { get; set; } = "";
    /// <summary>Ready (reused by the next preparation of that model), Stale (an older version's), InUse (a live process
    /// is writing it) or Partial (left by a preparation that did not finish).</summary>
    public string Status { get; set; } = "";
    /// <summary>The entry's model file (for a partial entry, its first file).</summary>
    public string Path { get; set; } = "";
    public string Folder { get; set; } = "";
    /// <summary>Every file of the entry: the model, its side data, files being written.</summary>
    public ValueList<string> Files { get; set; } = new();
    public long SizeBytes { get; set; }
    public DateTime LastWriteTime { get; set; }
    /// <summary>The last time a preparation used the entry (its files' last access, or write when later).</summary>
    public DateTime LastUseTime { get; set; }
    /// <summary>The live processes writing files of the entry.</summary>
    public ValueList<int> WriterProcessIds { get; set; } = new();
}

/// <summary>The prepared-model cache as a whole (Get-PtqCache -Summary).</summary>
public sealed class PtqCacheSummary
{
    public string Folder { get; set; } = "";
    public int EntryCount { get; set; }
    public long SizeBytes { get; set; }
    /// <summary>Entries no preparation reads again (Stale, Partial) and their size.</summary>
    public int UnusableCount { get; set; }
    public long UnusableBytes { get; set; }
    public DateTime? OldestUse { get; set; }

    public static PtqCacheSummary Of(string folder, IReadOnlyCollection<PtqCacheEntry> entries) => new()
    {
        Folder = folder,
        EntryCount = entries.Count,
        SizeBytes = entries.Sum(e => e.SizeBytes),
        UnusableCount = entries.Count(e => e.Status is "Stale" or "Partial"),
        UnusableBytes = entries.Where(e => e.Status is "Stale" or "Partial").Sum(e => e.SizeBytes),
        OldestUse = entries.Count > 0 ? entries.Min(e => e.LastUseTime) : null,
    };
}
