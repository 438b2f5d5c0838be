using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Where the tests find the real model, the data and the repository, and the prepared-model cache.</summary>
public static class TestPaths
{
    static readonly Lazy<string> Cache = new(() =>
    {
        // One cache folder for the whole test run (the variable is process-wide; fixtures run in parallel).
        var folder = Path.Combine(Path.GetTempPath(), $"ptq-tests-cache-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        Environment.SetEnvironmentVariable("PTQTOOLS_CACHE", folder);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(folder, true); } catch (IOException) { } };
        return folder;
    });

    /// <summary>Points PTQTOOLS_CACHE at a temporary folder of this test run, and returns it.</summary>
    public static string UseTempCache() => Cache.Value;

    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "PtqTools.psd1"))) return dir.FullName;
            throw new InvalidOperationException($"The repository root (PtqTools.psd1) was not found above {AppContext.BaseDirectory}.");
        }
    }

    /// <summary>What ONNX Runtime 1.31.1 computed on an AVX2-only CPU: ../shared/ground-truth beside the repository
    /// (as CI lays it out). Fails, never skips, when it is not there.</summary>
    public static string GroundTruth => Existing(Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "ground-truth", "ort-1.31.1-avx2")),
        "the ground truth is ../shared/ground-truth/ort-1.31.1-avx2 beside the repository (CI copies shared/ there)");

    static string NuGetPackages =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    static string DnnModels => Path.Combine(NuGetPackages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels");

    public static string ResNet18 => Existing(Path.Combine(DnnModels, "ResNet18Onnx", "ResNet18.onnx"),
        "restore tests/PtqTools.Core.Tests (its PackageDownload of Microsoft.ML.DnnImageFeaturizer.ResNet18 0.23.1 brings it)");

    public static string ResNetPreprocess => Existing(Path.Combine(DnnModels, "ResNetPrepOnnx", "ResNetPreprocess.onnx"),
        "restore tests/PtqTools.Core.Tests (its PackageDownload of Microsoft.ML.DnnImageFeaturizer.ResNet18 0.23.1 brings it)");

    /// <summary>The Fashion-MNIST folder: Debian's full data set, else the sample in the repository. Fails (never
    /// skips) when neither is there.</summary>
    public static string FashionMnist
    {
        get
        {
            string[] needed = { "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz" };
            var candidates = new[] { "/usr/share/datasets/fashion-mnist", Path.Combine(RepoRoot, "tests", "data", "fashion-mnist-sample") };
            foreach (var c in candidates)
                if (needed.All(f => File.Exists(Path.Combine(c, f)))) return c;
            throw new InvalidOperationException(
                $"Fashion-MNIST was not found: none of [{string.Join(", ", candidates)}] holds {string.Join(" and ", needed)}. " +
                "Install Debian's dataset-fashion-mnist, or put the IDX sample files in tests/data/fashion-mnist-sample/.");
        }
    }

    static string Existing(string path, string hint) =>
        File.Exists(path) || Directory.Exists(path) ? path : throw new InvalidOperationException($"'{path}' does not exist: {hint}.");
}

/// <summary>A temporary folder deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ptq-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

public static class Check
{
    /// <summary>Asserts that the action throws a PtqException with this stable ErrorId.</summary>
    public static PtqException Throws(string errorId, Action action)
    {
        var ex = Assert.Throws<PtqException>(action);
        Assert.True(ex.ErrorId == errorId, $"Expected ErrorId '{errorId}', got '{ex.ErrorId}': {ex.Message}");
        return ex;
    }

    public static PtqException Throws(string errorId, Func<object?> func) => Throws(errorId, () => { func(); });

    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        double dot = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return dot / Math.Sqrt(aa * bb);
    }

    public static void Close(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(expected[i] - actual[i]);
            if (!(d <= worst)) { worst = d; at = i; }
        }
        Assert.True(worst <= tolerance, $"{what}: element {at} differs by {worst} ({expected[Math.Max(0, at)]} vs {actual[Math.Max(0, at)]}), tolerance {tolerance}.");
    }

    public static float[] RandomFloats(Random random, int n, float scale = 1f)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return v;
    }
}

/// <summary>Runs models in ONNX Runtime for the tests, independently of the engine's runner.</summary>
public static class Ort
{
    public static Dictionary<string, float[]> Run(byte[] model, string input, float[] data, long[] shape,
        GraphOptimizationLevel level = GraphOptimizationLevel.ORT_DISABLE_ALL)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level, IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(model, options);
        using var value = OrtValue.CreateTensorValueFromMemory(data, shape);
        using var runOptions = new RunOptions();
        var names = session.OutputNames.ToArray();
        using var results = session.Run(runOptions, new[] { input }, new[] { value }, names);
        var outputs = new Dictionary<string, float[]>(StringComparer.Ordinal);
        for (int i = 0; i < names.Length; i++) outputs[names[i]] = results[i].GetTensorDataAsSpan<float>().ToArray();
        return outputs;
    }

    public static Dictionary<string, float[]> Run(ModelProto model, string input, float[] data, long[] shape,
        GraphOptimizationLevel level = GraphOptimizationLevel.ORT_DISABLE_ALL) => Run(model.ToByteArray(), input, data, shape, level);
}

