using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>Reads and builds TensorProto payloads (raw_data or the typed repeated fields).</summary>
public static class TensorData
{
    public static long ElementCount(IEnumerable<long> dims)
    {
        long n = 1;
        foreach (var d in dims)
        {
            if (d < 0) return -1;
            n = checked(n * d);
        }
        return n;
    }

    /// <summary>The tensor's values as float32. Float, double and the integer types are converted.</summary>
    public static float[] ReadFloats(TensorProto t)
    {
        if (ExternalData.IsDeferred(t))
        {
            // A tensor left in its side file (a model above 2 GB) is read here, straight into the result for float32.
            long bytes = ExternalData.DeferredLength(t);
            if (t.DataType == (int)OnnxDataType.Float && bytes == ElementCount(t.Dims) * 4)
            {
                var floats = new float[bytes / 4];
                ExternalData.ReadBytes(t, MemoryMarshal.AsBytes(floats.AsSpan()));
                return floats;
            }
            var raw = new byte[bytes];
            ExternalData.ReadBytes(t, raw);
            var inline = t.Clone();
            inline.ExternalData.Clear();
            inline.DataLocation = TensorProto.Types.DataLocation.Default;
            inline.RawData = UnsafeByteOperations.UnsafeWrap(raw);
            return ReadFloats(inline);
        }
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new PtqException("ExternalDataNotSupported", PtqErrorKind.NotSupported,
                $"Tensor '{t.Name}' keeps its data in an external file, which this version does not read.", t.Name);
        long n = ElementCount(t.Dims);
        var type = (OnnxDataType)t.DataType;
        if (!t.RawData.IsEmpty)
        {
            var raw = t.RawData.Span;
            int size = OnnxDataTypes.ElementSize(type);
            if (size == 0 || raw.Length != n * size)
                throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                    $"Tensor '{t.Name}' has {raw.Length} bytes of data but its shape [{string.Join(",", t.Dims)}] of {OnnxDataTypes.Name(t.DataType)} needs {n * size}.", t.Name);
            var result = new float[n];
            switch (type)
            {
                case OnnxDataType.Float: MemoryMarshal.Cast<byte, float>(raw).CopyTo(result); break;
                case OnnxDataType.Double: for (int i = 0; i < n; i++) result[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(i * 8)..]); break;
                case OnnxDataType.Int8: for (int i = 0; i < n; i++) result[i] = (sbyte)raw[i]; break;
                case OnnxDataType.UInt8: for (int i = 0; i < n; i++) result[i] = raw[i]; break;
                case OnnxDataType.Int32: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadInt32LittleEndian(raw[(i * 4)..]); break;
                case OnnxDataType.Int64: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadInt64LittleEndian(raw[(i * 8)..]); break;
                default: throw NotNumeric(t);
            }
            return result;
        }
        float[] values = type switch
        {
            OnnxDataType.Float => t.FloatData.ToArray(),
            OnnxDataType.Double => t.DoubleData.Select(d => (float)d).ToArray(),
            OnnxDataType.Int8 or OnnxDataType.UInt8 or OnnxDataType.Int32 or OnnxDataType.Int16 or OnnxDataType.UInt16
                => t.Int32Data.Select(v => (float)v).ToArray(),
            OnnxDataType.Int64 => t.Int64Data.Select(v => (float)v).ToArray(),
            _ => throw NotNumeric(t),
        };
        if (values.Length != n)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"Tensor '{t.Name}' has {values.Length} values but its shape [{string.Join(",", t.Dims)}] needs {n}.", t.Name);
        return values;
    }

    /// <summary>Number of elements the stored data holds, or -1 when it cannot be told without reading a file.</summary>
    public static long StoredElementCount(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External) return -1;
        if (!t.RawData.IsEmpty)
        {
            int size = OnnxDataTypes.ElementSize((OnnxDataType)t.DataType);
            return size == 0 ? -1 : (t.RawData.Length % size == 0 ? t.RawData.Length / size : -2);
        }
        return t.FloatData.Count + t.DoubleData.Count + t.Int32Data.Count + t.Int64Data.Count + t.StringData.Count + t.Uint64Data.Count;
    }

    static PtqException NotNumeric(TensorProto t) => new("TensorTypeNotSupported", PtqErrorKind.NotSupported,
        $"Tensor '{t.Name}' is of type {OnnxDataTypes.Name(t.DataType)}, which cannot be read as numbers here.", t.Name);

    public static TensorProto FromFloats(string name, ReadOnlySpan<float> values, params long[] dims)
        => Raw(name, OnnxDataType.Float, MemoryMarshal.AsBytes(values), dims);

    public static TensorProto FromInt8(string name, ReadOnlySpan<sbyte> values, params long[] dims)
        => Raw(name, OnnxDataType.Int8, MemoryMarshal.AsBytes(values), dims);

    public static TensorProto FromUInt8(string name, ReadOnlySpan<byte> values, params long[] dims)
        => Raw(name, OnnxDataType.UInt8, values, dims);

    public static TensorProto FromInt32(string name, ReadOnlySpan<int> values, params long[] dims)
        => Raw(name, OnnxDataType.Int32, MemoryMarshal.AsBytes(values), dims);

    static TensorProto Raw(string name, OnnxDataType type, ReadOnlySpan<byte> bytes, long[] dims)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("ONNX raw_data is little-endian.");
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(bytes) };
        t.Dims.AddRange(dims);
        return t;
    }
}
