using System.Security.Cryptography;
using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>Loads, validates and saves ONNX models through the protobuf runtime.</summary>
public static class OnnxModelIO
{
    /// <summary>Protobuf cannot hold a message above 2 GB; such models need external data.</summary>
    public const long MaxModelBytes = int.MaxValue;

    /// <summary>(name, op type) of every node of a stored model, subgraphs included, without preparing it: for the
    /// cmdlets' completers, whose assembly references no ONNX type.</summary>
    public static IReadOnlyList<(string Name, string OpType)> NodeNames(string path) =>
        OpsetUpgrader.AllNodes(Load(path).Graph).Select(n => (n.Name, n.OpType)).ToList();

    /// <summary>Parses the model file as it is read (a FileStream through protobuf's CodedInputStream): the file's bytes
    /// are never held whole beside the parsed model (issue 16: the engine's peak memory).</summary>
    public static ModelProto Load(string path, bool validate = true)
    {
        CheckFile(path);
        return Parse(() =>
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16);
            return ModelProto.Parser.ParseFrom(stream);
        }, path, validate, out _);
    }

    public static byte[] ReadFile(string path)
    {
        CheckFile(path);
        return File.ReadAllBytes(path);
    }

    static void CheckFile(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            throw new PtqException("ModelNotFound", PtqErrorKind.ObjectNotFound, $"The model file '{path}' does not exist.", path);
        if (info.Length > MaxModelBytes)
            throw new PtqException("ModelTooLarge", PtqErrorKind.NotSupported,
                $"The model file '{path}' is {info.Length:N0} bytes; models above 2 GB must keep their weights in external data files.", path);
    }

    public static ModelProto Parse(byte[] bytes, string source, bool validate = true) => Parse(bytes, source, validate, out _);

    /// <param name="sideFiles">The external-data files the model reads (checked to lie inside its folder).</param>
    public static ModelProto Parse(byte[] bytes, string source, bool validate, out IReadOnlyList<string> sideFiles) =>
        Parse(() => ModelProto.Parser.ParseFrom(bytes), source, validate, out sideFiles);

    static ModelProto Parse(Func<ModelProto> parse, string source, bool validate, out IReadOnlyList<string> sideFiles)
    {
        sideFiles = Array.Empty<string>();
        ModelProto model;
        try
        {
            // The parser's default recursion limit (100) refuses nesting bombs before they exhaust the stack.
            model = parse();
        }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or InvalidOperationException or ArgumentException)
        {
            throw new PtqException("ModelNotOnnx", PtqErrorKind.InvalidData,
                $"'{source}' is not a readable ONNX model: {ex.Message}", source, ex);
        }
        if (model.Graph is null || model.IrVersion <= 0 || model.OpsetImport.Count == 0 && model.IrVersion >= 3)
            throw new PtqException("ModelNotOnnx", PtqErrorKind.InvalidData,
                $"'{source}' is not an ONNX model: it has no graph, IR version or opset import.", source);
        if (ExternalData.HasExternal(model))
        {
            // Side files are resolved next to the model file, and only inside its folder.
            if (!File.Exists(source))
                throw new PtqException("ExternalDataNotSupported", PtqErrorKind.NotSupported,
                    $"'{source}' keeps tensors in external data files, which can only be read next to a model file.", source);
            sideFiles = ExternalData.Load(model, Path.GetDirectoryName(Path.GetFullPath(source))!, source);
        }
        if (validate) ModelValidator.Validate(model, source);
        return model;
    }

    /// <summary>The SHA-256 of a model: of its file, or, when it keeps tensors in side files, of the file followed
    /// by each side file's location and contents (so a changed weight file changes the hash).</summary>
    public static string Sha256(string path) => Sha256(path, ReadFile(path));

    /// <summary>As <see cref="Sha256(string)"/>, for the bytes already read from <paramref name="path"/>.</summary>
    public static string Sha256(string path, byte[] bytes)
    {
        var sideFiles = SideFiles(path, bytes);
        if (sideFiles.Count == 0) return Sha256(bytes);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(bytes);
        var buffer = new byte[1 << 20];
        foreach (var (location, file) in sideFiles)
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes("\n" + location + "\n"));
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16);
            for (int n; (n = stream.Read(buffer)) > 0;) hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    public static string Sha256(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>The distinct external-data locations of a model file, with their checked full paths, in order of
    /// first use. Parses only when the bytes can hold a location at all.</summary>
    public static IReadOnlyList<(string Location, string File)> SideFiles(string path, byte[] bytes)
    {
        if (bytes.AsSpan().IndexOf("location"u8) < 0) return Array.Empty<(string, string)>();
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(bytes); }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or InvalidOperationException or ArgumentException) { return Array.Empty<(string, string)>(); }
        if (model.Graph is null) return Array.Empty<(string, string)>();
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var result = new List<(string, string)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in ExternalData.Tensors(model.Graph))
        {
            if (t.DataLocation != TensorProto.Types.DataLocation.External) continue;
            var location = t.ExternalData.LastOrDefault(e => e.Key == "location")?.Value;
            if (string.IsNullOrEmpty(location) || !seen.Add(location)) continue;
            var file = ExternalData.Resolve(folder, location, t.Name, path);
            if (File.Exists(file)) result.Add((location, file));
        }
        return result;
    }

    /// <summary>Bytes on disk of a model: its file and its side files.</summary>
    public static long SizeOnDisk(string path) => SizeOnDisk(path, File.ReadAllBytes(path));

    public static long SizeOnDisk(string path, byte[] bytes) =>
        new FileInfo(path).Length + SideFiles(path, bytes).Sum(f => new FileInfo(f.File).Length);

    /// <summary>Writes the model next to its destination first and renames it into place, so that a failure or
    /// a cancellation never leaves a partial file.</summary>
    /// <param name="externalData">Write tensors to a side file even when the model would fit in one message.</param>
    public static void Save(ModelProto model, string path, bool externalData = false, CancellationToken cancel = default)
    {
        // A protobuf message cannot exceed 2 GB: larger models, and models whose tensors are still in side files,
        // keep their tensors in a side file.
        if (externalData || ExternalData.HasDeferred(model) || ExternalData.InlineTensorBytes(model) > MaxModelBytes - (64 << 20))
            ExternalData.Save(model, path, cancel: cancel);
        else WriteAtomically(path, model.ToByteArray());
    }

    public static void WriteAtomically(string path, byte[] bytes)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder '{dir}' does not exist.", dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(temp, bytes);
            ReplaceWith(temp, full);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new PtqException("OutputNotWritable", PtqErrorKind.WriteError, $"Cannot write '{full}': {ex.Message}{OpenFileHint(full)}", full, ex);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>
    /// Renames a finished temporary file over its target (File.Move with overwrite: rename(2) on Linux and macOS,
    /// MoveFileEx with MOVEFILE_REPLACE_EXISTING on Windows). On Windows a target that another process has open
    /// without FILE_SHARE_DELETE (a virus scanner, an indexer, a reader of another program) makes the rename fail
    /// with a sharing violation for a moment: it is tried again for up to about 2 seconds before the error stands.
    /// The module's own readers open files with FileShare.Delete, so they never block it.
    /// </summary>
    internal static void ReplaceWith(string temp, string target)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                File.Move(temp, target, overwrite: true);
                return;
            }
            catch (IOException) when (OperatingSystem.IsWindows() && attempt < 10 && File.Exists(temp))
            {
                Thread.Sleep(40 * attempt);
            }
            catch (UnauthorizedAccessException) when (OperatingSystem.IsWindows() && attempt < 10 && File.Exists(temp) && !IsReadOnly(target))
            {
                // Windows reports a target pending deletion or mapped by another process as access denied.
                Thread.Sleep(40 * attempt);
            }
        }
    }

    /// <summary>What to add to a write error on Windows, where an existing file open in another program cannot be replaced.</summary>
    internal static string OpenFileHint(string target) =>
        OperatingSystem.IsWindows() && File.Exists(target) ? " (on Windows a file that another program has open cannot be replaced: close it there)" : "";

    static bool IsReadOnly(string path) => File.Exists(path) && new FileInfo(path).IsReadOnly;

    static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
