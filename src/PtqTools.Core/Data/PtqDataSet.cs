namespace PtqTools.Core.Data;

/// <summary>
/// A description of a data set: where the samples are and how to prepare them. Plain data (it survives
/// Export-Clixml, ConvertTo-Json and remoting); <see cref="DataSetReader"/> reads the samples when they are needed.
/// </summary>
public sealed class PtqDataSet
{
    /// <summary>ImageFolder, Idx, Npy, Array, Text (sentences + vocabulary) or TensorProto (each path one sample: a folder of input_K.pb files, or one .pb file).</summary>
    public string Kind { get; set; } = "";
    public string Name { get; set; } = "";
    public string[] Paths { get; set; } = Array.Empty<string>();
    public string? LabelPath { get; set; }
    /// <summary>Class names of an image folder with one sub-folder per class.</summary>
    public string[] Classes { get; set; } = Array.Empty<string>();
    public int Count { get; set; }
    /// <summary>Shape of one sample as the model receives it (without the batch dimension).</summary>
    public int[] SampleShape { get; set; } = Array.Empty<int>();
    public bool HasLabels { get; set; }
    /// <summary>Number of classes the labels name (0 without labels): an output of this many values per sample
    /// is read as class scores.</summary>
    public int ClassCount { get; set; }
    public int Skip { get; set; }
    public int Resize { get; set; }
    public int Channels { get; set; } = 3;
    public string Layout { get; set; } = "NCHW";
    public string ChannelOrder { get; set; } = "RGB";
    public float Scale { get; set; } = 1f / 255f;
    public float[] Mean { get; set; } = Array.Empty<float>();
    public float[] Std { get; set; } = Array.Empty<float>();
    /// <summary>An ONNX model applied to each prepared sample (the way a model's own preprocessing graph is shipped).</summary>
    public string? PreprocessModel { get; set; }
    /// <summary>The WordPiece vocabulary of a Text data set (one token a line).</summary>
    public string? VocabPath { get; set; }
    /// <summary>Tokens per sentence of a Text data set, [CLS] and [SEP] included; longer sentences are truncated.</summary>
    public int MaxSequenceLength { get; set; }
    /// <summary>Samples given from PowerShell (Kind Array), each flat in row-major order.</summary>
    public float[][]? Data { get; set; }
    public int[]? Labels { get; set; }

    /// <summary>A shallow copy (to read a part of the same samples).</summary>
    public PtqDataSet Clone() => (PtqDataSet)MemberwiseClone();
}

/// <summary>One prepared sample.</summary>
public sealed record Sample(int Index, string Id, float[] Data, int[] Shape, int Label)
{
    /// <summary>A sample of whole model inputs (TensorProto files): the K-th tensor feeds the model's K-th input,
    /// with its own element type (int64 token ids, floats, ...) and its full shape, batch included. Null for the
    /// single float input that <see cref="Data"/> holds.</summary>
    public IReadOnlyList<global::Onnx.TensorProto>? Inputs { get; init; }
}
