using Microsoft.ML.OnnxRuntime;
using SkiaSharp;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Data;

/// <summary>Creates data set descriptions and reads their samples, prepared the way the description says.</summary>
public static class DataSetReader
{
    public static readonly string[] ImageExtensions = { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp" };

    /// <summary>Describes the images under a folder. Sub-folders are classes (their sorted names give the labels).</summary>
    public static PtqDataSet FromImageFolder(string folder, PtqDataSet options)
    {
        if (!Directory.Exists(folder))
            throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"The folder '{folder}' does not exist.", folder);
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetFileName(f).StartsWith('.'))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        var notImages = files.Where(f => !ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant())).ToList();
        if (notImages.Count > 0)
            throw new PtqException("DataSetFileNotImage", PtqErrorKind.InvalidData,
                $"'{notImages[0]}' in the image folder is not an image ({string.Join(", ", ImageExtensions)}); {notImages.Count} such file(s). Remove them or point at a folder of images only.", notImages[0]);
        var classes = Directory.GetDirectories(folder).Select(Path.GetFileName).OrderBy(n => n, StringComparer.Ordinal).ToArray();
        var ds = Copy(options, "ImageFolder", Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)));
        ds.Paths = files.Select(Path.GetFullPath).ToArray();
        ds.Classes = classes!;
        ds.HasLabels = classes.Length > 0 && files.All(f => Path.GetDirectoryName(f) != Path.TrimEndingDirectorySeparator(folder));
        ds.ClassCount = ds.HasLabels ? classes.Length : 0;
        return Finish(ds, files.Count);
    }

    public static PtqDataSet FromIdx(string imagesPath, string? labelsPath, PtqDataSet options)
    {
        if (!File.Exists(imagesPath))
            throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"The file '{imagesPath}' does not exist.", imagesPath);
        labelsPath ??= GuessIdxLabels(imagesPath);
        var (_, shape) = IdxFile.Read(imagesPath);
        if (shape.Length != 3) throw new PtqException("IdxNotReadable", PtqErrorKind.InvalidData, $"'{imagesPath}' does not hold images (rank {shape.Length}, expected 3).", imagesPath);
        var ds = Copy(options, "Idx", Path.GetFileName(imagesPath));
        ds.Paths = new[] { Path.GetFullPath(imagesPath) };
        if (labelsPath is not null && File.Exists(labelsPath))
        {
            var (labels, lshape) = IdxFile.Read(labelsPath);
            if (lshape.Length != 1 || lshape[0] != shape[0])
                throw new PtqException("IdxLabelsMismatch", PtqErrorKind.InvalidData, $"'{labelsPath}' holds {lshape[0]} labels for {shape[0]} images.", labelsPath);
            ds.LabelPath = Path.GetFullPath(labelsPath);
            ds.HasLabels = true;
            ds.ClassCount = labels.Length == 0 ? 0 : labels.Max() + 1;
        }
        return Finish(ds, shape[0]);
    }

    public static PtqDataSet FromNpy(IReadOnlyList<string> files, PtqDataSet options)
    {
        int count = 0;
        foreach (var f in files)
        {
            if (!File.Exists(f)) throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"The file '{f}' does not exist.", f);
            var (_, shape) = ArrayFiles.Read(f);
            if (shape.Length == 0) throw new PtqException("NpyNotReadable", PtqErrorKind.InvalidData, $"'{f}' holds a scalar; the first axis must count samples.", f);
            count += shape[0];
        }
        var ds = Copy(options, "Npy", files.Count == 1 ? Path.GetFileName(files[0]) : $"{files.Count} .npy files");
        ds.Paths = files.Select(Path.GetFullPath).ToArray();
        return Finish(ds, count);
    }

    /// <summary>
    /// Describes samples stored as ONNX TensorProto files, the layout of the ONNX test data: a folder holding
    /// test_data_set_N folders (each one sample), a folder holding input_K.pb files (one sample), or .pb files (one
    /// single-input sample each). The K-th input file feeds the model's K-th input.
    /// </summary>
    public static PtqDataSet FromTensorProto(IReadOnlyList<string> paths, PtqDataSet options)
    {
        var samples = new List<string>();
        foreach (var p in paths)
        {
            if (File.Exists(p)) { samples.Add(Path.GetFullPath(p)); continue; }
            if (!Directory.Exists(p)) throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"'{p}' does not exist.", p);
            if (InputFiles(p).Length > 0) { samples.Add(Path.GetFullPath(p)); continue; }
            var sets = Directory.GetDirectories(p, "test_data_set_*").Where(d => InputFiles(d).Length > 0).OrderBy(d => d, StringComparer.Ordinal).ToList();
            if (sets.Count == 0)
                throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"'{p}' holds neither input_K.pb files nor test_data_set_N folders with them.", p);
            samples.AddRange(sets.Select(Path.GetFullPath));
        }
        var first = ReadTensorSample(samples[0]);
        var ds = Copy(options, "TensorProto", Path.GetFileName(Path.TrimEndingDirectorySeparator(paths[0])));
        ds.Paths = samples.ToArray();
        ds.SampleShape = first[0].Dims.Select(d => (int)d).ToArray();
        return Finish(ds, samples.Count);
    }

    /// <summary>input_0.pb, input_1.pb, ... in index order.</summary>
    internal static string[] InputFiles(string folder) =>
        Directory.GetFiles(folder, "input_*.pb")
            .Select(f => (File: f, Ok: int.TryParse(Path.GetFileNameWithoutExtension(f)[6..], out var k), K: k))
            .Where(x => x.Ok).OrderBy(x => x.K).Select(x => x.File).ToArray();

    /// <summary>The tensors of one TensorProto sample (a folder of input_K.pb, or one .pb file).</summary>
    internal static List<global::Onnx.TensorProto> ReadTensorSample(string path)
    {
        var files = Directory.Exists(path) ? InputFiles(path) : new[] { path };
        for (int k = 0; k < files.Length; k++)
            if (Path.GetFileNameWithoutExtension(files[k]) != $"input_{k}" && files.Length > 1)
                throw new PtqException("DataSetFileMissing", PtqErrorKind.InvalidData, $"'{path}' has no input_{k}.pb but has later inputs.", path);
        return files.Select(TensorProtoFile.Read).ToList();
    }

    public static PtqDataSet FromArrays(float[][] samples, int[] shape, int[]? labels, PtqDataSet options)
    {
        long size = shape.Aggregate(1L, (a, d) => a * d);
        for (int i = 0; i < samples.Length; i++)
            if (samples[i].Length != size)
                throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidArgument,
                    $"Sample {i} has {samples[i].Length} values; shape [{string.Join(",", shape)}] needs {size}.", i);
        if (labels is not null && labels.Length != samples.Length)
            throw new PtqException("DataLabelsMismatch", PtqErrorKind.InvalidArgument, $"{labels.Length} labels were given for {samples.Length} samples.", labels);
        var ds = Copy(options, "Array", $"{samples.Length} arrays");
        ds.Data = samples;
        ds.Labels = labels;
        ds.HasLabels = labels is not null;
        ds.ClassCount = labels is null || labels.Length == 0 ? 0 : labels.Max() + 1;
        ds.SampleShape = shape;
        return Finish(ds, samples.Length);
    }

    /// <summary>A data set whose samples a PowerShell script block yields while a calibration runs (each a flat
    /// array of <paramref name="shape"/>'s size). Nothing is read here: the script is not run up front.</summary>
    public static PtqDataSet FromScript(string scriptText, int[] shape, PtqDataSet options)
    {
        if (options.Shuffle)
            throw new PtqException("ShuffleNotSupported", PtqErrorKind.InvalidArgument,
                "-Shuffle needs samples that can be read in any order; a script yields its samples in its own order (shuffle inside the script instead).", scriptText);
        if (shape.Length == 0 || shape.Any(d => d < 1))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Shape must be positive dimensions, not [{string.Join(",", shape)}].", shape);
        CheckCommon(options);
        var ds = Copy(options, "Script", "script block");
        ds.ScriptText = scriptText;
        ds.SampleShape = shape;
        ds.Count = options.Count;   // at most this many (0: all the script yields)
        return ds;
    }

    /// <summary>One sample a script yielded, checked against the data set's shape.</summary>
    public static Sample ScriptSample(PtqDataSet ds, int index, float[] data)
    {
        long size = ds.SampleShape.Aggregate(1L, (a, d) => a * d);
        string id = $"script[{index}]";
        if (data.Length != size)
            throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData,
                $"Sample {index} of the script has {data.Length} values; shape [{string.Join(",", ds.SampleShape)}] needs {size}. (Write each sample as one object: ,$sample or Write-Output -NoEnumerate $sample; PowerShell otherwise writes an array's numbers one by one.)", id);
        foreach (var v in data)
            if (!float.IsFinite(v))
                throw new PtqException("SampleNotFinite", PtqErrorKind.InvalidData, $"Sample '{id}' holds NaN or infinity.", id);
        return new Sample(index, id, data, ds.SampleShape.ToArray(), -1);
    }

    static void CheckCommon(PtqDataSet ds)
    {
        if (ds.Skip < 0) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, "Skip cannot be negative.", ds.Skip);
        if (ds.BatchSize < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"BatchSize must be at least 1, not {ds.BatchSize}.", ds.BatchSize);
    }

    /// <summary>The indices of the samples a data set reads, in order: Skip.. Skip+Count-1, or with Shuffle the first
    /// Count of a permutation (seeded by Seed, SplitMix64 with Fisher-Yates, so the same on every platform and .NET
    /// version) of the samples after Skip.</summary>
    public static int[] Indices(PtqDataSet ds)
    {
        var all = AllIndices(ds);
        if (ds.HoldOutEvery <= 0) return all;
        return all.Where(i => (i % ds.HoldOutEvery == ds.HoldOutEvery - 1) == ds.HeldOut).ToArray();
    }

    static int[] AllIndices(PtqDataSet ds)
    {
        if (!ds.Shuffle) return Enumerable.Range(ds.Skip, ds.Count).ToArray();
        int available = Math.Max(0, ds.SourceCount - ds.Skip);
        var order = Enumerable.Range(ds.Skip, available).ToArray();
        ulong state = (ulong)(uint)ds.Seed;
        int take = Math.Min(ds.Count, available);
        for (int i = 0; i < take; i++)
        {
            // SplitMix64, then a multiply-shift into [i, available).
            ulong z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            int j = i + (int)(((UInt128)z * (ulong)(available - i)) >> 64);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order[..take];
    }

    static PtqDataSet Finish(PtqDataSet ds, int total)
    {
        CheckCommon(ds);
        ds.SourceCount = total;
        int available = Math.Max(0, total - ds.Skip);
        ds.Count = ds.Count > 0 ? Math.Min(ds.Count, available) : available;
        if (ds.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{ds.Name}' has no samples (found {total}, skipping {ds.Skip}).", ds.Name);
        if (ds.Mean.Length > 0 && ds.Mean.Length != 1 && ds.Mean.Length != ds.Channels || ds.Std.Length > 0 && ds.Std.Length != 1 && ds.Std.Length != ds.Channels)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Mean and Std need 1 or {ds.Channels} values.", ds.Mean);
        if (ds.Std.Any(s => s == 0 || !float.IsFinite(s)))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, "Std values must be finite and non-zero.", ds.Std);
        // The shape of a prepared sample, found by preparing the first one.
        using var reader = new SampleReader(ds);
        var first = reader.Read(CancellationToken.None).First();
        ds.SampleShape = first.Shape;
        return ds;
    }

    static PtqDataSet Copy(PtqDataSet o, string kind, string name) => new()
    {
        Kind = kind, Name = name, Skip = o.Skip, Count = o.Count, Shuffle = o.Shuffle, Seed = o.Seed, BatchSize = o.BatchSize,
        Resize = o.Resize, Channels = o.Channels, Layout = o.Layout,
        ChannelOrder = o.ChannelOrder, Scale = o.Scale, Mean = o.Mean, Std = o.Std,
        PreprocessModel = o.PreprocessModel is null ? null : Path.GetFullPath(o.PreprocessModel),
    };

    static string? GuessIdxLabels(string imagesPath)
    {
        var name = Path.GetFileName(imagesPath);
        if (!name.Contains("images-idx3", StringComparison.Ordinal)) return null;
        var candidate = Path.Combine(Path.GetDirectoryName(imagesPath)!, name.Replace("images-idx3", "labels-idx1", StringComparison.Ordinal));
        return File.Exists(candidate) ? candidate : null;
    }
}

