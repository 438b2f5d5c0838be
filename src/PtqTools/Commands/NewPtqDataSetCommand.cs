using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Data;

namespace PtqTools.Commands;

[Cmdlet(VerbsCommon.New, "PtqDataSet", DefaultParameterSetName = "Path")]
[OutputType(typeof(PtqDataSet))]
public sealed class NewPtqDataSetCommand : PtqCmdlet
{
    /// <summary>A folder of images, an IDX images file, or .npy files.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath")]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>Samples from PowerShell: each one array of numbers in row-major order.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Array", ValueFromPipeline = true)]
    [AllowEmptyCollection]
    public float[][] InputObject { get; set; } = Array.Empty<float[]>();

    /// <summary>Shape of one sample given with -InputObject (without the batch dimension).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Array")]
    [ValidateCount(1, 8)]
    public int[] Shape { get; set; } = Array.Empty<int>();

    /// <summary>Labels of the samples given with -InputObject.</summary>
    [Parameter(ParameterSetName = "Array")]
    public int[]? Label { get; set; }

    /// <summary>The IDX labels file (found next to the images file when named the usual way).</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    public string? LabelPath { get; set; }

    [Parameter]
    [ValidateRange(1, 8192)]
    public int Resize { get; set; }

    [Parameter]
    [ValidateSet("1", "3")]
    public int Channels { get; set; } = 3;

    [Parameter]
    [ValidateSet("NCHW", "NHWC")]
    public string Layout { get; set; } = "NCHW";

    [Parameter]
    [ValidateSet("RGB", "BGR")]
    public string ChannelOrder { get; set; } = "RGB";

    /// <summary>Multiplies pixel values (0..255) before Mean and Std apply.</summary>
    [Parameter]
    public float Scale { get; set; } = 1f / 255f;

    [Parameter]
    public float[] Mean { get; set; } = Array.Empty<float>();

    [Parameter]
    public float[] Std { get; set; } = Array.Empty<float>();

    /// <summary>An ONNX model applied to each prepared sample.</summary>
    [Parameter]
    public string? PreprocessModel { get; set; }

    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Skip { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int MaxSamples { get; set; }

    readonly List<float[]> _arrays = new();

    protected override void ProcessRecord()
    {
        if (ParameterSetName == "Array") _arrays.AddRange(InputObject);
    }

    protected override void EndProcessing()
    {
        var options = new PtqDataSet
        {
            Resize = Resize, Channels = Channels, Layout = Layout, ChannelOrder = ChannelOrder, Scale = Scale, Mean = Mean, Std = Std,
            Skip = Skip, Count = MaxSamples,
            PreprocessModel = PreprocessModel is null ? null : ResolveOutput(PreprocessModel),
        };
        if (ParameterSetName == "Array")
        {
            if (_arrays.Count == 0)
                Fail(new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, "No samples were given.", null));
            Try(() => WriteObject(DataSetReader.FromArrays(_arrays.ToArray(), Shape, Label, options)));
            return;
        }
        bool literal = ParameterSetName == "LiteralPath";
        var paths = ResolveExisting(literal ? LiteralPath : Path, literal);
        if (paths.Count == 0) return;
        Try(() =>
        {
            PtqDataSet ds;
            if (paths.Count == 1 && Directory.Exists(paths[0]))
                ds = DataSetReader.FromImageFolder(paths[0], options);
            else if (paths.All(p => p.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)))
                ds = DataSetReader.FromNpy(paths, options);
            else if (paths.Count == 1 && IsIdx(paths[0]))
                ds = DataSetReader.FromIdx(paths[0], LabelPath is null ? null : ResolveOutput(LabelPath), options);
            else
                throw new PtqException("DataSetKindUnknown", PtqErrorKind.InvalidArgument,
                    $"'{paths[0]}' is neither a folder of images, .npy files, nor an IDX images file.", paths[0]);
            WriteVerbose($"{ds.Kind} data set '{ds.Name}': {ds.Count} samples of shape [{string.Join(",", ds.SampleShape)}].");
            WriteObject(ds);
        }, paths[0]);
    }

    static bool IsIdx(string path)
    {
        var name = System.IO.Path.GetFileName(path).ToLowerInvariant();
        return name.Contains("idx") || name.EndsWith("-ubyte") || name.EndsWith("-ubyte.gz");
    }
}
