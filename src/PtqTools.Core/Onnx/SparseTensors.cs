using System.Buffers.Binary;
using Google.Protobuf;
using Onnx;
using PtqTools.Core.Data;

namespace PtqTools.Core.Onnx;

/// <summary>
/// Turns sparse constants (Constant nodes with <c>sparse_value</c>, and sparse initializers) into dense initializers
/// in every graph, so that weights stored that way are found, listed and quantized like any other.
/// </summary>
public static class SparseTensors
{
    public static void Densify(GraphProto graph)
    {
        foreach (var sparse in graph.SparseInitializer) graph.Initializer.Add(ToDense(sparse, sparse.Values?.Name ?? ""));
        graph.SparseInitializer.Clear();
        foreach (var node in graph.Node)
        {
            foreach (var attr in node.Attribute)
            {
                if (attr.G is not null) Densify(attr.G);
                foreach (var g in attr.Graphs) Densify(g);
            }
            if (node.OpType != "Constant" || node.Domain is not ("" or "ai.onnx")) continue;
            var sparseAttr = node.Attr("sparse_value");
            if (sparseAttr?.SparseTensor is null) continue;
            var dense = ToDense(sparseAttr.SparseTensor, "");
            node.Attribute.Remove(sparseAttr);
            node.Attribute.Add(GraphEditor.Tensor("value", dense));
        }
    }

    /// <summary>The dense tensor of a COO sparse tensor (indices [NNZ] flat, or [NNZ, rank] coordinates).</summary>
    public static TensorProto ToDense(SparseTensorProto sparse, string name)
    {
        var values = sparse.Values ?? throw Invalid(name, "has no values");
        var dims = sparse.Dims.ToArray();
        long n;
        try { n = TensorData.ElementCount(dims); }
        catch (OverflowException) { throw Invalid(name, "has dimensions whose product overflows"); }
        if (n < 0) throw Invalid(name, "has a negative dimension");
        int size = OnnxDataTypes.ElementSize((OnnxDataType)values.DataType);
        if (size == 0) throw Invalid(name, $"holds {OnnxDataTypes.Name(values.DataType)} values, which cannot be densified here");
        if (n * size > int.MaxValue) throw Invalid(name, "is too large to densify (2 GB)");
        TensorProtoFile.Check(values, $"sparse tensor '{name}' values");
        var valueBytes = TensorProtoFile.RawBytes(values);
        long nnz = valueBytes.Length / size;
        var indices = ReadIndices(sparse.Indices, name);
        var dense = new byte[n * size];
        bool coordinates = sparse.Indices is { Dims.Count: 2 };
        if (indices.Length != (coordinates ? nnz * dims.Length : nnz))
            throw Invalid(name, $"has {nnz} values but {indices.Length} index entries");
        for (long k = 0; k < nnz; k++)
        {
            long flat = 0;
            if (coordinates)
                for (int d = 0; d < dims.Length; d++)
                {
                    long c = indices[k * dims.Length + d];
                    if (c < 0 || c >= dims[d]) throw Invalid(name, $"has index {c} outside dimension {d} of size {dims[d]}");
                    flat = flat * dims[d] + c;
                }
            else flat = indices[k];
            if (flat < 0 || flat >= n) throw Invalid(name, $"has index {flat} outside its {n} elements");
            Array.Copy(valueBytes, k * size, dense, flat * size, size);
        }
        var t = new TensorProto { Name = name, DataType = values.DataType, RawData = UnsafeByteOperations.UnsafeWrap(dense) };
        t.Dims.AddRange(dims);
        return t;
    }

    static long[] ReadIndices(TensorProto? t, string name)
    {
        if (t is null) throw Invalid(name, "has no indices");
        if (t.DataType != (int)OnnxDataType.Int64) throw Invalid(name, "has indices that are not int64");
        if (t.RawData.IsEmpty) return t.Int64Data.ToArray();
        if (t.RawData.Length % 8 != 0) throw Invalid(name, "has a partial index");
        var raw = t.RawData.Span;
        var result = new long[raw.Length / 8];
        for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadInt64LittleEndian(raw[(i * 8)..]);
        return result;
    }

    static PtqException Invalid(string name, string what) =>
        new("SparseTensorInvalid", PtqErrorKind.InvalidData, $"The sparse tensor '{name}' {what}.", name);
}
