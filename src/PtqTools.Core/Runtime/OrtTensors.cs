using System.Security.Cryptography;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Runtime;

/// <summary>Converts between ONNX TensorProtos and ONNX Runtime values of any element type.</summary>
public static class OrtTensors
{
    /// <summary>An ONNX Runtime tensor holding the TensorProto's values (every element type, strings included).</summary>
    public static OrtValue FromTensorProto(TensorProto t)
    {
        TensorProtoFile.Check(t, t.Name.Length > 0 ? t.Name : "tensor");
        var shape = t.Dims.ToArray();
        if (t.DataType == (int)OnnxDataType.String)
        {
            var value = OrtValue.CreateTensorWithEmptyStrings(OrtAllocator.DefaultInstance, shape);
            for (int i = 0; i < t.StringData.Count; i++) value.StringTensorSetElementAt(t.StringData[i].ToStringUtf8().AsSpan(), i);
            return value;
        }
        var bytes = TensorProtoFile.RawBytes(t);
        var tensor = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (TensorElementType)t.DataType, shape);
        var target = tensor.GetTensorMutableRawData();
        if (target.Length != bytes.Length)
        {
            tensor.Dispose();
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData,
                $"Tensor '{t.Name}' has {bytes.Length} bytes of data; ONNX Runtime expects {target.Length} for shape [{string.Join(",", shape)}] of {OnnxDataTypes.Name(t.DataType)}.", t.Name);
        }
        bytes.CopyTo(target);
        return tensor;
    }

    /// <summary>An ONNX Runtime value (tensor, or sequence of values) for a value read from a .pb file.</summary>
    public static OrtValue FromValue(OnnxValue value)
    {
        if (value.Tensor is not null) return FromTensorProto(value.Tensor);
        var items = new List<OrtValue>();
        try
        {
            foreach (var item in value.Sequence!) items.Add(FromValue(item));
            return OrtValue.CreateSequence(items);
        }
        finally
        {
            // The sequence holds its own references to the items.
            foreach (var item in items) item.Dispose();
        }
    }

    /// <summary>A SHA-256 over an output's kind, element type, shape and exact bytes (sequences and optionals
    /// recursively): two values with the same fingerprint are bit-identical.</summary>
    public static string Fingerprint(OrtValue value)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Append(hash, value);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    static void Append(IncrementalHash hash, OrtValue value)
    {
        hash.AppendData(BitConverter.GetBytes((int)value.OnnxType));
        switch (value.OnnxType)
        {
            case OnnxValueType.ONNX_TYPE_TENSOR:
            {
                var info = value.GetTensorTypeAndShape();
                hash.AppendData(BitConverter.GetBytes((int)info.ElementDataType));
                foreach (var d in info.Shape) hash.AppendData(BitConverter.GetBytes(d));
                if (info.ElementDataType == TensorElementType.String)
                    foreach (var s in value.GetStringTensorAsArray())
                    {
                        var b = System.Text.Encoding.UTF8.GetBytes(s);
                        hash.AppendData(BitConverter.GetBytes(b.Length));
                        hash.AppendData(b);
                    }
                else
                    hash.AppendData(value.GetTensorMutableRawData());
                break;
            }
            case OnnxValueType.ONNX_TYPE_SEQUENCE:
            {
                int n = value.GetValueCount();
                hash.AppendData(BitConverter.GetBytes(n));
                for (int i = 0; i < n; i++)
                {
                    using var item = value.GetValue(i, OrtAllocator.DefaultInstance);
                    Append(hash, item);
                }
                break;
            }
            default:
                throw new PtqException("OutputTypeNotSupported", PtqErrorKind.NotSupported, $"Outputs of kind {value.OnnxType} cannot be compared.", value.OnnxType);
        }
    }
}
