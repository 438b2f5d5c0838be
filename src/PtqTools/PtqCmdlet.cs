using System.Collections;
using System.Management.Automation;
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

    public static T To<T>(PSObject o) where T : new()
    {
        if (o.BaseObject is T live) return live;
        var result = new T();
        foreach (var prop in typeof(T).GetProperties().Where(p => p.CanWrite))
        {
            var value = o.Properties[prop.Name]?.Value;
            if (value is null) continue;
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
