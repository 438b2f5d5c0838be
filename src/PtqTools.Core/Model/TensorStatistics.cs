namespace PtqTools.Core.Model;

/// <summary>Calibration statistics of one activation tensor: the calibration cache, as plain data.</summary>
public sealed class TensorStatistics
{
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    public string Tensor { get; set; } = "";
    /// <summary>The selected layers that need this tensor's range.</summary>
    public ValueList<string> Layers { get; set; } = new();
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
    /// <summary>Version of this object's layout in Export-ActivationRange files.</summary>
    public int SchemaVersion { get; set; } = 1;
    /// <summary>Whether the ranges were chosen symmetric around zero, and the percentile of the Percentile method.</summary>
    public bool Symmetric { get; set; }
    public double Percentile { get; set; } = 99.99;
    /// <summary>For the Auto method: the method whose range it took.</summary>
    public string SelectedMethod { get; set; } = "";
    /// <summary>The range every method gives, and its simulated quantization error (mean squared, on the histogram).</summary>
    public ValueList<MethodRange> Ranges { get; set; } = new();
    /// <summary>Sums over the samples (for merging shards): values, squares, and each sample's minimum and maximum.</summary>
    public double Sum { get; set; }
    public double SumSquares { get; set; }
    public double SampleMinSum { get; set; }
    public double SampleMaxSum { get; set; }
    /// <summary>Histogram: bin k covers [k, k+1) x 2^HistogramExponent; Histogram[i] counts bin HistogramStart + i.</summary>
    public int HistogramExponent { get; set; }
    public long HistogramStart { get; set; }
    public ValueList<long> Histogram { get; set; } = new();
    public double HistogramBinWidth => Math.ScaleB(1.0, HistogramExponent);
    /// <summary>The samples of the data set held out of this calibration, for the fidelity check of the model
    /// quantized from these statistics (not saved by Export-ActivationRange: give -DataSet there).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public Model.PtqDataSet? HeldOut { get; set; }
}

/// <summary>The range one calibration method gives a tensor.</summary>
public sealed class MethodRange
{
    public string Method { get; set; } = "";
    public float RangeMin { get; set; }
    public float RangeMax { get; set; }
    /// <summary>Mean squared error of quantizing the histogram's values to this range.</summary>
    public double Error { get; set; }

    public override string ToString() => $"{Method} [{RangeMin:G5}, {RangeMax:G5}]";
}
