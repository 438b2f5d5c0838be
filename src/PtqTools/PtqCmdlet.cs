using System.Collections;
using System.Management.Automation;
using PtqTools.Core.Model;
using PtqTools.Core;
using PtqTools.Core.Calibration;

namespace PtqTools;

/// <summary>
/// Base of every PtqTools cmdlet: turns StopProcessing (Ctrl+C) into a cancellation token, maps engine errors to
/// ErrorRecords with a stable id, category and target, resolves file-system paths, and reports progress.
/// </summary>
public abstract class PtqCmdlet : PSCmdlet
{
    readonly CancellationTokenSource _stop = new();

    protected CancellationToken Cancel => _stop.Token;

    protected override void StopProcessing() => _stop.Cancel();

    /// <summary>
    /// Checks once per command that the running platform's natives are in the module folder (one clear
    /// NativeLibraryMissing error naming the platform and the files), then runs <see cref="Begin"/>.
    /// </summary>
    protected sealed override void BeginProcessing()
    {
        if (Loader.ModuleLoader.NativeProblem() is { } problem)
            Fail(new PtqException("NativeLibraryMissing", PtqErrorKind.NotSupported, problem, Loader.NativeAssets.RuntimeId));
        Begin();
    }

    /// <summary>What a cmdlet does before its first input (BeginProcessing is the platform check's).</summary>
    protected virtual void Begin() { }

