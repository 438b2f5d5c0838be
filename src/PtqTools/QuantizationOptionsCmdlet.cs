using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Quantization;

namespace PtqTools;

/// <summary>
/// Base of the cmdlets that take quantization options (Invoke-Quantization, Update-QuantizedModel,
/// Get-QuantizationStatus): the option parameters, and the one place that turns them into checked
/// <see cref="QuantizationOptions"/>, so that what a batch run compares with an output's recorded options is what
/// Invoke-Quantization records.
/// </summary>
public abstract class QuantizationOptionsCmdlet : PtqCmdlet
{
    [Parameter]
    [ValidateSet("UInt8", "Int8", "UInt16", "Int16")]
    public string ActivationType { get; set; } = "UInt8";

    /// <summary>Type of 8-bit weights.</summary>
    [Parameter]
    [ValidateSet("Int8", "UInt8")]
    public string WeightType { get; set; } = "Int8";

    /// <summary>Symmetric or asymmetric weights; by default symmetric 8-bit weights and asymmetric 4-bit blocks.</summary>
    [Parameter]
    [ValidateSet("Symmetric", "Asymmetric")]
    public string? WeightSymmetry { get; set; }

    /// <summary>Which ONNX Runtime kernel quantized convolutions are written for: Gemm (im2col + QGEMM, on AMX tiles),
    /// Symmetric (its symmetric convolution) or Auto (the target's: Gemm for Amx, Symmetric otherwise). Same values.</summary>
    [Parameter]
    [ValidateSet("Auto", "Gemm", "Symmetric")]
    public string ConvKernel { get; set; } = "Auto";

    /// <summary>The CPU class the model is written for: Portable (default, right on every class), Avx2, Avx512,
    /// Vnni, Amx, Arm64, or Host (this machine's class, resolved and recorded).</summary>
    [Parameter]
    [ValidateSet("Portable", "Avx2", "Avx512", "Vnni", "Amx", "Arm64", "Host")]
    public string Target { get; set; } = "Portable";

    /// <summary>On a target whose u8 x s8 pair sums saturate at int16 (Portable, Avx2, Avx512): Channels (default;
    /// larger scales on just the output channels at risk), ReduceRange (7-bit weights on the layers at risk),
    /// FirstLayer (7-bit weights on the first layer only, as NNCF) or None (report only).</summary>
    [Parameter]
    [ValidateSet("Channels", "ReduceRange", "FirstLayer", "None")]
    public string OverflowFix { get; set; } = "Channels";

    /// <summary>7-bit weights on every layer (ONNX Runtime's reduce_range).</summary>
    [Parameter]
    public SwitchParameter ReduceRange { get; set; }

    /// <summary>Bias correction of Conv/Gemm layers from the calibrated input means.</summary>
    [Parameter]
    public SwitchParameter BiasCorrection { get; set; }

    /// <summary>Cross-layer equalization of Conv-Relu-Conv chains before calibration.</summary>
    [Parameter]
    public SwitchParameter Equalize { get; set; }

    /// <summary>SmoothQuant's alpha for Dynamic mode's MatMuls (needs -DataSet).</summary>
    [Parameter]
    [ValidateRange(0.01, 1.0)]
    public float SmoothQuant { get; set; }

    /// <summary>Dynamic mode: MatMul input channels whose calibrated maximum exceeds this many times the median channel
    /// maximum are computed in float beside the int8 MatMul (needs -DataSet).</summary>
    [Parameter]
    [ValidateRange(1.0, 1e6)]
    public float OutlierThreshold { get; set; }

    /// <summary>Per-tensor overrides: tensor name to a hashtable of Type, Min and Max, or Scale and ZeroPoint.</summary>
    [Parameter]
    public System.Collections.Hashtable? TensorOverride { get; set; }

    [Parameter]
    public SwitchParameter SymmetricActivation { get; set; }

    /// <summary>One weight scale per tensor instead of per output channel.</summary>
    [Parameter]
    public SwitchParameter PerTensor { get; set; }

    /// <summary>Static (calibrated QDQ), Dynamic (int8 weights, activation ranges at run time) or WeightOnly.</summary>
    [Parameter]
    [ValidateSet("Static", "Dynamic", "WeightOnly")]
    public string Mode { get; set; } = "Static";

    /// <summary>How a static model is written: QDQ pairs, or ONNX Runtime's QLinear operators.</summary>
    [Parameter]
    [ValidateSet("QDQ", "QOperator")]
    public string Format { get; set; } = "QDQ";

    /// <summary>Bits of weight-only weights: 8 (per column) or 4 (block-wise MatMulNBits).</summary>
    [Parameter]
    [ValidateSet("8", "4")]
    public int WeightBits { get; set; } = 8;

    /// <summary>How 4-bit codes are chosen: RTN (round-to-nearest), HQQ (error-minimizing per block) or GPTQ
    /// (error feedback through the Hessian of each MatMul's inputs; needs -DataSet).</summary>
    [Parameter]
    [ValidateSet("RTN", "HQQ", "GPTQ")]
    public string WeightMethod { get; set; } = "RTN";

    /// <summary>Block size along K of 4-bit weights.</summary>
    [Parameter]
    public int BlockSize { get; set; } = 32;