/// <summary>Streams the prepared samples of a data set, one at a time (nothing but the current sample is held,
/// apart from an IDX file's bytes).</summary>
public sealed class SampleReader : IDisposable
{
    readonly PtqDataSet _ds;
    InferenceSession? _preprocess;
    string? _preprocessInput;

    public SampleReader(PtqDataSet ds)
    {
        _ds = ds;
        if (ds.Layout is not ("NCHW" or "NHWC"))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Layout must be NCHW or NHWC, not '{ds.Layout}'.", ds.Layout);
        if (ds.ChannelOrder is not ("RGB" or "BGR"))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"ChannelOrder must be RGB or BGR, not '{ds.ChannelOrder}'.", ds.ChannelOrder);
        if (ds.Channels is not (1 or 3))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Channels must be 1 or 3, not {ds.Channels}.", ds.Channels);
    }

    public IEnumerable<Sample> Read(CancellationToken cancel)
    {
        if (_ds.Kind == "Script")
            throw new PtqException("ScriptDataSetNotSupported", PtqErrorKind.NotSupported,
                "A script data set is evaluated by Measure-ActivationRange while it calibrates; this command reads stored samples only. Collect the samples first (New-PtqDataSet -InputObject (& $script) -Shape ...).", _ds.Name);
        var indices = DataSetReader.Indices(_ds);
        switch (_ds.Kind)
        {
            case "ImageFolder":
                foreach (int i in indices)
                {
                    cancel.ThrowIfCancellationRequested();
                    var path = _ds.Paths[i];
                    int label = _ds.HasLabels ? _ds.Classes.IndexOf(Path.GetFileName(Path.GetDirectoryName(path)) ?? "") : -1;
                    using var bitmap = Decode(path);
                    yield return Finish(i, path, FromBitmap(bitmap), label);
                }
                break;
            case "Idx":
                {
                    var (pixels, shape) = IdxFile.Read(_ds.Paths[0]);
                    byte[]? labels = _ds.LabelPath is null ? null : IdxFile.Read(_ds.LabelPath).Data;
                    int h = shape[1], w = shape[2];
                    foreach (int i in indices)
                    {
                        cancel.ThrowIfCancellationRequested();
                        using var bitmap = new SKBitmap(new SKImageInfo(w, h, SKColorType.Gray8, SKAlphaType.Opaque));
                        System.Runtime.InteropServices.Marshal.Copy(pixels, i * h * w, bitmap.GetPixels(), h * w);
                        yield return Finish(i, $"{Path.GetFileName(_ds.Paths[0])}[{i}]", FromBitmap(bitmap), labels?[i] ?? -1);
                    }
                    break;
                }
            case "Npy":
                {
                    // Global index -> (file, row). In order, one file is held at a time; shuffled, each file read is kept.
                    var offsets = new List<int> { 0 };
                    foreach (var file in _ds.Paths) offsets.Add(offsets[^1] + ArrayFiles.Read(file).Shape[0]);
                    var loaded = new Dictionary<int, (float[] Data, int[] Shape)>();
                    foreach (int index in indices)
                    {
                        cancel.ThrowIfCancellationRequested();
                        int f = offsets.FindLastIndex(o => o <= index);
                        if (!loaded.TryGetValue(f, out var array))
                        {
                            if (!_ds.Shuffle) loaded.Clear();
                            loaded[f] = array = ArrayFiles.Read(_ds.Paths[f]);
                        }
                        int k = index - offsets[f], per = array.Shape.Skip(1).Aggregate(1, (a, d) => a * d);
                        var sample = array.Data.AsSpan(k * per, per).ToArray();
                        yield return Finish(index, $"{Path.GetFileName(_ds.Paths[f])}[{k}]", (sample, array.Shape[1..]), -1, raw: true);
                    }
                    break;
                }
            case "Text":
                foreach (var sample in TextDataSet.Read(_ds, indices, cancel)) yield return sample;
                break;
            case "TensorProto":
                foreach (int i in indices)
                {
                    cancel.ThrowIfCancellationRequested();
                    var tensors = DataSetReader.ReadTensorSample(_ds.Paths[i]);
                    yield return new Sample(i, _ds.Paths[i], Array.Empty<float>(), tensors[0].Dims.Select(d => (int)d).ToArray(), -1) { Inputs = tensors };
                }
                break;
            case "Array":
                foreach (int i in indices)
                {
                    cancel.ThrowIfCancellationRequested();
                    yield return Finish(i, $"array[{i}]", ((float[])_ds.Data![i].Clone(), _ds.SampleShape.ToArray()), _ds.Labels?[i] ?? -1, raw: true);
                }
                break;
            default:
                throw new PtqException("InvalidDataSet", PtqErrorKind.InvalidArgument, $"Unknown data set kind '{_ds.Kind}'.", _ds.Kind);
        }
    }

    /// <summary>Decodes an image whole. SKBitmap.Decode also accepts a truncated file (the rows it could not read
    /// are left blank), which would calibrate on an image that is not there: only a complete decode is taken.</summary>
    static SKBitmap Decode(string path)
    {
        using var stream = DataFiles.OpenRead(path);
        using var codec = SKCodec.Create(stream, out var created);
        if (codec is null)
            throw new PtqException("ImageNotDecodable", PtqErrorKind.InvalidData, $"'{path}' cannot be decoded as an image ({created}).", path);
        // As SKBitmap.Decode does: the codec's own colour type, premultiplied alpha, no colour space.
        var info = codec.Info;
        if (info.AlphaType == SKAlphaType.Unpremul) info.AlphaType = SKAlphaType.Premul;
        info.ColorSpace = null;
        var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result != SKCodecResult.Success)
        {
            bitmap.Dispose();
            throw new PtqException("ImageNotDecodable", PtqErrorKind.InvalidData,
                $"'{path}' cannot be decoded as an image: {(result == SKCodecResult.IncompleteInput ? "it is truncated" : result.ToString())}.", path);
        }
        return bitmap;
    }

    /// <summary>Resizes, then lays out pixel values (0..255) x Scale, minus Mean, over Std, in the chosen channel
    /// order and layout.</summary>
    (float[] Data, int[] Shape) FromBitmap(SKBitmap source)
    {
        SKBitmap bitmap = source;
        SKBitmap? resized = null;
        if (_ds.Resize > 0 && (source.Width != _ds.Resize || source.Height != _ds.Resize))
        {
            resized = source.Resize(new SKImageInfo(_ds.Resize, _ds.Resize, SKColorType.Rgba8888, SKAlphaType.Unpremul),
                new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.None))
                ?? throw new PtqException("ImageNotDecodable", PtqErrorKind.InvalidData, "The image could not be resized.", null);
            bitmap = resized;
        }
        try
        {
            int w = bitmap.Width, h = bitmap.Height, c = _ds.Channels;
            var data = new float[c * h * w];
            bool nchw = _ds.Layout == "NCHW", bgr = _ds.ChannelOrder == "BGR";
            Span<float> rgb = stackalloc float[3];
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    var px = bitmap.GetPixel(x, y);
                    if (c == 1) rgb[0] = 0.299f * px.Red + 0.587f * px.Green + 0.114f * px.Blue;
                    else if (bgr) { rgb[0] = px.Blue; rgb[1] = px.Green; rgb[2] = px.Red; }
                    else { rgb[0] = px.Red; rgb[1] = px.Green; rgb[2] = px.Blue; }
                    for (int ch = 0; ch < c; ch++)
                    {
                        float v = rgb[ch] * _ds.Scale;
                        if (_ds.Mean.Length > 0) v -= _ds.Mean[_ds.Mean.Length == 1 ? 0 : ch];
                        if (_ds.Std.Length > 0) v /= _ds.Std[_ds.Std.Length == 1 ? 0 : ch];
                        data[nchw ? (ch * h + y) * w + x : (y * w + x) * c + ch] = v;
                    }
                }
            return (data, nchw ? new[] { c, h, w } : new[] { h, w, c });
        }
        finally
        {
            resized?.Dispose();
        }
    }

    Sample Finish(int index, string id, (float[] Data, int[] Shape) sample, int label, bool raw = false)
    {
        var (data, shape) = sample;
        foreach (var v in data)
            if (!float.IsFinite(v))
                throw new PtqException("SampleNotFinite", PtqErrorKind.InvalidData, $"Sample '{id}' holds NaN or infinity.", id);
        if (_ds.PreprocessModel is not null && !raw) (data, shape) = Preprocess(data, shape);
        return new Sample(index, id, data, shape, label);
    }

    (float[], int[]) Preprocess(float[] data, int[] shape)
    {
        if (_preprocess is null)
        {
            if (!File.Exists(_ds.PreprocessModel))
                throw new PtqException("ModelNotFound", PtqErrorKind.ObjectNotFound, $"The preprocessing model '{_ds.PreprocessModel}' does not exist.", _ds.PreprocessModel);
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, IntraOpNumThreads = 1 };
            try { _preprocess = new InferenceSession(_ds.PreprocessModel, options); }
            catch (OnnxRuntimeException ex)
            {
                throw new PtqException("ModelRejectedByRuntime", PtqErrorKind.InvalidData, $"ONNX Runtime cannot load the preprocessing model '{_ds.PreprocessModel}': {ex.Message}", _ds.PreprocessModel, ex);
            }
            _preprocessInput = _preprocess.InputNames[0];
        }
        var batched = new long[] { 1 }.Concat(shape.Select(d => (long)d)).ToArray();
        using var input = OrtValue.CreateTensorValueFromMemory(data, batched);
        try
        {
            using var outputs = _preprocess.Run(new RunOptions(), new[] { _preprocessInput! }, new[] { input }, _preprocess.OutputNames);
            var outShape = outputs[0].GetTensorTypeAndShape().Shape;
            return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outShape.Skip(1).Select(d => (int)d).ToArray());
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData,
                $"The preprocessing model '{_ds.PreprocessModel}' rejects samples of shape [{string.Join(",", shape)}]: {ex.Message}", _ds.PreprocessModel, ex);
        }
    }

    public void Dispose() => _preprocess?.Dispose();
}
