using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Engine;

/// <summary>A tensor the integer engine computes with: element type, shape, and a typed array (float[], byte[],
/// sbyte[], int[] or long[]).</summary>
public sealed class EngineTensor
{
    public EngineTensor(OnnxDataType type, long[] dims, Array data)
    {
        long n = TensorData.ElementCount(dims);
        if (n != data.Length) throw new ArgumentException($"{data.Length} values do not fill the shape [{string.Join(",", dims)}].");
        var expected = type switch
        {
            OnnxDataType.Float => typeof(float[]), OnnxDataType.UInt8 => typeof(byte[]), OnnxDataType.Int8 => typeof(sbyte[]),
            OnnxDataType.Int32 => typeof(int[]), OnnxDataType.Int64 => typeof(long[]),
            _ => throw new ArgumentException($"The engine does not compute with {type}."),
        };
        if (data.GetType() != expected) throw new ArgumentException($"A {type} tensor cannot hold {data.GetType().Name}.");
        Type = type; Dims = dims; Data = data;
    }

    public OnnxDataType Type { get; }
    public long[] Dims { get; }
    public Array Data { get; }
    public int Length => Data.Length;

    public float[] Floats => Data as float[] ?? throw Wrong(OnnxDataType.Float);
    // The CLR lets an sbyte[] pass as byte[] (and back) in type tests, so the element type is checked exactly.
    public bool IsUInt8 => Data.GetType() == typeof(byte[]);
    public bool IsInt8 => Data.GetType() == typeof(sbyte[]);
    public byte[] Bytes => IsUInt8 ? (byte[])Data : throw Wrong(OnnxDataType.UInt8);
    public sbyte[] SBytes => IsInt8 ? (sbyte[])Data : throw Wrong(OnnxDataType.Int8);
    public int[] Ints => Data as int[] ?? throw Wrong(OnnxDataType.Int32);
    public long[] Longs => Data as long[] ?? throw Wrong(OnnxDataType.Int64);

    PtqException Wrong(OnnxDataType wanted) => new("EngineTensorType", PtqErrorKind.InvalidData,
        $"A tensor of {OnnxDataTypes.Name((int)Type)} was used where {OnnxDataTypes.Name((int)wanted)} is needed.", Type);

    /// <summary>Element i as an int (integer types) — for zero points and small parameter tensors.</summary>
    public int IntAt(int i) =>
        IsUInt8 ? Bytes[i] : IsInt8 ? SBytes[i] : Data switch
        {
            int[] v => v[i], long[] l => checked((int)l[i]),
            _ => throw Wrong(OnnxDataType.Int32),
        };

    public float FloatAt(int i) => Data is float[] f ? f[i] : throw Wrong(OnnxDataType.Float);

    public static EngineTensor Float(float[] data, params long[] dims) => new(OnnxDataType.Float, dims, data);

    public EngineTensor Reshaped(long[] dims) => new(Type, dims, Data);

    /// <summary>Reads a TensorProto (raw_data or the typed fields) of float, uint8, int8, int32 or int64.</summary>
    public static EngineTensor FromProto(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new PtqException("ExternalDataNotSupported", PtqErrorKind.NotSupported, $"Tensor '{t.Name}' keeps its data in an external file.", t.Name);
        var type = (OnnxDataType)t.DataType;
        long n = TensorData.ElementCount(t.Dims);
        var dims = t.Dims.ToArray();
        var raw = t.RawData.Span;
        bool hasRaw = !t.RawData.IsEmpty || n == 0;
        Array data = type switch
        {
            OnnxDataType.Float => hasRaw ? MemoryMarshal.Cast<byte, float>(raw).ToArray() : t.FloatData.ToArray(),
            OnnxDataType.UInt8 => hasRaw ? raw.ToArray() : t.Int32Data.Select(v => (byte)v).ToArray(),
            OnnxDataType.Int8 => hasRaw ? MemoryMarshal.Cast<byte, sbyte>(raw).ToArray() : t.Int32Data.Select(v => (sbyte)v).ToArray(),
            OnnxDataType.Int32 => hasRaw ? MemoryMarshal.Cast<byte, int>(raw).ToArray() : t.Int32Data.ToArray(),
            OnnxDataType.Int64 => hasRaw ? MemoryMarshal.Cast<byte, long>(raw).ToArray() : t.Int64Data.ToArray(),
            _ => throw new PtqException("EngineTensorType", PtqErrorKind.NotSupported,
                $"Tensor '{t.Name}' is of type {OnnxDataTypes.Name(t.DataType)}, which the integer engine does not compute with.", t.Name),
        };
        if (data.Length != n)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"Tensor '{t.Name}' has {data.Length} values but its shape [{string.Join(",", dims)}] needs {n}.", t.Name);
        return new EngineTensor(type, dims, data);
    }

    public TensorProto ToProto(string name) =>
        IsUInt8 ? TensorData.FromUInt8(name, Bytes, Dims) : IsInt8 ? TensorData.FromInt8(name, SBytes, Dims) : Data switch
    {
        float[] f => TensorData.FromFloats(name, f, Dims),
        int[] i => TensorData.FromInt32(name, i, Dims),
        _ => throw new NotSupportedException(Type.ToString()),
    };

    /// <summary>Values as float (integer types converted), for comparisons and reports.</summary>
    public float[] ToFloats() =>
        IsUInt8 ? Bytes.Select(v => (float)v).ToArray() : IsInt8 ? SBytes.Select(v => (float)v).ToArray() : Data switch
    {
        float[] f => f,
        int[] i => i.Select(v => (float)v).ToArray(), long[] l => l.Select(v => (float)v).ToArray(),
        _ => throw new NotSupportedException(Type.ToString()),
    };
}