/// <summary>Builds small ONNX models with the OnnxSharp classes.</summary>
public sealed class ModelBuilder
{
    public ModelBuilder(int opset = 13, long irVersion = 7, string name = "test")
    {
        Model = new ModelProto { IrVersion = irVersion, ProducerName = "PtqTools.Core.Tests", Graph = new GraphProto { Name = name } };
        Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
    }

    public ModelProto Model { get; }
    public GraphProto Graph => Model.Graph;

    public static ValueInfoProto Value(string name, long[]? dims, int elemType = (int)OnnxDataType.Float) =>
        PtqTools.TestModels.OnnxBuilder.Value(name, dims, elemType);

    public ModelBuilder Input(string name, params long[] dims) { Graph.Input.Add(Value(name, dims)); return this; }

    /// <summary>A float output; no shape when dims is empty.</summary>
    public ModelBuilder Output(string name, params long[] dims) { Graph.Output.Add(Value(name, dims.Length == 0 ? null : dims)); return this; }

    public ModelBuilder Init(string name, float[] values, params long[] dims) { Graph.Initializer.Add(TensorData.FromFloats(name, values, dims)); return this; }

    public ModelBuilder RandomInit(Random random, string name, float scale, params long[] dims)
        => Init(name, Check.RandomFloats(random, checked((int)TensorData.ElementCount(dims)), scale), dims);

    public ModelBuilder Node(string op, string[] inputs, string[] outputs, string? name = null, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = name ?? "" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        foreach (var (an, av) in attributes) node.Attribute.Add(PtqTools.TestModels.OnnxBuilder.Attribute(an, av));
        Graph.Node.Add(node);
        return this;
    }

    public byte[] Bytes() => Model.ToByteArray();

    public string Save(string path)
    {
        File.WriteAllBytes(path, Bytes());
        return path;
    }
}

/// <summary>The small models the tests are built on.</summary>
public static class TinyModels
{
    public const string Input = "x";
    public static readonly long[] InputShape = { 1, 3, 8, 8 };
    public const int Classes = 10;

    /// <summary>x[1,3,8,8] -> conv1(+bias) -> Relu -> conv2(+bias) -> Add(skip from the Relu) -> GlobalAveragePool ->
    /// Flatten -> gemm (B [8,10], not transposed: per-channel along axis 1) -> y[1,10].</summary>
    public static ModelBuilder ResidualCnn(int seed = 1)
    {
        var r = new Random(seed);
        return new ModelBuilder(13, 7, "residual")
            .Input(Input, InputShape)
            .RandomInit(r, "w1", 0.4f, 8, 3, 3, 3).RandomInit(r, "b1", 0.2f, 8)
            .RandomInit(r, "w2", 0.2f, 8, 8, 3, 3).RandomInit(r, "b2", 0.2f, 8)
            .RandomInit(r, "wg", 0.5f, 8, Classes).RandomInit(r, "bg", 0.2f, Classes)
            .Node("Conv", new[] { Input, "w1", "b1" }, new[] { "c1" }, "conv1", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "c1" }, new[] { "r1" }, "relu1")
            .Node("Conv", new[] { "r1", "w2", "b2" }, new[] { "c2" }, "conv2", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Add", new[] { "c2", "r1" }, new[] { "a" }, "add")
            .Node("GlobalAveragePool", new[] { "a" }, new[] { "g" }, "gap")
            .Node("Flatten", new[] { "g" }, new[] { "f" }, "flatten")
            .Node("Gemm", new[] { "f", "wg", "bg" }, new[] { "y" }, "gemm")
            .Output("y", 1, Classes);
    }

    /// <summary>x[1,3,8,8] -> Conv(no bias) -> BatchNormalization -> Relu -> y.</summary>
    public static ModelBuilder ConvBatchNorm(int seed = 2)
    {
        var r = new Random(seed);
        var variance = Enumerable.Range(0, 4).Select(_ => 0.5f + (float)r.NextDouble()).ToArray();
        return new ModelBuilder(13, 7, "convbn")
            .Input(Input, InputShape)
            .RandomInit(r, "w", 0.5f, 4, 3, 3, 3)
            .RandomInit(r, "gamma", 1f, 4).RandomInit(r, "beta", 0.5f, 4).RandomInit(r, "mean", 0.3f, 4).Init("var", variance, 4)
            .Node("Conv", new[] { Input, "w" }, new[] { "c" }, "conv", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("BatchNormalization", new[] { "c", "gamma", "beta", "mean", "var" }, new[] { "bn" }, "bn", ("epsilon", 1e-5f))
            .Node("Relu", new[] { "bn" }, new[] { "y" }, "relu")
            .Output("y", 1, 4, 8, 8);
    }

    /// <summary>A flat random input of the tiny models' shape.</summary>
    public static float[] RandomInput(Random random) => Check.RandomFloats(random, 3 * 8 * 8, 2f);
}

/// <summary>The kernel paths this CPU offers, as theory data, and the contexts that run a kernel on one of them (a
/// value per call: nothing process-wide to set or lock).</summary>
public static class KernelPaths
{
    public static TheoryData<KernelPath> Supported()
    {
        var d = new TheoryData<KernelPath>();
        foreach (var p in KernelDispatch.Supported()) d.Add(p);
        return d;
    }

