namespace PtqTools.Core.Model;

/// <summary>
/// A description of a data set: where the samples are and how to prepare them. Plain data (it survives
/// Export-Clixml, ConvertTo-Json and remoting); <see cref="Data.DataSetReader"/> reads the samples when they are needed.
/// </summary>
public sealed class PtqDataSet
{
    /// <summary>ImageFolder, Idx, Npy, Array, Text (sentences + vocabulary), TensorProto (each path one sample: a folder
    /// of input_K.pb files, or one .pb file) or Script (samples yielded by a PowerShell script block).</summary>
    public string Kind { get; set; } = "";
    public string Name { get; set; } = "";
    public ValueList<string> Paths { get; set; } = new();
    public string? LabelPath { get; set; }
    /// <summary>Class names of an image folder with one sub-folder per class.</summary>
    public ValueList<string> Classes { get; set; } = new();
    public int Count { get; set; }
    /// <summary>Shape of one sample as the model receives it (without the batch dimension).</summary>
    public ValueList<int> SampleShape { get; set; } = new();
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
    public ValueList<float> Mean { get; set; } = new();
    public ValueList<float> Std { get; set; } = new();
    /// <summary>An ONNX model applied to each prepared sample (the way a model's own preprocessing graph is shipped).</summary>
    public string? PreprocessModel { get; set; }
    /// <summary>The WordPiece vocabulary of a Text data set (one token a line).</summary>
    public string? VocabPath { get; set; }
    /// <summary>Tokens per sentence of a Text data set, [CLS] and [SEP] included; longer sentences are truncated.</summary>
    public int MaxSequenceLength { get; set; }
    /// <summary>Samples given from PowerShell (Kind Array), each flat in row-major order.</summary>
    public ValueList<float[]>? Data { get; set; }
    public ValueList<int>? Labels { get; set; }
    /// <summary>Samples in the source before Skip and Count apply (0 for a script, which is not counted up front).</summary>
    public int SourceCount { get; set; }
    /// <summary>Read the samples in a random order fixed by <see cref="Seed"/>: a permutation of the samples after
    /// Skip, of which the first Count are used (so -MaxSamples takes a random subset).</summary>
    public bool Shuffle { get; set; }
    public int Seed { get; set; }
    /// <summary>Samples fed to the model in one run where its batch dimension is dynamic (1: one at a time).</summary>
    public int BatchSize { get; set; } = 1;
    /// <summary>The text of the script block that yields the samples of a Script data set (evaluated while a
    /// calibration runs, on the pipeline thread; never collected up front).</summary>
    public string? ScriptText { get; set; }

    /// <summary>Every this-many-th sample of the source (by its index in the source: 10 holds out samples 9, 19, 29,
    /// ...) is held out of calibration for the fidelity check (<see cref="Pipeline.FidelityGuard"/>); 0 holds out
    /// none. By source index, so shards of one data set (Skip/MaxSamples) hold out exactly what one run does.</summary>
    public int HoldOutEvery { get; set; }
    /// <summary>With <see cref="HoldOutEvery"/>: read only the held-out samples (true) or only the others (false).</summary>
    public bool HeldOut { get; set; }

    /// <summary>A shallow copy (to read a part of the same samples).</summary>
    public PtqDataSet Clone() => (PtqDataSet)MemberwiseClone();
}
