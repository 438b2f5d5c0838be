using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Tensors kept in side files (ONNX external data: <c>data_location = EXTERNAL</c> with <c>location</c>,
/// <c>offset</c> and <c>length</c> entries). Locations are resolved inside the model's folder only: an absolute path,
/// a <c>..</c> that leaves the folder, or a symbolic link that points out of it is refused as a security error.
/// </summary>
public static class ExternalData
{
    /// <summary>Tensors at least this large go to the side file when a model is written with external data.</summary>
    public const int DefaultThreshold = 1024;

    /// <summary>Every tensor of the model (initializers and Constant/attribute tensors, in subgraphs too).</summary>
    internal static IEnumerable<TensorProto> Tensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer) yield return t;
        foreach (var s in graph.SparseInitializer)
        {
            if (s.Values is not null) yield return s.Values;
            if (s.Indices is not null) yield return s.Indices;
        }
        foreach (var node in graph.Node)
            foreach (var attr in node.Attribute)
            {
                if (attr.T is not null) yield return attr.T;
                foreach (var t in attr.Tensors) yield return t;
                if (attr.SparseTensor is not null)
                {
                    if (attr.SparseTensor.Values is not null) yield return attr.SparseTensor.Values;
                    if (attr.SparseTensor.Indices is not null) yield return attr.SparseTensor.Indices;
                }
                if (attr.G is not null) foreach (var t in Tensors(attr.G)) yield return t;
                foreach (var g in attr.Graphs) foreach (var t in Tensors(g)) yield return t;
            }
    }

    public static bool HasExternal(ModelProto model) =>
        model.Graph is not null && Tensors(model.Graph).Any(t => t.DataLocation == TensorProto.Types.DataLocation.External);

    /// <summary>Private external-data keys: the checked real path of a tensor's side file and the model folder it
    /// was resolved in. Only <see cref="Load"/> sets them (entries with these keys in a model file are dropped).</summary>
    internal const string PathKey = "ptq.resolved_path", FolderKey = "ptq.model_folder";

    /// <summary>Above this many bytes of external data, tensors are not read at load but left in their side files
    /// and read one at a time when needed (<see cref="ReadBytes"/>), so a model above 2 GB is never whole in memory.</summary>
    internal static long LazyThresholdBytes
    {
        get => LazyThresholdOverride.Value ?? OnnxModelIO.MaxModelBytes - (64L << 20);
        set => LazyThresholdOverride.Value = value;
    }

    /// <summary>Per asynchronous flow, so that a test can lower the threshold without touching others running in parallel.</summary>
    static readonly AsyncLocal<long?> LazyThresholdOverride = new();

    /// <summary>Checks every external tensor of the model against files inside <paramref name="modelFolder"/>, and
    /// reads them into raw_data (or, above <see cref="LazyThresholdBytes"/> in all, marks them to be read when
    /// needed). Returns the side files, in order of first use.</summary>
    public static IReadOnlyList<string> Load(ModelProto model, string modelFolder, string source)
    {
        var root = RealPath(Path.GetFullPath(modelFolder));
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        var found = new List<(TensorProto Tensor, string File, long Offset, long Length)>();
        foreach (var t in Tensors(model.Graph))
        {
            for (int k = t.ExternalData.Count - 1; k >= 0; k--)
                if (t.ExternalData[k].Key is PathKey or FolderKey) t.ExternalData.RemoveAt(k);
            if (t.DataLocation != TensorProto.Types.DataLocation.External) continue;
            var entries = t.ExternalData.GroupBy(e => e.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Last().Value, StringComparer.Ordinal);
            if (!entries.TryGetValue("location", out var location) || location.Length == 0)
                throw Invalid("ExternalDataInvalid", $"Tensor '{t.Name}' in '{source}' is marked external but names no location.", t.Name);
            var file = Resolve(root, location, t.Name, source);
            long offset = ParseLong(entries, "offset", 0, t, source);
            if (!sizes.TryGetValue(file, out var fileLength))
            {
                if (!File.Exists(file))
                    throw new PtqException("ExternalDataNotFound", PtqErrorKind.ObjectNotFound,
                        $"Tensor '{t.Name}' of '{source}' keeps its data in '{location}', which does not exist next to the model.", file);
                sizes[file] = fileLength = new FileInfo(file).Length;
            }
            long expected = ExpectedBytes(t, source);
            long length = ParseLong(entries, "length", expected >= 0 ? expected : fileLength - offset, t, source);
            if (expected >= 0 && length != expected)
                throw Invalid("TensorDataSizeMismatch",
                    $"Tensor '{t.Name}' in '{source}' has shape [{string.Join(",", t.Dims)}] ({expected} bytes of {OnnxDataTypes.Name(t.DataType)}) but its external data is {length} bytes long.", t.Name);
            if (offset < 0 || length < 0 || offset > fileLength || length > fileLength - offset)
                throw Invalid("ExternalDataInvalid",
                    $"Tensor '{t.Name}' in '{source}' reads bytes {offset}..{offset + length} of '{location}', which holds {fileLength}.", t.Name);
            if (length > int.MaxValue)
                throw new PtqException("TensorTooLarge", PtqErrorKind.NotSupported, $"Tensor '{t.Name}' in '{source}' is {length:N0} bytes; one tensor may hold at most 2 GB.", t.Name);
            found.Add((t, file, offset, length));
        }
        bool lazy = found.Sum(f => f.Length) > LazyThresholdBytes;
        foreach (var (t, file, offset, length) in found)
        {
            if (lazy)
            {
                // Offset and length are stated explicitly, so the tensor reads the same bytes from here on.
                SetEntry(t, "offset", offset);
                SetEntry(t, "length", length);
                t.ExternalData.Add(new StringStringEntryProto { Key = PathKey, Value = file });
                t.ExternalData.Add(new StringStringEntryProto { Key = FolderKey, Value = root });
                continue;
            }
            var buffer = new byte[length];
            using (var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16))
            {
                stream.Position = offset;
                stream.ReadExactly(buffer);
            }
            t.RawData = UnsafeByteOperations.UnsafeWrap(buffer);
            t.ExternalData.Clear();
            t.DataLocation = TensorProto.Types.DataLocation.Default;
        }
        return sizes.Keys.ToList();
    }

    static void SetEntry(TensorProto t, string key, long value)
    {
        var text = value.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var entry = t.ExternalData.LastOrDefault(e => e.Key == key);
        if (entry is null) t.ExternalData.Add(new StringStringEntryProto { Key = key, Value = text });
        else entry.Value = text;
    }

    /// <summary>Whether the tensor's data is still in its (checked) side file, to be read when needed.</summary>
    public static bool IsDeferred(TensorProto t) =>
        t.DataLocation == TensorProto.Types.DataLocation.External && t.ExternalData.Any(e => e.Key == PathKey);

    /// <summary>Whether any tensor of the model is still in its side file.</summary>
    public static bool HasDeferred(ModelProto model) => model.Graph is not null && Tensors(model.Graph).Any(IsDeferred);

    static (string File, long Offset, long Length) Where(TensorProto t)
    {
        string Get(string key) => t.ExternalData.Last(e => e.Key == key).Value;
        return (Get(PathKey), long.Parse(Get("offset"), System.Globalization.CultureInfo.InvariantCulture), long.Parse(Get("length"), System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>Reads a deferred tensor's bytes into <paramref name="destination"/> (exactly its length).</summary>
    public static void ReadBytes(TensorProto t, Span<byte> destination)
    {
        var (file, offset, length) = Where(t);
        if (destination.Length != length)
            throw Invalid("TensorDataSizeMismatch", $"Tensor '{t.Name}' has {length} bytes of external data, not {destination.Length}.", t.Name);
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        stream.Position = offset;
        stream.ReadExactly(destination);
    }

    /// <summary>The byte length of a deferred tensor's data.</summary>
    public static long DeferredLength(TensorProto t) => Where(t).Length;

    /// <summary>The model as ONNX Runtime takes it: its bytes and, when tensors are deferred, the folder their side
    /// files are resolved in (session option <c>session.model_external_initializers_file_folder_path</c>).</summary>
    public static (byte[] Bytes, string? Folder) ForRuntime(ModelProto model)
    {
        if (!HasDeferred(model)) return (model.ToByteArray(), null);
        var copy = model.Clone();
        string? folder = null;
        foreach (var t in Tensors(copy.Graph).Where(IsDeferred))
        {
            var f = t.ExternalData.Last(e => e.Key == FolderKey).Value;
            if (folder is not null && folder != f)
                throw new PtqException("ExternalDataNotSupported", PtqErrorKind.NotSupported, "The model's external data lies in more than one folder.", t.Name);
            folder = f;
            for (int k = t.ExternalData.Count - 1; k >= 0; k--)
                if (t.ExternalData[k].Key is PathKey or FolderKey) t.ExternalData.RemoveAt(k);
        }
        return (copy.ToByteArray(), folder);
    }

    /// <summary>The full path of an external-data location, refused unless it stays inside the model's folder.</summary>
    public static string Resolve(string modelFolder, string location, string tensor, string source)
    {
        var root = RealPath(Path.GetFullPath(modelFolder));
        if (Path.IsPathRooted(location) || location.Contains('\0') || location.Replace('\\', '/').Split('/').Contains(".."))
            throw Escape(tensor, location, source, "an absolute path or a '..' segment");
        var full = Path.GetFullPath(Path.Combine(root, location));
        if (!Inside(root, full)) throw Escape(tensor, location, source, "a path outside the model's folder");
        var real = RealPath(full);
        if (!Inside(root, real)) throw Escape(tensor, location, source, $"a symbolic link to '{real}'");
        return real;
    }

    static bool Inside(string root, string path) =>
        path.StartsWith(Path.TrimEndingDirectorySeparator(root) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The path with every symbolic link along it resolved (what the file system opens).</summary>
    internal static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full)!;
        var current = root;
        var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        int hops = 0;
        var queue = new Queue<string>(parts);
        while (queue.Count > 0)
        {
            var next = Path.Combine(current, queue.Dequeue());
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.Exists && info.LinkTarget is { } target)
            {
                if (++hops > 40) throw new PtqException("ExternalDataInvalid", PtqErrorKind.InvalidData, $"Too many symbolic links under '{path}'.", path);
                var resolved = Path.GetFullPath(Path.IsPathRooted(target) ? target : Path.Combine(current, target));
                // Restart from the link's target with the remaining parts.
                var rest = queue.ToArray();
                var rroot = Path.GetPathRoot(resolved)!;
                current = rroot;
                queue = new Queue<string>(resolved[rroot.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Concat(rest));
                continue;
            }
            current = next;
        }
        return current;
    }

    static long ExpectedBytes(TensorProto t, string source)
    {
        long n;
        try { n = TensorData.ElementCount(t.Dims); }
        catch (OverflowException) { throw Invalid("InvalidDimension", $"Tensor '{t.Name}' in '{source}' has dimensions whose product overflows.", t.Name); }
        if (n < 0) throw Invalid("InvalidDimension", $"Tensor '{t.Name}' in '{source}' has a negative dimension.", t.Name);
        var type = (OnnxDataType)t.DataType;
        if (type is OnnxDataType.Int4 or OnnxDataType.UInt4 or OnnxDataType.Float4E2M1) return (n + 1) / 2;
        int size = OnnxDataTypes.ElementSize(type);
        if (size == 0) return -1;
        try { return checked(n * size); }
        catch (OverflowException) { throw Invalid("InvalidDimension", $"Tensor '{t.Name}' in '{source}' has dimensions whose product overflows.", t.Name); }
    }

    static long ParseLong(Dictionary<string, string> entries, string key, long fallback, TensorProto t, string source)
    {
        if (!entries.TryGetValue(key, out var text)) return fallback;
        if (!long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v))
            throw Invalid("ExternalDataInvalid", $"Tensor '{t.Name}' in '{source}' has external-data {key} '{text}', which is not a non-negative integer.", t.Name);
        return v;
    }

    /// <summary>
    /// Writes the model to <paramref name="path"/> with every tensor of at least <paramref name="threshold"/> bytes in
    /// the side file <c>&lt;model file name&gt;.data</c> next to it (offsets aligned to 4 KiB). Both files are written
    /// under temporary names and renamed into place; the model object is left as it was.
    /// </summary>
    public static void Save(ModelProto model, string path, int threshold = DefaultThreshold, CancellationToken cancel = default)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder '{dir}' does not exist.", dir);
        var dataName = Path.GetFileName(full) + ".data";
        var dataPath = Path.Combine(dir, dataName);
        var tempData = Path.Combine(dir, $".{dataName}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        var tempModel = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        // The side file written here must not be one the model still reads from (the source's weights).
        foreach (var t in Tensors(model.Graph).Where(IsDeferred))
            if (PathNames.Same(Where(t).File, RealPath(dataPath)))
                throw new PtqException("OutputIsSource", PtqErrorKind.InvalidArgument,
                    $"Writing '{full}' would replace '{dataPath}', which holds the source model's tensor '{t.Name}'; choose another output name.", full);
        var moved = new List<(TensorProto Tensor, ByteString Raw, StringStringEntryProto[] Entries)>();
        try
        {
            using (var stream = new FileStream(tempData, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var chunk = new byte[1 << 20];
                foreach (var t in Tensors(model.Graph))
                {
                    bool deferred = IsDeferred(t);
                    if (!deferred && (t.DataLocation == TensorProto.Types.DataLocation.External || t.RawData.Length < threshold)) continue;
                    cancel.ThrowIfCancellationRequested();
                    long offset = (stream.Position + 4095) / 4096 * 4096;
                    if (offset > stream.Position) stream.Write(new byte[offset - stream.Position]);
                    long length;
                    if (deferred)
                    {
                        // Copied from the source side file in chunks: never whole in memory.
                        var (file, from, count) = Where(t);
                        using var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                        source.Position = from;
                        for (long left = count; left > 0;)
                        {
                            cancel.ThrowIfCancellationRequested();
                            int n = (int)Math.Min(chunk.Length, left);
                            source.ReadExactly(chunk, 0, n);
                            stream.Write(chunk, 0, n);
                            left -= n;
                        }
                        length = count;
                    }
                    else
                    {
                        stream.Write(t.RawData.Span);
                        length = t.RawData.Length;
                    }
                    moved.Add((t, t.RawData, t.ExternalData.ToArray()));
                    t.RawData = ByteString.Empty;
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    t.ExternalData.Clear();
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                }
            }
            cancel.ThrowIfCancellationRequested();
            // Both files are complete under temporary names before either is renamed: a full disk while writing
            // the model must not leave a new side file beside an old model (or beside none).
            File.WriteAllBytes(tempModel, model.ToByteArray());
            cancel.ThrowIfCancellationRequested();
            OnnxModelIO.MoveOver(tempData, dataPath);
            OnnxModelIO.MoveOver(tempModel, full);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PtqException("OutputNotWritable", PtqErrorKind.WriteError, $"Cannot write '{full}' with external data: {ex.Message}{OnnxModelIO.OpenFileHint(full)}", full, ex);
        }
        finally
        {
            try { File.Delete(tempData); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            try { File.Delete(tempModel); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            foreach (var (t, raw, entries) in moved)
            {
                t.ExternalData.Clear();
                t.ExternalData.Add(entries);
                t.DataLocation = entries.Length > 0 ? TensorProto.Types.DataLocation.External : TensorProto.Types.DataLocation.Default;
                t.RawData = raw;
            }
        }
    }

    /// <summary>Bytes of tensor data the model holds inline (long: may exceed what one protobuf message can).</summary>
    public static long InlineTensorBytes(ModelProto model) => Tensors(model.Graph).Sum(t => (long)t.RawData.Length);

    static PtqException Invalid(string id, string message, object target) => new(id, PtqErrorKind.InvalidData, message, target);

    static PtqException Escape(string tensor, string location, string source, string what) =>
        new("ExternalDataOutsideModelFolder", PtqErrorKind.SecurityError,
            $"Tensor '{tensor}' of '{source}' points its external data at '{location}', {what}; external data must stay inside the model's folder.", location);
}