    /// <summary>Runs engine work; an expected failure becomes a non-terminating error for this input.</summary>
    protected bool Try(Action action, object? target = null)
    {
        try
        {
            action();
            return true;
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
        catch (PtqException ex)
        {
            WriteError(ToErrorRecord(ex, target));
            return false;
        }
    }

    protected void Fail(PtqException ex, object? target = null) => ThrowTerminatingError(ToErrorRecord(ex, target));

    internal static ErrorRecord ToErrorRecord(PtqException ex, object? target = null)
    {
        var category = ex.Kind switch
        {
            PtqErrorKind.InvalidData => ErrorCategory.InvalidData,
            PtqErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
            PtqErrorKind.ObjectNotFound => ErrorCategory.ObjectNotFound,
            PtqErrorKind.NotSupported => ErrorCategory.NotImplemented,
            PtqErrorKind.SecurityError => ErrorCategory.SecurityError,
            PtqErrorKind.WriteError => ErrorCategory.WriteError,
            PtqErrorKind.ResourceExists => ErrorCategory.ResourceExists,
            PtqErrorKind.OperationStopped => ErrorCategory.OperationStopped,
            PtqErrorKind.PermissionDenied => ErrorCategory.PermissionDenied,
            _ => ErrorCategory.NotSpecified,
        };
        return new ErrorRecord(ex, ex.ErrorId, category, ex.Target ?? target);
    }

    /// <summary>Resolves -Path (wildcards) or -LiteralPath to existing file-system paths; anything else is an error.</summary>
    protected List<string> ResolveExisting(IEnumerable<string> paths, bool literal)
    {
        var result = new List<string>();
        foreach (var path in paths)
        {
            try
            {
                if (literal)
                {
                    var resolved = SessionState.Path.GetUnresolvedProviderPathFromPSPath(path, out var provider, out _);
                    RequireFileSystem(provider, path);
                    if (!File.Exists(resolved) && !Directory.Exists(resolved))
                        throw new ItemNotFoundException($"Cannot find path '{resolved}' because it does not exist.");
                    result.Add(resolved);
                }
                else
                {
                    var resolved = SessionState.Path.GetResolvedProviderPathFromPSPath(path, out var provider);
                    RequireFileSystem(provider, path);
                    if (resolved.Count == 0)
                        throw new ItemNotFoundException($"Cannot find path '{path}' because it does not exist.");
                    result.AddRange(resolved);
                }
            }
            catch (ItemNotFoundException ex)
            {
                WriteError(new ErrorRecord(new PtqException("PathNotFound", PtqErrorKind.ObjectNotFound, ex.Message, path, ex),
                    "PathNotFound", ErrorCategory.ObjectNotFound, path));
            }
            catch (PtqException ex)
            {
                WriteError(ToErrorRecord(ex, path));
            }
        }
        return result;
    }

    /// <summary>One existing file named by a parameter that follows the command's -Path/-LiteralPath choice (the float
    /// model of Test-QuantizedModel, -ModelPath of Import-ActivationRange): taken as typed when literal, else a pattern
    /// that must match exactly one file.</summary>
    protected string ResolveOneExisting(string path, bool literal)
    {
        var found = new List<string>();
        try
        {
            if (literal)
            {
                var resolved = SessionState.Path.GetUnresolvedProviderPathFromPSPath(path, out var provider, out _);
                RequireFileSystem(provider, path);
                if (File.Exists(resolved) || Directory.Exists(resolved)) found.Add(resolved);
            }
            else
            {
                var resolved = SessionState.Path.GetResolvedProviderPathFromPSPath(path, out var provider);
                RequireFileSystem(provider, path);
                found.AddRange(resolved);
            }
        }
        catch (ItemNotFoundException) { }
        if (found.Count == 0)
            throw new PtqException("PathNotFound", PtqErrorKind.ObjectNotFound, $"Cannot find path '{path}' because it does not exist.", path);
        if (found.Count > 1)
            throw new PtqException("PathAmbiguous", PtqErrorKind.InvalidArgument,
                $"'{path}' matches {found.Count} files ({string.Join(", ", found.Take(3).Select(System.IO.Path.GetFileName))}{(found.Count > 3 ? ", ..." : "")}); it must name one. Escape wildcard characters with a backtick, or use -LiteralPath.", path);
        return found[0];
    }

    /// <summary>The file-system path of a pipeline object that stands for a file: a FileInfo from Get-Item or
    /// Get-ChildItem (live or deserialized), or any object with a PSPath, such as a model summary of Get-OnnxModel.
    /// Such a path names a real file and is taken literally. Null for any other object.</summary>
    protected string? LiteralPathOf(PSObject o)
    {
        if (o.BaseObject is FileSystemInfo info) return info.FullName;
        if (o.Properties["PSPath"]?.Value is not { } value) return null;
        var psPath = value is PSObject ps ? ps.BaseObject.ToString() : value.ToString();
        if (string.IsNullOrEmpty(psPath)) return null;
        var resolved = SessionState.Path.GetUnresolvedProviderPathFromPSPath(psPath, out var provider, out _);
        RequireFileSystem(provider, psPath);
        return resolved;
    }

    /// <summary>Before any work (of this command, or of the commands before it in the pipeline, when called from
    /// BeginProcessing): the folder an output file goes to must exist, be a folder, and take a new file. The check
    /// creates and removes an empty file there (the only test that holds for root, read-only mounts and ACLs alike);
    /// with -WhatIf it only looks. The error names the folder and has it as target.</summary>
    protected void CheckOutputFolder(string folder, string output)
    {
        if (File.Exists(folder))
            throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound,
                $"Cannot write '{output}': '{folder}' is a file, not a folder.", folder);
        if (!Directory.Exists(folder))
        {
            // Name the part of the path that is in the way: a file where a folder should be.
            var up = System.IO.Path.GetDirectoryName(folder);
            while (up is not null && !Directory.Exists(up) && !File.Exists(up)) up = System.IO.Path.GetDirectoryName(up);
            var why = up is not null && File.Exists(up) ? $" ('{up}' is a file, not a folder)" : "";
            throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound,
                $"Cannot write '{output}': the folder '{folder}' does not exist{why}.", folder);
        }
        if (WhatIfInEffect) return;
        var probe = System.IO.Path.Combine(folder, $".ptqtools-write-check.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A read-only file system is a write error, whoever asks; a folder that refuses this user, permission denied.
            var reason = Reason(ex, probe);
            bool denied = ex is UnauthorizedAccessException && reason != ReadOnlyFileSystem;
            throw new PtqException("OutputNotWritable", denied ? PtqErrorKind.PermissionDenied : PtqErrorKind.WriteError,
                $"Cannot write '{output}': the folder '{folder}' does not take new files ({reason}).", folder, ex);
        }
        finally
        {
            try { if (File.Exists(probe)) File.Delete(probe); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary><see cref="CheckOutputFolder"/> for the folder of an output file.</summary>
    protected void CheckOutputFile(string output) =>
        CheckOutputFolder(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(output))!, output);

    const string ReadOnlyFileSystem = "read-only file system";

    // The system's reason, without the name of the probe file, which is no business of the user.
    static string Reason(Exception ex, string probe)
    {
        if (ex.Message.Contains("Read-only file system", StringComparison.OrdinalIgnoreCase)) return ReadOnlyFileSystem;
        if (ex is UnauthorizedAccessException) return "permission denied";
        return ex.Message.Replace($"'{probe}'", "").Replace(probe, "").Trim(' ', ':', '.');
    }

    bool WhatIfInEffect =>
        MyInvocation.BoundParameters.TryGetValue("WhatIf", out var w) ? LanguagePrimitives.IsTrue(w)
            : LanguagePrimitives.IsTrue(SessionState.PSVariable.GetValue("WhatIfPreference"));

    /// <summary>A file-system path for a file that may not exist yet.</summary>
    protected string ResolveOutput(string path)
    {
        var resolved = SessionState.Path.GetUnresolvedProviderPathFromPSPath(path, out var provider, out _);
        RequireFileSystem(provider, path);
        return resolved;
    }

    /// <summary>A file this cmdlet wrote, as Get-Item returns it: the FileInfo with PSPath, PSParentPath,
    /// PSChildName, PSDrive and PSProvider, shown in the FileSystem view.</summary>
    protected PSObject FileItem(string path) =>
        SessionState.InvokeProvider.Item.Get(new[] { path }, force: true, literalPath: true).First();

    static void RequireFileSystem(ProviderInfo provider, string path)
    {
        if (provider.Name != "FileSystem")
            throw new PtqException("NotFileSystemPath", PtqErrorKind.InvalidArgument,
                $"'{path}' is on the {provider.Name} provider; PtqTools reads and writes files only.", path);
    }

    /// <summary>A progress sink that writes a progress record from the pipeline thread.</summary>
    protected IProgress<RunProgress> Progress(int activityId, string activity, string unit = "samples") => new CmdletProgress(this, activityId, activity, unit);

    protected void CompleteProgress(int activityId, string activity) =>
        WriteProgress(new ProgressRecord(activityId, activity, "Done") { RecordType = ProgressRecordType.Completed });

    sealed class CmdletProgress(PtqCmdlet cmdlet, int id, string activity, string unit) : IProgress<RunProgress>
    {
        long _last;

        public void Report(RunProgress p)
        {
            long now = Environment.TickCount64;
            if (p.Done != p.Total && now - _last < 200) return;
            _last = now;
            // A script data source is not counted up front: then there is no total, only the count and the rate.
            string status = p.Total > 0 ? $"{p.Done} of {p.Total} {unit}, {p.SamplesPerSecond:F1}/s" : $"{p.Done} {unit}, {p.SamplesPerSecond:F1}/s";
            cmdlet.WriteProgress(new ProgressRecord(id, activity, status)
            {
                PercentComplete = p.Total > 0 ? Math.Min(100, 100 * p.Done / p.Total) : -1,
                CurrentOperation = p.Current,
                SecondsRemaining = p.SamplesPerSecond > 0 && p.Total > 0 ? (int)((p.Total - p.Done) / p.SamplesPerSecond) : -1,
            });
        }
    }
}

/// <summary>Turns pipeline objects, live or deserialized (Import-Clixml, ConvertFrom-Json, remoting), into engine objects.</summary>
internal static class PipelineObjects
{
    public static ErrorRecord Unexpected(PSObject o, string expected) =>
        PtqCmdlet.ToErrorRecord(new PtqException("UnexpectedInput", PtqErrorKind.InvalidArgument,
            $"The pipeline gave a {o.TypeNames.FirstOrDefault() ?? "value"}; this cmdlet takes {expected}.", o), o);

