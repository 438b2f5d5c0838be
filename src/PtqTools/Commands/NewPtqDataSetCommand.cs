using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core;
using PtqTools.Core.Data;

namespace PtqTools.Commands;

[Cmdlet(VerbsCommon.New, "PtqDataSet", DefaultParameterSetName = "LiteralPath", HelpUri = HelpLinks.Docs + "New-PtqDataSet.md")]
[OutputType(typeof(PtqDataSet))]
public sealed class NewPtqDataSetCommand : PtqCmdlet
{
    /// <summary>A folder of images, an IDX images file, or .npy files.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>Samples from PowerShell, each one array of numbers in row-major order: piped one sample per
    /// object, or given as an array of samples.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Array", ValueFromPipeline = true)]
    [AllowEmptyCollection]
    // System.Array rather than object[]: a FileInfo from Get-ChildItem must not bind here without coercion, so that
    // it binds to -LiteralPath through its FullName.
    public Array InputObject { get; set; } = Array.Empty<object>();

    /// <summary>A script block that yields the samples (each one array of numbers of -Shape's size). It is not run
    /// here: Measure-ActivationRange runs it on the pipeline thread while it calibrates, and takes each sample as the
    /// script writes it, so the samples are never all held at once.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Script")]
    [ValidateNotNull]
    public ScriptBlock ScriptBlock { get; set; } = null!;

    /// <summary>Shape of one sample given with -InputObject or yielded by -ScriptBlock (without the batch dimension).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Array")]
    [Parameter(Mandatory = true, ParameterSetName = "Script")]
    [ValidateCount(1, 8)]
    public int[] Shape { get; set; } = Array.Empty<int>();

    /// <summary>Labels of the samples given with -InputObject.</summary>
    [Parameter(ParameterSetName = "Array")]
    public int[]? Label { get; set; }

    /// <summary>The IDX labels file (found next to the images file when named the usual way).</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    [SupportsWildcards]
    public string? LabelPath { get; set; }

    /// <summary>A BERT WordPiece vocabulary: the paths are then text files, one sentence a line.</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    [SupportsWildcards]
    public string? VocabPath { get; set; }

