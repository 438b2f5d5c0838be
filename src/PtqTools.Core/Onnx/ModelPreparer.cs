using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>A float model made ready for calibration and quantization, with the file it came from.</summary>
/// <param name="OpsetRaised">Kept for callers; preparation no longer raises the opset (quantization raises its own
/// copy only as far as its options need), so it is false.</param>
public sealed record PreparedModel(string SourcePath, string SourceSha256, string PreparedPath, ModelProto Model, bool OpsetRaised);

/// <summary>
/// Turns a float model into the graph that is calibrated and quantized: every node named, IR 3 quirks removed,
/// BatchNormalization folded into the preceding Conv by ONNX Runtime's own basic graph optimizer (saved through
/// SessionOptions.OptimizedModelFilePath), and Constant nodes of subgraphs turned into initializers. The opset is
/// kept: quantization raises its copy only as far as it needs (<see cref="OpsetUpgrader.RaiseFor"/>).
/// The result is cached by the source's SHA-256, so calibration and quantization see the same graph.
/// </summary>
public static class ModelPreparer
{
    /// <summary>Bump when preparation changes, so old cache entries are not reused.</summary>
    internal const string CacheVersion = "p6";

    public static string CacheFolder
    {
        get
        {
            // PTQTOOLS_CACHE, else XDG_CACHE_HOME, else ~/.cache on Linux and the local application data folder
            // elsewhere (%LOCALAPPDATA% on Windows, ~/Library/Application Support on macOS).
            var env = Environment.GetEnvironmentVariable("PTQTOOLS_CACHE");
            if (!string.IsNullOrEmpty(env)) return Path.GetFullPath(env);
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var root = !string.IsNullOrEmpty(xdg) ? xdg
                : OperatingSystem.IsLinux() ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache")
                : Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
            return Path.Combine(root, "PtqTools", "prepared");
        }
    }

    public static PreparedModel Prepare(string sourcePath)
    {
        var bytes = OnnxModelIO.ReadFile(sourcePath);
        var sha = OnnxModelIO.Sha256(sourcePath, bytes);
        var cached = Path.Combine(CacheFolder, $"{sha}.{CacheVersion}.onnx");
        if (File.Exists(cached))
        {
            try
            {
                var model = OnnxModelIO.Parse(File.ReadAllBytes(cached), cached, validate: false);
                PreparedModelCache.Touch(cached);
                return new PreparedModel(sourcePath, sha, cached, model, false);
            }
            catch (PtqException)
            {
                // A damaged cache entry is rebuilt below.
            }
        }
        var source = OnnxModelIO.Parse(bytes, sourcePath);
        if (ExternalData.HasDeferred(source))
        {
            // Above 2 GB: tensors stay in side files and are read one at a time when quantized. ONNX Runtime optimizes
            // the model from its bytes and the source's folder, and writes the result's tensors straight into the
            // cache entry's side file, so the weights are never whole in this process.
            Directory.CreateDirectory(CacheFolder);
            var temp = Path.Combine(CacheFolder, $".{sha}.{Environment.ProcessId}.{Guid.NewGuid():N}.onnx");
            try
            {
                var large = PrepareModel(source, sourcePath, out _, model => OptimizeLarge(model, sourcePath, temp, $"{Path.GetFileName(cached)}.{Guid.NewGuid():N}.data"));
                var (largeBytes, _) = ExternalData.ForRuntime(large);
                OnnxModelIO.WriteAtomically(cached, largeBytes);
                return new PreparedModel(sourcePath, sha, cached, large, false);
            }
            finally
            {
                try { File.Delete(temp); } catch (IOException) { }
            }
        }
        var prepared = PrepareModel(source, sourcePath, out var opsetRaised);
        Directory.CreateDirectory(CacheFolder);
        OnnxModelIO.Save(prepared, cached);
        return new PreparedModel(sourcePath, sha, cached, prepared, opsetRaised);
    }

    internal static ModelProto PrepareModel(ModelProto source, string sourcePath, out bool opsetRaised, bool useRuntime = true) =>
        PrepareModel(source, sourcePath, out opsetRaised, useRuntime ? model => OptimizeWithRuntime(model, sourcePath) : null);

