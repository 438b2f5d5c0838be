namespace PtqTools.Core.Data;

/// <summary>One prepared sample.</summary>
public sealed record Sample(int Index, string Id, float[] Data, int[] Shape, int Label)
{
    /// <summary>A sample of whole model inputs (TensorProto files): the K-th tensor feeds the model's K-th input,
    /// with its own element type (int64 token ids, floats, ...) and its full shape, batch included. Null for the
    /// single float input that <see cref="Data"/> holds.</summary>
    public IReadOnlyList<global::Onnx.TensorProto>? Inputs { get; init; }

    /// <summary>How many samples this one holds (<see cref="SampleBatcher.Combine"/>): <see cref="Data"/> then holds
    /// them one after the other, each of <see cref="Shape"/>, and each of <see cref="Inputs"/> has them along its first
    /// dimension.</summary>
    public int BatchCount { get; init; } = 1;
}