    public static bool Has(PSObject o, params string[] names) => names.All(n => o.Properties[n] is not null);

    static readonly System.Reflection.MethodInfo ToMethod = typeof(PipelineObjects).GetMethod(nameof(To))!;

    /// <summary>A class of the engine's plain data (not a list, not a string) with a parameterless constructor.</summary>
    static bool IsNestedObject(Type t) =>
        t.IsClass && !t.IsArray && !t.IsGenericType && t != typeof(string) && t.Namespace?.StartsWith("PtqTools.Core", StringComparison.Ordinal) == true
        && t.GetConstructor(Type.EmptyTypes) is not null;

    public static T To<T>(PSObject o) where T : new()
    {
        if (o.BaseObject is T live) return live;
        var result = new T();
        foreach (var prop in typeof(T).GetProperties().Where(p => p.CanWrite))
        {
            var value = o.Properties[prop.Name]?.Value;
            if (value is null) continue;
            // A nested plain-data object (a statistics object's held-out data set, a result's fidelity check):
            // deserialized (Import-Clixml, remoting) it is read the same way; flattened to text by Export-Csv it is lost.
            if (IsNestedObject(prop.PropertyType))
            {
                var inner = value is PSObject wrapped ? wrapped.BaseObject : value;
                if (prop.PropertyType.IsInstanceOfType(inner)) prop.SetValue(result, inner);
                else if (inner is PSCustomObject) prop.SetValue(result, ToMethod.MakeGenericMethod(prop.PropertyType).Invoke(null, new object[] { PSObject.AsPSObject(value) }));
                continue;
            }
            if (value is PSObject pso) value = pso.BaseObject;
            try
            {
                if (prop.PropertyType.IsGenericType && prop.PropertyType.GetGenericTypeDefinition() == typeof(PtqTools.Core.Model.ValueList<>))
                    value = ToValueList(value, prop.PropertyType);
                prop.SetValue(result, LanguagePrimitives.ConvertTo(value, prop.PropertyType));
            }
            catch (PSInvalidCastException) when (prop.PropertyType == typeof(PtqTools.Core.Model.ValueList<PtqTools.Core.Model.MethodRange>))
            {
                // Deserialized per-method ranges: derived data that Merge-ActivationRange recomputes from the histogram.
            }
            catch (PSInvalidCastException) when (value is string && (prop.PropertyType.IsArray || prop.PropertyType.IsGenericType))
            {
                // A list Export-Csv flattened to text that cannot be read back item by item (objects; or an older
                // file's "System.Int64[]"): that property is lost, not wrong.
            }
            catch (PSInvalidCastException ex)
            {
                throw new PtqException("UnexpectedInput", PtqErrorKind.InvalidArgument,
                    $"Property '{prop.Name}' of a {o.TypeNames.FirstOrDefault()} cannot be read as {prop.PropertyType.Name}: {ex.Message}", o, ex);
            }
        }
        return result;
    }