    static ModelProto PrepareModel(ModelProto source, string sourcePath, out bool opsetRaised, Func<ModelProto, ModelProto>? optimize)
    {
        var model = source.Clone();
        NameNodes(model.Graph);
        RemoveInitializersFromInputs(model);
        // ONNX Runtime turns dense Constant nodes into initializers; sparse ones are densified here first.
        SparseTensors.Densify(model.Graph);
        var optimized = optimize is null ? model : optimize(model);
        if (optimize is null) ConstantsToInitializers(optimized.Graph);
        // ONNX Runtime's optimizer may add nodes without names or with repeated ones.
        NameNodes(optimized.Graph);
        // ONNX Runtime folds main-graph Constant nodes into initializers but leaves those of subgraphs as nodes.
        foreach (var node in optimized.Graph.Node)
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) ConstantsToInitializers(attr.G);
                foreach (var g in attr.Graphs) ConstantsToInitializers(g);
            }
        // The opset is left as it is: listing layers and calibrating need no raise, and quantization raises its copy
        // only as far as its options need (Quantizer.RequiredOpset).
        opsetRaised = false;
        return optimized;
    }

    /// <summary>Turns the numeric Constant nodes of a (sub)graph and of its own subgraphs into initializers of the
    /// same graph: the same values under the same names, so weights inside If branches and loop bodies are found
    /// like any other initializer.</summary>
    internal static void ConstantsToInitializers(GraphProto graph)
    {
        var keep = new List<NodeProto>(graph.Node.Count);
        foreach (var node in graph.Node)
        {
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) ConstantsToInitializers(attr.G);
                foreach (var g in attr.Graphs) ConstantsToInitializers(g);
            }
            if (node.OpType == "Constant" && node.Domain is "" or "ai.onnx" && node.Output.Count == 1 && node.Attribute.Count == 1
                && ConstantValue(node.Attribute[0]) is { } tensor)
            {
                tensor.Name = node.Output[0];
                graph.Initializer.Add(tensor);
                continue;
            }
            keep.Add(node);
        }
        if (keep.Count == graph.Node.Count) return;
        graph.Node.Clear();
        graph.Node.AddRange(keep);
    }

    static TensorProto? ConstantValue(AttributeProto attr)
    {
        switch (attr.Name)
        {
            case "value" when attr.T is not null && attr.T.DataLocation != TensorProto.Types.DataLocation.External:
                return attr.T.Clone();
            case "value_float":
                return TensorData.FromFloats("", new[] { attr.F });
            case "value_floats":
                return TensorData.FromFloats("", attr.Floats.ToArray(), attr.Floats.Count);
            case "value_int":
            case "value_ints":
                var t = new TensorProto { DataType = (int)OnnxDataType.Int64 };
                if (attr.Name == "value_ints") { t.Dims.Add(attr.Ints.Count); t.Int64Data.AddRange(attr.Ints); }
                else t.Int64Data.Add(attr.I);
                return t;
            default:
                return null;
        }
    }

    /// <summary>Layers are addressed by node name, so every node gets one, unique in its graph (kept when present
    /// and unique; ONNX does not require node names to be unique, and some exporters repeat them).</summary>
    internal static void NameNodes(GraphProto graph)
    {
        var scope = new NameScope(graph);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            if (node.Name.Length == 0 || !seen.Add(node.Name))
            {
                node.Name = scope.Fresh(node.Name.Length == 0 ? $"{node.OpType}_{i}" : node.Name);
                seen.Add(node.Name);
            }
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) NameNodes(attr.G);
                foreach (var g in attr.Graphs) NameNodes(g);
            }
        }
    }

    /// <summary>IR 3 listed initializers as graph inputs; ONNX Runtime treats those as overridable and will not fold
    /// them. They are constants in every model this tool handles.</summary>
    internal static void RemoveInitializersFromInputs(ModelProto model)
    {
        var inits = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var keep = model.Graph.Input.Where(i => !inits.Contains(i.Name)).ToList();
        if (keep.Count != model.Graph.Input.Count)
        {
            model.Graph.Input.Clear();
            model.Graph.Input.AddRange(keep);
        }
        if (model.IrVersion < 4) model.IrVersion = 4;
    }

    /// <summary>ONNX Runtime's basic optimizer over a model whose tensors are in side files: it reads them from the
    /// source's folder and writes the result's tensors to <paramref name="dataName"/> next to <paramref name="temp"/>,
    /// from where the result reads them when needed.</summary>
    static ModelProto OptimizeLarge(ModelProto model, string sourcePath, string temp, string dataName)
    {
        var (bytes, folder) = ExternalData.ForRuntime(model);
        using (var options = new SessionOptions())
        {
            options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC;
            options.OptimizedModelFilePath = temp;
            options.IntraOpNumThreads = 1;
            options.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
            options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", folder!);
            options.AddSessionConfigEntry("session.optimized_model_external_initializers_file_name", dataName);
            options.AddSessionConfigEntry("session.optimized_model_external_initializers_min_size_in_bytes", ExternalData.DefaultThreshold.ToString(System.Globalization.CultureInfo.InvariantCulture));
            options.AddSessionConfigEntry("session.disable_prepacking", "1");
            try
            {
                using var session = new InferenceSession(bytes, options);
            }
            catch (OnnxRuntimeException ex)
            {
                throw new PtqException("ModelRejectedByRuntime", PtqErrorKind.InvalidData,
                    $"ONNX Runtime cannot load '{sourcePath}': {ex.Message}", sourcePath, ex);
            }
        }
        bytes = Array.Empty<byte>();
        var optimized = OnnxModelIO.Parse(File.ReadAllBytes(temp), temp, validate: false);
        if (optimized.MetadataProps.Count == 0) optimized.MetadataProps.Add(model.MetadataProps);
        SortOpsetImports(optimized);
        return optimized;
    }

    /// <summary>The order in which ONNX Runtime 1.31 on Linux (libstdc++) writes its built-in domains.</summary>
    static readonly string[] RuntimeDomainOrder =
    {
        "", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview", "com.microsoft", "ai.onnx.preview.training",
        "com.microsoft.experimental", "com.microsoft.nchwc", "org.pytorch.aten",
    };

    /// <summary>ONNX Runtime writes a model's opset imports in the order of a hash map, which differs by C++ library
    /// (on Windows com.microsoft.nchwc came second): put them in one order, the one it writes on Linux, then any
    /// other domain by name, so that every platform writes the same bytes.</summary>
    internal static void SortOpsetImports(ModelProto model)
    {
        static int Rank(string domain)
        {
            var i = Array.IndexOf(RuntimeDomainOrder, domain);
            return i < 0 ? RuntimeDomainOrder.Length : i;
        }
        var sorted = model.OpsetImport.OrderBy(o => Rank(o.Domain)).ThenBy(o => o.Domain, StringComparer.Ordinal).ToList();
        if (sorted.SequenceEqual(model.OpsetImport)) return;
        model.OpsetImport.Clear();
        model.OpsetImport.AddRange(sorted);
    }

    static ModelProto OptimizeWithRuntime(ModelProto model, string sourcePath)
    {
        var temp = Path.Combine(Path.GetTempPath(), $"ptq-opt-{Environment.ProcessId}-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions())
            {
                options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC;
                options.OptimizedModelFilePath = temp;
                options.IntraOpNumThreads = 1;
                options.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
                try
                {
                    using var session = new InferenceSession(model.ToByteArray(), options);
                }
                catch (OnnxRuntimeException ex)
                {
                    throw new PtqException("ModelRejectedByRuntime", PtqErrorKind.InvalidData,
                        $"ONNX Runtime cannot load '{sourcePath}': {ex.Message}", sourcePath, ex);
                }
            }
            var optimized = OnnxModelIO.Parse(File.ReadAllBytes(temp), sourcePath, validate: false);
            // ONNX Runtime keeps names and metadata; carry over what it may drop.
            if (optimized.MetadataProps.Count == 0) optimized.MetadataProps.Add(model.MetadataProps);
            SortOpsetImports(optimized);
            return optimized;
        }
        finally
        {
            try { File.Delete(temp); } catch (IOException) { }
        }
    }
}
