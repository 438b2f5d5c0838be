namespace PtqTools.Core.Model;

/// <summary>Calibration statistics of one activation tensor: the calibration cache, as plain data.</summary>
public sealed class TensorStatistics
{
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    public string Tensor { get; set; } = "";
    /// <summary>The selected layers that need this tensor's range.</summary>
    public string[] Layers { get; set; } = Array.Empty<string>();
    public string Method { get; set; } = "MinMax";
    public float Min { get; set; }
    public float Max { get; set; }
    public double Mean { get; set; }
    public double Std { get; set; }
    public int SampleCount { get; set; }
    public long ElementCount { get; set; }
    /// <summary>The range the chosen method gives; quantization uses it.</summary>
    public float RangeMin { get; set; }
    public float RangeMax { get; set; }
}
