using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Engine;

/// <summary>A tensor the integer engine computes with: element type, shape, and a typed array (float[], byte[],
/// sbyte[], int[] or long[] for the engine's own ops; bool[], double[], Half[], short[], ushort[], uint[] and ulong[]
/// as well for the values that ops run in ONNX Runtime (<see cref="OrtNodeFallback"/>) pass between them).</summary>
public sealed class EngineTensor
{
    public EngineTensor(OnnxDataType type, long[] dims, Array data)
    {
        long n = TensorData.ElementCount(dims);
        if (n != data.Length) throw new ArgumentException($"{data.Length} values do not fill the shape [{string.Join(",", dims)}].");
        var expected = ElementType(type) ?? throw new ArgumentException($"The engine does not compute with {type}.");
        // Exact type test: the CLR lets an sbyte[] pass as byte[], a uint[] as int[] (and so on) in type tests.
        if (data.GetType() != expected.MakeArrayType()) throw new ArgumentException($"A {type} tensor cannot hold {data.GetType().Name}.");
        Type = type; Dims = dims; _data = data; _arrayType = data.GetType(); Length = data.Length;
    }

    /// <summary>The .NET element type that holds an ONNX element type, or null when the engine cannot hold it.</summary>
    public static Type? ElementType(OnnxDataType type) => type switch
    {
        OnnxDataType.Float => typeof(float), OnnxDataType.UInt8 => typeof(byte), OnnxDataType.Int8 => typeof(sbyte),
        OnnxDataType.Int32 => typeof(int), OnnxDataType.Int64 => typeof(long), OnnxDataType.Bool => typeof(bool),
        OnnxDataType.Double => typeof(double), OnnxDataType.Float16 => typeof(Half), OnnxDataType.Int16 => typeof(short),
        OnnxDataType.UInt16 => typeof(ushort), OnnxDataType.UInt32 => typeof(uint), OnnxDataType.UInt64 => typeof(ulong),
        _ => null,
    };

    public OnnxDataType Type { get; }
    public long[] Dims { get; }
    /// <summary>The values. A weight the engine released after packing it (<see cref="Release"/>) is read again from
    /// its model file on first access (<see cref="IntegerEngine.Load"/>), so every reader sees the same values.</summary>
    public Array Data => Volatile.Read(ref _data) ?? Reloaded();
    public int Length { get; }

    Array? _data;
    readonly Type _arrayType;
    Func<Array>? _reload;
    static readonly object s_release = new(); // releases and read-backs are rare: one lock for all

    /// <summary>Whether the values are held now (false after <see cref="Release"/>, until something reads them).</summary>
    internal bool IsHeld => Volatile.Read(ref _data) is not null;

    /// <summary>The array when held, else null: for accounting that must not read a released weight back.</summary>
    internal Array? HeldData => Volatile.Read(ref _data);

    /// <summary>Drops the values (the engine's packed forms hold what its kernels read); <paramref name="reload"/>
    /// gives them back, of the same type and length, if something reads <see cref="Data"/> later.</summary>
    internal void Release(Func<Array> reload)
    {
        lock (s_release)
        {
            _reload = reload;
            Volatile.Write(ref _data, null);
        }
    }

    Array Reloaded()
    {
        lock (s_release)
        {
            if (_data is { } held) return held;
            var a = (_reload ?? throw new InvalidOperationException("A released tensor has no way back."))();
            if (a.GetType() != _arrayType || a.Length != Length)
                throw new PtqException("EngineModelChanged", PtqErrorKind.InvalidData,
                    $"A weight read back from the model file is a {a.GetType().Name} of {a.Length} values, not the {_arrayType.Name} of {Length} the engine packed: the file changed.", Length);
            Volatile.Write(ref _data, a);
            return a;
        }
    }

