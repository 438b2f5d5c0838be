using System.Security.Cryptography;
using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>Loads, validates and saves ONNX models through the protobuf runtime.</summary>
public static class OnnxModelIO
{
    /// <summary>Protobuf cannot hold a message above 2 GB; such models need external data.</summary>
    public const long MaxModelBytes = int.MaxValue;

    public static ModelProto Load(string path, bool validate = true) => Parse(ReadFile(path), path, validate);

    public static byte[] ReadFile(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            throw new PtqException("ModelNotFound", PtqErrorKind.ObjectNotFound, $"The model file '{path}' does not exist.", path);
        if (info.Length > MaxModelBytes)
            throw new PtqException("ModelTooLarge", PtqErrorKind.NotSupported,
                $"The model file '{path}' is {info.Length:N0} bytes; models above 2 GB must keep their weights in external data files.", path);
        return File.ReadAllBytes(path);
    }

    public static ModelProto Parse(byte[] bytes, string source, bool validate = true)
    {
        ModelProto model;
        try
        {
            // The parser's default recursion limit (100) refuses nesting bombs before they exhaust the stack.
            model = ModelProto.Parser.ParseFrom(bytes);
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
            ExternalData.Load(model, Path.GetDirectoryName(Path.GetFullPath(source))!, source);
        }
        if (validate) ModelValidator.Validate(model, source);
        return model;
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    public static string Sha256(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>Writes the model next to its destination first and renames it into place, so that a failure or
    /// a cancellation never leaves a partial file.</summary>
    public static void Save(ModelProto model, string path)
    {
        // A protobuf message cannot exceed 2 GB: larger models keep their tensors in a side file.
        if (ExternalData.InlineTensorBytes(model) > MaxModelBytes - (64 << 20)) ExternalData.Save(model, path);
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
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new PtqException("OutputNotWritable", PtqErrorKind.WriteError, $"Cannot write '{full}': {ex.Message}", full, ex);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