    /// <summary>A list property from a live or deserialized collection, or from the text Export-Csv wrote for it
    /// (numbers joined with ", ", names with "; ").</summary>
    static object ToValueList(object value, Type listType)
    {
        var itemType = listType.GetGenericArguments()[0];
        IEnumerable items;
        if (value is string text)
        {
            if (itemType == typeof(string)) items = text.Length == 0 ? Array.Empty<string>() : text.Split("; ");
            else if (itemType.IsPrimitive) items = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            else throw new PSInvalidCastException($"A list of {itemType.Name} cannot be read from text.");
        }
        else items = value as IEnumerable is { } e and not string ? e : new[] { value };
        var list = (IList)Activator.CreateInstance(listType)!;
        foreach (var item in items)
        {
            var raw = item is PSObject p ? p.BaseObject : item;
            if (item is PSObject bag && raw is PSCustomObject && !itemType.IsPrimitive && itemType != typeof(string) && itemType != typeof(float[]))
            {
                // A deserialized object (remoting, Import-Clixml): its properties, read into the live type.
                list.Add(typeof(PipelineObjects).GetMethod(nameof(To))!.MakeGenericMethod(itemType).Invoke(null, new object[] { bag }));
                continue;
            }
            list.Add(itemType == typeof(float[]) && raw is IEnumerable row and not string
                ? row.Cast<object>().Select(x => LanguagePrimitives.ConvertTo<float>(x)).ToArray()
                : LanguagePrimitives.ConvertTo(raw, itemType, System.Globalization.CultureInfo.InvariantCulture));
        }
        return list;
    }
}
