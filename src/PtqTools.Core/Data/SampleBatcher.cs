using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Data;

/// <summary>
/// Groups consecutive samples into batches for one ONNX Runtime run each. Samples are only put together when they
/// have the same shape (and, for whole-input samples, the same inputs with the same trailing dimensions): nothing
/// is padded, so a batch computes exactly what its samples would one by one. A sample of another shape closes the
/// batch in progress (text sentences of different lengths make smaller batches).
/// </summary>
public static class SampleBatcher
{
    public static IEnumerable<IReadOnlyList<Sample>> Group(IEnumerable<Sample> samples, int batchSize)
    {
        if (batchSize < 1)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"BatchSize must be at least 1, not {batchSize}.", batchSize);
        var batch = new List<Sample>(batchSize);
        foreach (var s in samples)
        {
            if (batch.Count > 0 && (batch.Count == batchSize || !Compatible(batch[0], s)))
            {
                yield return batch;
                batch = new List<Sample>(batchSize);
            }
            batch.Add(s);
        }
        if (batch.Count > 0) yield return batch;
    }

    /// <summary>Whether two samples can share a batch (same shape of every input, batch dimension 1).</summary>
    public static bool Compatible(Sample a, Sample b)
    {
        if (a.BatchCount != 1 || b.BatchCount != 1) return false;
        if (a.Inputs is null || b.Inputs is null)
            return a.Inputs is null && b.Inputs is null && a.Shape.AsSpan().SequenceEqual(b.Shape);
        if (a.Inputs.Count != b.Inputs.Count) return false;
        for (int k = 0; k < a.Inputs.Count; k++)
        {
            TensorProto x = a.Inputs[k], y = b.Inputs[k];
            if (x.Name != y.Name || x.DataType != y.DataType) return false;
            // Strings have no raw layout, and 4-bit types pack two values a byte (an odd count would not concatenate).
            if ((OnnxDataType)x.DataType is OnnxDataType.String or OnnxDataType.Int4 or OnnxDataType.UInt4 or OnnxDataType.Float4E2M1) return false;
            if (x.Dims.Count == 0 || x.Dims[0] != 1 || !x.Dims.SequenceEqual(y.Dims)) return false;
        }
        return true;
    }

    /// <summary>One sample holding the batch: float data laid one sample after the other, or each input tensor
    /// concatenated along its first dimension. A batch of one is the sample itself.</summary>
    public static Sample Combine(IReadOnlyList<Sample> batch)
    {
        if (batch.Count == 1) return batch[0];
        for (int i = 1; i < batch.Count; i++)
            if (!Compatible(batch[0], batch[i]))
                throw new PtqException("DataShapeMismatch", PtqErrorKind.InvalidData, $"Sample '{batch[i].Id}' cannot share a batch with '{batch[0].Id}' (another shape).", batch[i].Id);
        var first = batch[0];
        string id = $"{first.Id} .. {batch[^1].Id} ({batch.Count} samples)";
        if (first.Inputs is null)
        {
            int per = first.Data.Length;
            var data = new float[per * batch.Count];
            for (int i = 0; i < batch.Count; i++) batch[i].Data.CopyTo(data, i * per);
            return new Sample(first.Index, id, data, first.Shape, -1) { BatchCount = batch.Count };
        }
        var inputs = new TensorProto[first.Inputs.Count];
        for (int k = 0; k < inputs.Length; k++)
        {
            var t0 = first.Inputs[k];
            var t = new TensorProto { Name = t0.Name, DataType = t0.DataType };
            t.Dims.Add(batch.Count);
            t.Dims.AddRange(t0.Dims.Skip(1));
            using var bytes = new MemoryStream();
            foreach (var s in batch) bytes.Write(TensorProtoFile.RawBytes(s.Inputs![k]));
            t.RawData = ByteString.CopyFrom(bytes.GetBuffer(), 0, (int)bytes.Length);
            inputs[k] = t;
        }
        return new Sample(first.Index, id, Array.Empty<float>(), inputs[0].Dims.Select(d => (int)d).ToArray(), -1) { Inputs = inputs, BatchCount = batch.Count };
    }
}