    bool Is(OnnxDataType t) => Type == t;
    public float[] Floats => Is(OnnxDataType.Float) ? (float[])Data : throw Wrong(OnnxDataType.Float);
    // The CLR lets an sbyte[] pass as byte[] (and back) in type tests, so the element type is checked exactly.
    public bool IsUInt8 => _arrayType == typeof(byte[]);
    public bool IsInt8 => _arrayType == typeof(sbyte[]);
    public byte[] Bytes => IsUInt8 ? (byte[])Data : throw Wrong(OnnxDataType.UInt8);
    public sbyte[] SBytes => IsInt8 ? (sbyte[])Data : throw Wrong(OnnxDataType.Int8);
    public int[] Ints => Is(OnnxDataType.Int32) ? (int[])Data : throw Wrong(OnnxDataType.Int32);
    public long[] Longs => Is(OnnxDataType.Int64) ? (long[])Data : throw Wrong(OnnxDataType.Int64);
    public bool[] Bools => Is(OnnxDataType.Bool) ? (bool[])Data : throw Wrong(OnnxDataType.Bool);
    public double[] Doubles => Is(OnnxDataType.Double) ? (double[])Data : throw Wrong(OnnxDataType.Double);

    /// <summary>The values' bytes in place (little-endian, as ONNX raw_data and ONNX Runtime lay them out).</summary>
    public Span<byte> RawBytes =>
        MemoryMarshal.CreateSpan(ref MemoryMarshal.GetArrayDataReference(Data), checked(Data.Length * OnnxDataTypes.ElementSize(Type)));

    PtqException Wrong(OnnxDataType wanted) => new("EngineTensorType", PtqErrorKind.InvalidData,
        $"A tensor of {OnnxDataTypes.Name((int)Type)} was used where {OnnxDataTypes.Name((int)wanted)} is needed.", Type);

    /// <summary>Element i as an int (integer types) — for zero points and small parameter tensors.</summary>
    public int IntAt(int i) => Type switch
    {
        OnnxDataType.UInt8 => Bytes[i], OnnxDataType.Int8 => SBytes[i], OnnxDataType.Int32 => Ints[i],
        OnnxDataType.Int64 => checked((int)Longs[i]), OnnxDataType.Int16 => ((short[])Data)[i], OnnxDataType.UInt16 => ((ushort[])Data)[i],
        OnnxDataType.UInt32 => checked((int)((uint[])Data)[i]), OnnxDataType.UInt64 => checked((int)((ulong[])Data)[i]),
        _ => throw Wrong(OnnxDataType.Int32),
    };

    public float FloatAt(int i) => Data is float[] f && Is(OnnxDataType.Float) ? f[i] : throw Wrong(OnnxDataType.Float);

    public static EngineTensor Float(float[] data, params long[] dims) => new(OnnxDataType.Float, dims, data);

    public EngineTensor Reshaped(long[] dims) => new(Type, dims, Data);

