using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Reads ONNX TensorProto files (the <c>test_data_set_K/input_K.pb</c> layout of the ONNX test data): one serialized
/// TensorProto per file, checked against its shape before anything uses it.
/// </summary>
public static class TensorProtoFile
{
    /// <summary>Files above this size are refused: a sample file is not a model, and a TensorProto cannot exceed 2 GB.</summary>
    public const long MaxBytes = int.MaxValue;

    public static TensorProto Read(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"The file '{path}' does not exist.", path);
        if (info.Length > MaxBytes)
            throw new PtqException("TensorFileTooLarge", PtqErrorKind.InvalidData, $"'{path}' is {info.Length:N0} bytes; a TensorProto file holds at most 2 GB.", path);
        TensorProto tensor;
        try
        {
            tensor = TensorProto.Parser.ParseFrom(DataFiles.ReadAllBytes(path));
        }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or InvalidOperationException or ArgumentException)
        {
            throw new PtqException("TensorFileNotReadable", PtqErrorKind.InvalidData, $"'{path}' is not a serialized ONNX TensorProto: {ex.Message}", path, ex);
        }
        Check(tensor, path);
        return tensor;
    }

    /// <summary>Refuses a tensor whose type is unknown or whose data size disagrees with its shape.</summary>
    public static void Check(TensorProto t, string source)
    {
        if (t.DataType <= 0 || !Enum.IsDefined(typeof(OnnxDataType), t.DataType))
            throw new PtqException("TensorFileNotReadable", PtqErrorKind.InvalidData, $"'{source}' holds a tensor of unknown element type {t.DataType}.", source);
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new PtqException("TensorFileNotReadable", PtqErrorKind.InvalidData, $"'{source}' refers to external data; a sample file must hold its values.", source);
        long expected;
        try
        {
            foreach (var d in t.Dims)
                if (d < 0) throw new PtqException("InvalidDimension", PtqErrorKind.InvalidData, $"The tensor in '{source}' has a negative dimension ({d}).", source);
            expected = TensorData.ElementCount(t.Dims);
        }
        catch (OverflowException)
        {
            throw new PtqException("InvalidDimension", PtqErrorKind.InvalidData, $"The tensor in '{source}' has dimensions whose product overflows.", source);
        }
        long stored = StoredCount(t);
        if (stored != expected)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"The tensor in '{source}' has shape [{string.Join(",", t.Dims)}] ({expected} elements of {OnnxDataTypes.Name(t.DataType)}) but holds {(stored < 0 ? "a partial element" : stored + " elements")}.", source);
    }

    /// <summary>Number of elements stored (raw_data or the typed field that the element type uses), -1 for a
    /// partial element.</summary>
    internal static long StoredCount(TensorProto t)
    {
        var type = (OnnxDataType)t.DataType;
        if (type == OnnxDataType.String) return t.StringData.Count;
        if (!t.RawData.IsEmpty)
        {
            if (type is OnnxDataType.Int4 or OnnxDataType.UInt4 or OnnxDataType.Float4E2M1)
                return t.RawData.Length * 2L; // packed nibbles; the last byte may hold one
            int size = OnnxDataTypes.ElementSize(type);
            return size == 0 || t.RawData.Length % size != 0 ? -1 : t.RawData.Length / size;
        }
        return type switch
        {
            OnnxDataType.Float => t.FloatData.Count,
            OnnxDataType.Double => t.DoubleData.Count,
            OnnxDataType.Int64 => t.Int64Data.Count,
            OnnxDataType.UInt32 or OnnxDataType.UInt64 => t.Uint64Data.Count,
            OnnxDataType.Complex64 => t.FloatData.Count / 2,
            OnnxDataType.Complex128 => t.DoubleData.Count / 2,
            OnnxDataType.Int4 or OnnxDataType.UInt4 or OnnxDataType.Float4E2M1 => t.Int32Data.Count * 2L,
            _ => t.Int32Data.Count,
        };
    }

    /// <summary>The tensor's values as little-endian bytes in ONNX Runtime's layout (not for strings).</summary>
    public static byte[] RawBytes(TensorProto t)
    {
        var type = (OnnxDataType)t.DataType;
        if (!t.RawData.IsEmpty) return t.RawData.ToByteArray();
        long n = TensorData.ElementCount(t.Dims);
        int size = OnnxDataTypes.ElementSize(type);
        if (type is OnnxDataType.Int4 or OnnxDataType.UInt4 or OnnxDataType.Float4E2M1)
        {
            var packed = new byte[(n + 1) / 2];
            for (int i = 0; i < packed.Length; i++) packed[i] = (byte)t.Int32Data[i];
            return packed;
        }
        if (size == 0) throw new PtqException("TensorTypeNotSupported", PtqErrorKind.NotSupported, $"Tensor '{t.Name}' of type {OnnxDataTypes.Name(t.DataType)} has no fixed element size.", t.Name);
        var bytes = new byte[n * size];
        var span = bytes.AsSpan();
        for (long i = 0; i < n; i++)
        {
            var at = span[(int)(i * size)..];
            switch (type)
            {
                case OnnxDataType.Float: BitConverter.TryWriteBytes(at, t.FloatData[(int)i]); break;
                case OnnxDataType.Double: BitConverter.TryWriteBytes(at, t.DoubleData[(int)i]); break;
                case OnnxDataType.Int64: BitConverter.TryWriteBytes(at, t.Int64Data[(int)i]); break;
                case OnnxDataType.UInt64: BitConverter.TryWriteBytes(at, t.Uint64Data[(int)i]); break;
                case OnnxDataType.UInt32: BitConverter.TryWriteBytes(at, (uint)t.Uint64Data[(int)i]); break;
                case OnnxDataType.Complex64: BitConverter.TryWriteBytes(at, t.FloatData[(int)(2 * i)]); BitConverter.TryWriteBytes(at[4..], t.FloatData[(int)(2 * i + 1)]); break;
                case OnnxDataType.Complex128: BitConverter.TryWriteBytes(at, t.DoubleData[(int)(2 * i)]); BitConverter.TryWriteBytes(at[8..], t.DoubleData[(int)(2 * i + 1)]); break;
                default:
                    // int32_data holds the bit patterns of every narrower type (bool, int8/16, uint8/16, float16,
                    // bfloat16, float8): the low bytes little-endian.
                    int v = t.Int32Data[(int)i];
                    for (int b = 0; b < size; b++) at[b] = (byte)(v >> (8 * b));
                    break;
            }
        }
        return bytes;
    }

    /// <summary>Reads a SequenceProto or OptionalProto (onnx.proto; the generated classes here predate them) through
    /// the protobuf runtime's coded stream: a tensor, a sequence of values, or null for an empty optional.</summary>
    public static OnnxValue? ReadContainer(byte[] bytes, string source, bool optional)
    {
        try
        {
            var input = new CodedInputStream(bytes);
            var items = new List<OnnxValue?>();
            OnnxValue? single = null;
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int field = WireFormat.GetTagFieldNumber(tag);
                if (field == 3 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                {
                    var t = TensorProto.Parser.ParseFrom(input.ReadBytes());
                    Check(t, source);
                    var v = new OnnxValue(t, null);
                    if (optional) single = v; else items.Add(v);
                }
                else if (field == 5 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                {
                    var v = ReadContainer(input.ReadBytes().ToByteArray(), source, optional: false);
                    if (optional) single = v; else items.Add(v);
                }
                else if (field is 4 or 6 or 7)
                    throw new PtqException("TensorTypeNotSupported", PtqErrorKind.NotSupported, $"'{source}' holds sparse tensors, maps or nested optionals, which are not read here.", source);
                else input.SkipLastField();
            }
            return optional ? single : new OnnxValue(null, items.Select(i => i!).ToList());
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new PtqException("TensorFileNotReadable", PtqErrorKind.InvalidData, $"'{source}' is not a serialized ONNX {(optional ? "OptionalProto" : "SequenceProto")}: {ex.Message}", source, ex);
        }
    }
}

/// <summary>A tensor, or a sequence of values.</summary>
public sealed record OnnxValue(TensorProto? Tensor, IReadOnlyList<OnnxValue>? Sequence);
