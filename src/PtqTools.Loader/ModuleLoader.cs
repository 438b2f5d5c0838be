using System.Management.Automation;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace PtqTools.Loader;

/// <summary>
/// Loads the engine and its dependencies in their own AssemblyLoadContext (PowerShell's documented pattern for
/// module dependency conflicts). PowerShell imports this assembly first (NestedModules of the manifest), then
/// PtqTools.dll, the cmdlets, in its default context; the engine
/// (PtqTools.Core.dll) and everything it needs (Google.Protobuf, OnnxSharp, ONNX Runtime's managed API, SkiaSharp,
/// ScottPlot, Microsoft.ML.Tokenizers...) sit in the module's <c>dependencies</c> folder and load into
/// <see cref="PtqLoadContext"/>, whatever versions of the same assemblies other modules of the session loaded. The
/// default context is asked only for PtqTools.Core (its name collides with nobody); the load context resolves the
/// rest, and the native libraries from <c>dependencies/runtimes/&lt;rid&gt;/native</c> for the running platform.
/// Every public type of the engine is registered as a type accelerator under its full name, so that scripts keep
/// writing <c>[PtqTools.Core.Evaluation.TaskMetrics]</c> (PowerShell does not resolve type names from assemblies
/// of a custom load context).
/// </summary>
public sealed class ModuleLoader : IModuleAssemblyInitializer, IModuleAssemblyCleanup
{
    const string EngineName = "PtqTools.Core";
    static readonly object Gate = new();
    static bool _hooked;
    static bool _accelerators;

    /// <summary>The module folder (where PtqTools.Loader.dll and PtqTools.dll are).</summary>
    public static string ModuleFolder { get; } = Path.GetDirectoryName(typeof(ModuleLoader).Assembly.Location) ?? AppContext.BaseDirectory;

    /// <summary>The folder of the engine and its managed dependencies.</summary>
    public static string DependencyFolder { get; } = Path.Combine(ModuleFolder, "dependencies");

    /// <summary>The engine's load context (one per process: parallel runspaces share it).</summary>
    public static PtqLoadContext Context { get; } = new(DependencyFolder);

    public void OnImport()
    {
        lock (Gate)
        {
            if (!_hooked)
            {
                AssemblyLoadContext.Default.Resolving += ResolveEngine;
                _hooked = true;
            }
            if (!_accelerators) _accelerators = RegisterAccelerators();
        }
    }

    // The handler stays while the process lives: another runspace of this session may still run the module, and
    // the engine's types stay loaded in the context anyway (it cannot unload what PowerShell holds).
    public void OnRemove(PSModuleInfo psModuleInfo) { }

    static Assembly? ResolveEngine(AssemblyLoadContext context, AssemblyName name) =>
        string.Equals(name.Name, EngineName, StringComparison.Ordinal) ? Context.LoadFromAssemblyName(name) : null;

    static bool RegisterAccelerators()
    {
        try { return Expose(EngineName) > 0; }
        catch (IOException) { return false; }
    }

    /// <summary>
    /// Makes the public types of one of the module's dependencies (Google.Protobuf, OnnxSharp, Microsoft.ML.OnnxRuntime,
    /// SkiaSharp...) reachable by name from scripts, as the module's own copies: for scripts that hand such objects
    /// to the engine or take them from it (the benchmarks do). Opt-in, because it hides from scripts the same names
    /// another module loaded in the default context. Names already registered are left as they are. Returns how
    /// many types were registered.
    /// </summary>
    public static int ExposeDependency(string assemblyName) => Expose(assemblyName);

    static int Expose(string assemblyName)
    {
        var accelerators = typeof(PSObject).Assembly.GetType("System.Management.Automation.TypeAccelerators");
        var add = accelerators?.GetMethod("Add", BindingFlags.Public | BindingFlags.Static, [typeof(string), typeof(Type)]);
        if (add is null) return 0;
        var existing = accelerators!.GetProperty("Get", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as IDictionary<string, Type>;
        var assembly = Context.LoadFromAssemblyName(new AssemblyName(assemblyName));
        int count = 0;
        foreach (var type in assembly.GetExportedTypes())
        {
            if (type.FullName is not { } fullName) continue;
            if (existing is not null && existing.ContainsKey(fullName)) continue;
            add.Invoke(null, [fullName, type]);
            count++;
        }
        return count;
    }

    /// <summary>
    /// Null when the running platform's natives are all in the module folder; otherwise one message naming the
    /// platform and what is missing. The cmdlets check it before any of them touches ONNX Runtime or SkiaSharp, whose
    /// type initializers would otherwise fail with a TypeInitializationException around a DllNotFoundException.
    /// </summary>
    public static string? NativeProblem() => NativeAssets.Problem(DependencyFolder);
}

/// <summary>The runtime identifier of this process and the native libraries the module needs for it.</summary>
public static class NativeAssets
{
    /// <summary>The platforms whose natives the package carries.</summary>
    public static IReadOnlyList<string> Supported { get; } = ["win-x64", "linux-x64", "linux-arm64", "osx-arm64"];