    /// <summary>A tensor of the given element type whose values are copied from little-endian bytes.</summary>
    public static EngineTensor FromBytes(OnnxDataType type, long[] dims, ReadOnlySpan<byte> bytes)
    {
        var element = ElementType(type) ?? throw new PtqException("EngineTensorType", PtqErrorKind.NotSupported,
            $"The engine does not compute with {OnnxDataTypes.Name((int)type)} tensors.", type);
        long n = TensorData.ElementCount(dims);
        if (n < 0 || n * OnnxDataTypes.ElementSize(type) != bytes.Length)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"{bytes.Length} bytes do not fill the shape [{string.Join(",", dims)}] of {OnnxDataTypes.Name((int)type)}.", type);
        // Every byte is written below: no need to zero the array first.
        Array data = type switch
        {
            OnnxDataType.Float => GC.AllocateUninitializedArray<float>((int)n),
            OnnxDataType.Int64 => GC.AllocateUninitializedArray<long>((int)n),
            OnnxDataType.Int32 => GC.AllocateUninitializedArray<int>((int)n),
            OnnxDataType.UInt8 => GC.AllocateUninitializedArray<byte>((int)n),
            OnnxDataType.Int8 => GC.AllocateUninitializedArray<sbyte>((int)n),
            _ => Array.CreateInstance(element, n),
        };
        var t = new EngineTensor(type, dims, data);
        bytes.CopyTo(t.RawBytes);
        return t;
    }

    /// <summary>Reads a TensorProto (raw_data or the typed fields) of any element type <see cref="ElementType"/> knows.</summary>
    public static EngineTensor FromProto(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new PtqException("ExternalDataNotSupported", PtqErrorKind.NotSupported, $"Tensor '{t.Name}' keeps its data in an external file.", t.Name);
        var type = (OnnxDataType)t.DataType;
        long n = TensorData.ElementCount(t.Dims);
        var dims = t.Dims.ToArray();
        var raw = t.RawData.Span;
        bool hasRaw = !t.RawData.IsEmpty || n == 0;
        if (ElementType(type) is null)
            throw new PtqException("EngineTensorType", PtqErrorKind.NotSupported,
                $"Tensor '{t.Name}' is of type {OnnxDataTypes.Name(t.DataType)}, which the integer engine does not compute with.", t.Name);
        Array data;
        if (hasRaw)
        {
            int size = OnnxDataTypes.ElementSize(type);
            if (n < 0 || raw.Length != n * size)
                throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                    $"Tensor '{t.Name}' has {raw.Length / Math.Max(size, 1)} values but its shape [{string.Join(",", dims)}] needs {n}.", t.Name);
            return FromBytes(type, dims, raw);
        }
        data = type switch
        {
            OnnxDataType.Float => t.FloatData.ToArray(),
            OnnxDataType.UInt8 => t.Int32Data.Select(v => (byte)v).ToArray(),
            OnnxDataType.Int8 => t.Int32Data.Select(v => (sbyte)v).ToArray(),
            OnnxDataType.Int32 => t.Int32Data.ToArray(),
            OnnxDataType.Int64 => t.Int64Data.ToArray(),
            OnnxDataType.Bool => t.Int32Data.Select(v => v != 0).ToArray(),
            OnnxDataType.Int16 => t.Int32Data.Select(v => (short)v).ToArray(),
            OnnxDataType.UInt16 => t.Int32Data.Select(v => (ushort)v).ToArray(),
            OnnxDataType.Float16 => t.Int32Data.Select(v => BitConverter.UInt16BitsToHalf((ushort)v)).ToArray(),
            OnnxDataType.Double => t.DoubleData.ToArray(),
            OnnxDataType.UInt32 => t.Uint64Data.Select(v => (uint)v).ToArray(),
            _ => t.Uint64Data.ToArray(),
        };
        if (data.Length != n)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"Tensor '{t.Name}' has {data.Length} values but its shape [{string.Join(",", dims)}] needs {n}.", t.Name);
        return new EngineTensor(type, dims, data);
    }

    /// <summary>The tensor as a TensorProto (raw_data), for every element type.</summary>
    public TensorProto ToProto(string name)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("ONNX raw_data is little-endian.");
        var t = new TensorProto { Name = name, DataType = (int)Type, RawData = ByteString.CopyFrom(RawBytes) };
        t.Dims.AddRange(Dims);
        return t;
    }

    /// <summary>Values as float (other types converted, bool as 0/1), for comparisons and reports.</summary>
    public float[] ToFloats() => Type switch
    {
        OnnxDataType.Float => Floats,
        OnnxDataType.UInt8 => Bytes.Select(v => (float)v).ToArray(),
        OnnxDataType.Int8 => SBytes.Select(v => (float)v).ToArray(),
        OnnxDataType.Int32 => Ints.Select(v => (float)v).ToArray(),
        OnnxDataType.Int64 => Longs.Select(v => (float)v).ToArray(),
        OnnxDataType.Bool => Bools.Select(v => v ? 1f : 0f).ToArray(),
        OnnxDataType.Double => Doubles.Select(v => (float)v).ToArray(),
        OnnxDataType.Float16 => ((Half[])Data).Select(v => (float)v).ToArray(),
        OnnxDataType.Int16 => ((short[])Data).Select(v => (float)v).ToArray(),
        OnnxDataType.UInt16 => ((ushort[])Data).Select(v => (float)v).ToArray(),
        OnnxDataType.UInt32 => ((uint[])Data).Select(v => (float)v).ToArray(),
        OnnxDataType.UInt64 => ((ulong[])Data).Select(v => (float)v).ToArray(),
        _ => throw new NotSupportedException(Type.ToString()),
    };
}