    /// <summary>Layers kept in float: names, wildcard patterns over names, or op types. Each entry must match a layer
    /// of each model (ExcludeMatchesNothing otherwise); an op type the model lacks is a warning.</summary>
    [Parameter]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(LayerNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[] Exclude { get; set; } = Array.Empty<string>();

    /// <summary>Architecture rules not to apply (Static mode): their layers are quantized like any other. * skips them
    /// all. Get-QuantizationRule lists the rules.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(RuleNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[] SkipRule { get; set; } = Array.Empty<string>();

    /// <summary>The names of the option parameters above, for passing the bound ones on to Invoke-Quantization.</summary>
    internal static readonly string[] OptionParameters = typeof(QuantizationOptionsCmdlet).GetProperties()
        .Where(p => p.DeclaringType == typeof(QuantizationOptionsCmdlet) && p.IsDefined(typeof(ParameterAttribute), false))
        .Select(p => p.Name).ToArray();

    /// <summary>The options of these parameters, checked as a whole, with Host resolved to this machine's class
    /// (once: every model of the call is written for the same class).</summary>
    protected QuantizationOptions BuildOptions()
    {
        var options = new QuantizationOptions
        {
            ActivationType = Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
            ActivationSymmetric = SymmetricActivation,
            PerChannel = !PerTensor,
            Mode = Enum.Parse<QuantMode>(Mode, ignoreCase: true),
            Format = Enum.Parse<QuantFormat>(Format, ignoreCase: true),
            WeightBits = WeightBits,
            BlockSize = BlockSize,
            WeightMethod = Enum.Parse<WeightMethod>(WeightMethod, ignoreCase: true),
            Exclude = Exclude,
            SkipRules = SkipRule,
            WeightType = Enum.Parse<QuantType>(WeightType, ignoreCase: true),
            WeightSymmetric = WeightSymmetry is null ? null : string.Equals(WeightSymmetry, "Symmetric", StringComparison.OrdinalIgnoreCase),
            ReduceRange = ReduceRange,
            ConvKernel = Enum.Parse<ConvKernel>(ConvKernel, ignoreCase: true),
            Target = Enum.Parse<QuantTarget>(Target, ignoreCase: true),
            OverflowFix = Enum.Parse<OverflowFix>(OverflowFix, ignoreCase: true),
            BiasCorrection = BiasCorrection,
            Equalize = Equalize,
            SmoothQuantAlpha = MyInvocation.BoundParameters.ContainsKey(nameof(SmoothQuant)) ? SmoothQuant : null,
            OutlierThreshold = MyInvocation.BoundParameters.ContainsKey(nameof(OutlierThreshold)) ? OutlierThreshold : null,
        };
        options.Target = QuantTargets.Resolve(options.Target);
        if (TensorOverride is not null) options.Overrides = ReadOverrides(TensorOverride);
        options.Validate();
        return options;
    }

    static readonly string[] OverrideKeys = { "Type", "Min", "Max", "Scale", "ZeroPoint" };

    /// <summary>The -TensorOverride hashtable as overrides; an unknown key or a value of the wrong kind is refused.</summary>
    static Dictionary<string, Core.Quantization.TensorOverride> ReadOverrides(System.Collections.Hashtable table)
    {
        var result = new Dictionary<string, Core.Quantization.TensorOverride>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in table)
        {
            var tensor = LanguagePrimitives.ConvertTo<string>(entry.Key);
            PtqException Bad(string why) => new("InvalidTensorOverride", PtqErrorKind.InvalidArgument, $"The override of tensor '{tensor}' {why}", tensor);
            var o = new Core.Quantization.TensorOverride();
            var value = entry.Value is PSObject ps ? ps.BaseObject : entry.Value;
            IEnumerable<(string Name, object? Value)> fields = value switch
            {
                System.Collections.IDictionary d => d.Keys.Cast<object>().Select(k => (LanguagePrimitives.ConvertTo<string>(k), d[k])),
                null => throw Bad("is empty: give a hashtable of Type, Min and Max, or Scale and ZeroPoint."),
                _ => PSObject.AsPSObject(entry.Value).Properties.Select(p => (p.Name, (object?)p.Value)),
            };
            foreach (var (name, raw) in fields)
            {
                var key = OverrideKeys.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase))
                    ?? throw Bad($"has an unknown key '{name}'; the keys are {string.Join(", ", OverrideKeys)}.");
                try
                {
                    switch (key)
                    {
                        case "Type": o.Type = Enum.Parse<QuantType>(LanguagePrimitives.ConvertTo<string>(raw), ignoreCase: true); break;
                        case "Min": o.Min = LanguagePrimitives.ConvertTo<float>(raw); break;
                        case "Max": o.Max = LanguagePrimitives.ConvertTo<float>(raw); break;
                        case "Scale": o.Scale = LanguagePrimitives.ConvertTo<float>(raw); break;
                        case "ZeroPoint": o.ZeroPoint = LanguagePrimitives.ConvertTo<int>(raw); break;
                    }
                }
                catch (Exception ex) when (ex is PSInvalidCastException or ArgumentException)
                {
                    throw Bad($"has {key} = '{raw}', which is not {(key == "Type" ? "one of UInt8, Int8, UInt16, Int16" : "a number")}.");
                }
            }
            result[tensor] = o;
        }
        return result;
    }
}