    /// <summary>Tokens per sentence of a text data set, [CLS] and [SEP] included.</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    [ValidateRange(3, 8192)]
    public int MaxSequenceLength { get; set; } = 128;

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
    [SupportsWildcards]
    public string? PreprocessModel { get; set; }

    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Skip { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int MaxSamples { get; set; }

    /// <summary>Reads the samples in a random order (a permutation of the samples after -Skip, fixed by -Seed);
    /// with -MaxSamples, a random subset.</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    [Parameter(ParameterSetName = "Array")]
    public SwitchParameter Shuffle { get; set; }

    /// <summary>The seed of -Shuffle's order (the same seed gives the same order everywhere). Without it a seed is
    /// drawn and recorded in the data set's Seed property.</summary>
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    [Parameter(ParameterSetName = "Array")]
    public int Seed { get; set; }

    /// <summary>Samples fed to the model in one run by Measure-ActivationRange, where the model's batch dimension is
    /// dynamic. Samples are batched only with samples of the same shape (nothing is padded).</summary>
    [Parameter]
    [ValidateRange(1, 65536)]
    public int BatchSize { get; set; } = 1;

    readonly List<float[]> _arrays = new();
    readonly List<string> _paths = new();

    protected override void ProcessRecord()
    {
        switch (ParameterSetName)
        {
            case "Array":
                // A sample is a list of numbers; a list of such lists is several samples.
                var items = InputObject.Cast<object?>().Select(Unwrap).ToList();
                if (items.Count > 0 && items.All(i => i is System.Collections.IEnumerable and not string))
                    foreach (var item in items) _arrays.Add(ToSample(item));
                else
                    _arrays.Add(ToSample(items));
                break;
            case "LiteralPath":
                _paths.AddRange(ResolveExisting(LiteralPath, literal: true));
                break;
            default:
                _paths.AddRange(ResolveExisting(Path, literal: false));
                break;
        }
    }

    static object? Unwrap(object? o) => o is PSObject p ? p.BaseObject : o;

    float[] ToSample(object? value)
    {
        try
        {
            return LanguagePrimitives.ConvertTo<float[]>(value);
        }
        catch (PSInvalidCastException ex)
        {
            Fail(new PtqException("SampleNotNumeric", PtqErrorKind.InvalidArgument, $"A sample is not a list of numbers: {ex.Message}", value));
            throw;
        }
    }

    /// <summary>-LabelPath, -VocabPath and -PreprocessModel follow the data's parameter: with -Path a pattern that must
    /// match one file (so escaped brackets work there as in -Path), else taken as typed. A pattern that matches nothing
    /// is passed on as typed, for the reader's own error (VocabNotFound, ...).</summary>
    string? ResolveSecondary(string? path)
    {
        if (path is null) return null;
        try { return ParameterSetName == "Path" ? ResolveOneExisting(path, literal: false) : ResolveOutput(path); }
        catch (PtqException ex) when (ex.ErrorId == "PathNotFound") { return ResolveOutput(path); }
        catch (PtqException ex) { Fail(ex); return null; }
    }

    protected override void EndProcessing()
    {
        var labelPath = ResolveSecondary(LabelPath);
        var vocabPath = ResolveSecondary(VocabPath);
        var options = new PtqDataSet
        {
            Resize = Resize, Channels = Channels, Layout = Layout, ChannelOrder = ChannelOrder, Scale = Scale, Mean = Mean, Std = Std,
            Skip = Skip, Count = MaxSamples, Shuffle = Shuffle.IsPresent, BatchSize = BatchSize,
            Seed = MyInvocation.BoundParameters.ContainsKey(nameof(Seed)) ? Seed : Random.Shared.Next(),
            PreprocessModel = ResolveSecondary(PreprocessModel),
        };
        if (MyInvocation.BoundParameters.ContainsKey(nameof(Seed)) && !Shuffle)
            WriteWarning("-Seed has no effect without -Shuffle.");
        if (ParameterSetName == "Script")
        {
            WarnImageOptions();
            Try(() =>
            {
                var script = DataSetReader.FromScript(ScriptBlock.ToString(), Shape, options);
                ScriptDataSources.Attach(script, ScriptBlock);
                WriteObject(script);
            }, ScriptBlock);
            return;
        }
        if (ParameterSetName == "Array")
        {
            if (_arrays.Count == 0)
                Fail(new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, "No samples were given.", null));
            WarnImageOptions();
            Try(() => WriteObject(DataSetReader.FromArrays(_arrays.ToArray(), Shape, Label, options)));
            return;
        }
        var paths = _paths;
        if (paths.Count == 0) return;
        if (labelPath is not null && !File.Exists(labelPath))
            Fail(new PtqException("PathNotFound", PtqErrorKind.ObjectNotFound, $"The labels file '{LabelPath}' does not exist.", LabelPath));
        Try(() =>
        {
            PtqDataSet ds;
            if (vocabPath is not null)
                ds = TextDataSet.FromText(paths, vocabPath, new PtqDataSet { Skip = Skip, Count = MaxSamples, MaxSequenceLength = MaxSequenceLength, Shuffle = options.Shuffle, Seed = options.Seed, BatchSize = BatchSize });
            else if (paths.All(IsTensorProtoSample))
                ds = DataSetReader.FromTensorProto(paths, options);
            else if (paths.Count == 1 && Directory.Exists(paths[0]))
                ds = DataSetReader.FromImageFolder(paths[0], options);
            else if (paths.All(ArrayFiles.IsArrayFile))
                ds = DataSetReader.FromNpy(paths, options);
            else if (paths.Count == 1 && IsIdx(paths[0]))
                ds = DataSetReader.FromIdx(paths[0], labelPath, options);
            else
                throw new PtqException("DataSetKindUnknown", PtqErrorKind.InvalidArgument,
                    $"'{paths[0]}' is neither a folder of images, .npy/.npz/.csv files, an IDX images file, nor ONNX TensorProto samples (.pb files, folders of input_K.pb).", paths[0]);
            if (ds.Kind is "Npy" or "TensorProto" or "Text") WarnImageOptions();
            WriteVerbose($"{ds.Kind} data set '{ds.Name}': {ds.Count} samples of shape [{string.Join(",", ds.SampleShape)}]{(ds.Shuffle ? $", shuffled with seed {ds.Seed}" : "")}{(ds.BatchSize > 1 ? $", batches of {ds.BatchSize}" : "")}.");
            WriteObject(ds);
        }, paths[0]);
    }

    /// <summary>A .pb file, a folder of input_K.pb files, or an ONNX test folder of test_data_set_N folders.</summary>
    static bool IsTensorProtoSample(string path) =>
        File.Exists(path) ? path.EndsWith(".pb", StringComparison.OrdinalIgnoreCase)
        : Directory.Exists(path) && (Directory.EnumerateFiles(path, "input_*.pb").Any() || Directory.EnumerateDirectories(path, "test_data_set_*").Any());

    void WarnImageOptions()
    {
        if (MyInvocation.BoundParameters.Keys.Any(k => k is "Scale" or "Mean" or "Std" or "Resize" or "Channels" or "Layout" or "ChannelOrder" or "PreprocessModel"))
            WriteWarning("Image preparation options (-Resize, -Scale, -Mean, -Std, -Channels, -Layout, -ChannelOrder, -PreprocessModel) apply to images only; .npy and array samples are used as given.");
    }

    static bool IsIdx(string path)
    {
        var name = System.IO.Path.GetFileName(path).ToLowerInvariant();
        return name.Contains("idx") || name.EndsWith("-ubyte") || name.EndsWith("-ubyte.gz");
    }
}