    /// <summary>This host's default context on <paramref name="path"/>.</summary>
    public static KernelContext Context(KernelPath path) => KernelContext.Default.WithPath(path);

    /// <summary>The contexts that cover <paramref name="path"/>: without AMX tiles and, where the CPU and library have
    /// them (native path only), with them.</summary>
    public static IEnumerable<KernelContext> Contexts(KernelPath path)
    {
        var context = Context(path);
        yield return context with { AllowAmx = false };
        if (path == KernelPath.NativeVnni && NativeKernels.HasAmx) yield return context with { AllowAmx = true };
    }
}

/// <summary>Why a test that reads Debian's libonnx-testdata cannot run here, or null when it can.</summary>
public static class OnnxTestData
{
    static string Root => global::PtqTools.Fuzz.Seeds.CorpusRoot;

    public static string? MissingReason => Directory.Exists(Root) ? null :
        $"Debian's libonnx-testdata is not installed ({Root} is missing; build.ps1 -Task Test installs it with apt-get when run as root)";
}

/// <summary>A fact that reads the conformance corpus: skipped with the reason where the package is missing.</summary>
public sealed class OnnxTestDataFactAttribute : FactAttribute
{
    public OnnxTestDataFactAttribute() { if (OnnxTestData.MissingReason is { } reason) Skip = reason; }
}

/// <summary>A theory that reads the conformance corpus: skipped with the reason where the package is missing.</summary>
public sealed class OnnxTestDataTheoryAttribute : TheoryAttribute
{
    public OnnxTestDataTheoryAttribute() { if (OnnxTestData.MissingReason is { } reason) Skip = reason; }
}

/// <summary>What a host must be for a test, and why a host is not: a test that cannot run here is reported as skipped
/// with the reason, never passed by returning early.</summary>
public enum HostNeed { X64, LinuxX64, Linux, Avx2, NoArmDot, Root }

public static class HostNeeds
{
    public static string? MissingReason(HostNeed need)
    {
        bool x64 = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64;
        return need switch
        {
            HostNeed.X64 when !x64 => "needs an x64 process: the native kernels are built for x64 only",
            HostNeed.LinuxX64 when !(x64 && OperatingSystem.IsLinux()) => "needs Linux x64: the check compiles ELF stubs with gcc",
            HostNeed.Linux when !OperatingSystem.IsLinux() => "needs Linux: the /proc reading exists on Linux only",
            HostNeed.Avx2 when !System.Runtime.Intrinsics.X86.Avx2.IsSupported => "needs an x64 CPU with AVX2 (ONNX Runtime's x64 kernels are the reference)",
            HostNeed.NoArmDot when PtqTools.Core.Kernels.ArmKernels.Supported => "on ARM64 with the dot product ArmDot runs itself: PtqTools.Arm64Check holds it to the references",
            HostNeed.Root when Environment.UserName != "root" => "needs root (it mounts a tmpfs)",
            _ => null,
        };
    }
}

/// <summary>A fact that needs a kind of host (<see cref="HostNeed"/>): skipped with the reason elsewhere.</summary>
public sealed class HostFactAttribute : FactAttribute
{
    public HostFactAttribute(HostNeed need) { if (HostNeeds.MissingReason(need) is { } reason) Skip = reason; }
}

/// <summary>A theory that needs a kind of host (<see cref="HostNeed"/>): skipped with the reason elsewhere.</summary>
public sealed class HostTheoryAttribute : TheoryAttribute
{
    public HostTheoryAttribute(HostNeed need) { if (HostNeeds.MissingReason(need) is { } reason) Skip = reason; }
}

/// <summary>
/// The small synthetic models of the mechanics tests (a few channels, maps of 16x16 and less) would run slower in int8
/// than in float, so the speed rules (ShallowConv, SlowRegion) keep their layers in float by default, as they should. The
/// tests of the quantizer's mechanics on such models skip those two rules; ArchitectureRuleTests and
/// ArchitectureModelTests test the rules themselves.
/// </summary>
public static class TinyModel
{
    public static readonly string[] SpeedRules = { "ShallowConv", "SlowRegion" };

    public static QuantizationOptions Options() => new() { SkipRules = SpeedRules };
}