    /// <summary>The natives every cmdlet may need (the own kernels are optional: managed kernels stand in).</summary>
    public static IReadOnlyList<string> Required { get; } = ["onnxruntime", "libSkiaSharp", "libHarfBuzzSharp"];

    /// <summary>win-x64, linux-arm64, osx-arm64, linux-musl-x64...: the running process's platform.</summary>
    public static string RuntimeId { get; } = ComputeRuntimeId();

    static string ComputeRuntimeId()
    {
        var arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        if (OperatingSystem.IsWindows()) return "win-" + arch;
        if (OperatingSystem.IsMacOS()) return "osx-" + arch;
        if (OperatingSystem.IsLinux())
        {
            var musl = Directory.Exists("/lib") && Directory.EnumerateFiles("/lib", "ld-musl-*").Any();
            return (musl ? "linux-musl-" : "linux-") + arch;
        }
        return RuntimeInformation.RuntimeIdentifier;
    }

    /// <summary>The file a library name has on the running platform (onnxruntime.dll, libonnxruntime.so...).</summary>
    public static string FileName(string name)
    {
        if (OperatingSystem.IsWindows()) return name + ".dll";
        var lib = name.StartsWith("lib", StringComparison.Ordinal) ? name : "lib" + name;
        return lib + (OperatingSystem.IsMacOS() ? ".dylib" : ".so");
    }

    /// <summary>dependencies/runtimes/&lt;rid&gt;/native for the running platform.</summary>
    public static string NativeFolder(string dependencyFolder) => Path.Combine(dependencyFolder, "runtimes", RuntimeId, "native");

    /// <summary>Null when every required native is there; otherwise what is missing, for the user.</summary>
    public static string? Problem(string dependencyFolder)
    {
        var folder = NativeFolder(dependencyFolder);
        var supported = string.Join(", ", Supported);
        if (!Directory.Exists(folder))
            return $"PtqTools has no native libraries for this platform ({RuntimeId}): the folder '{folder}' does not exist. " +
                   $"The package carries ONNX Runtime and SkiaSharp for {supported}.";
        var missing = Required.Select(FileName).Where(f => !File.Exists(Path.Combine(folder, f))).ToList();
        if (missing.Count == 0) return null;
        return $"PtqTools cannot run on this platform ({RuntimeId}): {string.Join(", ", missing)} missing from '{folder}'. " +
               "Reinstall the module (Install-PSResource PtqTools -Reinstall).";
    }
}

/// <summary>
/// The engine's load context: an assembly found in the dependency folder loads from there (its own Google.Protobuf,
/// ONNX Runtime and SkiaSharp, never another module's); anything else (the .NET libraries, PowerShell) comes from the
/// default context. Native libraries load from runtimes/&lt;rid&gt;/native of the running platform.
/// </summary>
public sealed class PtqLoadContext : AssemblyLoadContext
{
    readonly string _folder;

    public PtqLoadContext(string folder) : base("PtqTools", isCollectible: false) => _folder = folder;

    protected override Assembly? Load(AssemblyName assemblyName)
    {
        var path = Path.Combine(_folder, assemblyName.Name + ".dll");
        return File.Exists(path) ? LoadFromAssemblyPath(path) : null;
    }

    protected override IntPtr LoadUnmanagedDll(string unmanagedDllName)
    {
        if (Path.IsPathRooted(unmanagedDllName)) return IntPtr.Zero;
        var folder = NativeAssets.NativeFolder(_folder);
        foreach (var candidate in new[] { unmanagedDllName, NativeAssets.FileName(unmanagedDllName) })
        {
            var path = Path.Combine(folder, candidate);
            if (File.Exists(path)) return LoadUnmanagedDllFromPath(path);
        }
        return IntPtr.Zero;
    }
}
