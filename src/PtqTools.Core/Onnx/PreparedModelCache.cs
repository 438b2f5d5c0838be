using System.Diagnostics;
using System.Text.RegularExpressions;
using PtqTools.Core.Model;

namespace PtqTools.Core.Onnx;

/// <summary>
/// The cache of prepared models (<see cref="ModelPreparer.CacheFolder"/>): lists its entries and removes them.
/// An entry is <c>&lt;sha256&gt;.&lt;version&gt;.onnx</c> with its side data files (<c>&lt;entry&gt;.&lt;guid&gt;.data</c>, models
/// above 2 GB). Files a preparation writes are named <c>.&lt;sha256&gt;.[...]&lt;pid&gt;.[...]</c>: while that process
/// lives they are in use and never removed; after it died they are left-overs (status Partial).
/// </summary>
public static partial class PreparedModelCache
{
    [GeneratedRegex(@"^(?<sha>[0-9A-Fa-f]{64})\.(?<version>[A-Za-z0-9]+)\.onnx$")]
    private static partial Regex EntryName();

    [GeneratedRegex(@"^\.?(?<sha>[0-9A-Fa-f]{64})\.")]
    private static partial Regex ShaPrefix();

    /// <summary>The entries of the cache folder (<paramref name="folder"/>, or the current one), oldest use first.</summary>
    public static List<PtqCacheEntry> List(string? folder = null)
    {
        folder ??= ModelPreparer.CacheFolder;
        var result = new List<PtqCacheEntry>();
        if (!Directory.Exists(folder)) return result;
        var files = new DirectoryInfo(folder).GetFiles();
        var entries = new Dictionary<string, PtqCacheEntry>(StringComparer.Ordinal);
        // Entries first, then every other file by the entry it belongs to (its name's prefix) or by its source hash.
        foreach (var f in files)
        {
            var m = EntryName().Match(f.Name);
            if (!m.Success) continue;
            var version = m.Groups["version"].Value;
            var entry = new PtqCacheEntry
            {
                Sha256 = m.Groups["sha"].Value.ToUpperInvariant(),
                Version = version,
                Status = version == ModelPreparer.CacheVersion ? "Ready" : "Stale",
                Path = f.FullName,
                Folder = folder,
            };
            Add(entry, f, null);
            entries[f.Name] = entry;
            result.Add(entry);
        }
        var loose = new Dictionary<string, PtqCacheEntry>(StringComparer.Ordinal);
        foreach (var f in files)
        {
            if (entries.ContainsKey(f.Name)) continue;
            var owner = entries.Values.FirstOrDefault(e => f.Name.StartsWith(System.IO.Path.GetFileName(e.Path) + ".", StringComparison.Ordinal));
            int? pid = f.Name.StartsWith('.') ? WriterProcess(f.Name) : null;
            if (owner is not null && pid is null) { Add(owner, f, null); continue; }
            var sha = ShaPrefix().Match(f.Name);
            if (!sha.Success) continue;   // not the cache's file
            var key = sha.Groups["sha"].Value.ToUpperInvariant();
            // A file being written (or left by a preparation that died) belongs to its source's entry when there is
            // one, else to a partial entry of that source.
            var target = owner ?? result.FirstOrDefault(e => e.Sha256 == key && e.Status is "Ready" or "InUse" && e.Version == ModelPreparer.CacheVersion);
            if (target is null && !loose.TryGetValue(key, out target))
            {
                target = new PtqCacheEntry { Sha256 = key, Version = ModelPreparer.CacheVersion, Status = "Partial", Path = f.FullName, Folder = folder };
                loose[key] = target;
                result.Add(target);
            }
            Add(target, f, pid);
        }
        // A partial entry's side data written by a live preparation is in use too.
        foreach (var e in result)
            if (e.WriterProcessIds.Count > 0) e.Status = "InUse";
        result.Sort((a, b) => a.LastUseTime.CompareTo(b.LastUseTime));
        return result;
    }

    static void Add(PtqCacheEntry entry, FileInfo f, int? pid)
    {
        entry.Files.Add(f.FullName);
        entry.SizeBytes += f.Length;
        var write = f.LastWriteTime;
        var use = f.LastAccessTime > write ? f.LastAccessTime : write;
        if (write > entry.LastWriteTime) entry.LastWriteTime = write;
        if (use > entry.LastUseTime) entry.LastUseTime = use;
        if (pid is int p && IsAlive(p) && !entry.WriterProcessIds.Contains(p)) entry.WriterProcessIds.Add(p);
    }

    /// <summary>The process id in the name of a file being written: the first all-digit part after the hash.</summary>
    internal static int? WriterProcess(string name)
    {
        foreach (var part in name.TrimStart('.').Split('.').Skip(1))
            if (part.Length > 0 && part.All(char.IsAsciiDigit) && int.TryParse(part, out var pid)) return pid;
        return null;
    }

    static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>Removes an entry's files (the model and its side data, or a dead preparation's left-overs). An entry
    /// that a live process is writing is refused (error CacheEntryInUse) and nothing of it is removed. Returns the
    /// bytes freed.</summary>
    public static long Remove(PtqCacheEntry entry)
    {
        // Read the folder again: the entry may have changed since it was listed.
        var now = List(entry.Folder).FirstOrDefault(e => e.Sha256 == entry.Sha256 && e.Version == entry.Version && e.Status == entry.Status
            || PlatformPaths.Same(e.Path, entry.Path));
        if (now is null) return 0;
        if (now.WriterProcessIds.Count > 0)
            throw new PtqException("CacheEntryInUse", PtqErrorKind.ResourceExists,
                $"The cache entry of {now.Sha256} is being written by process {string.Join(", ", now.WriterProcessIds)}; it is left as it is.", now.Path);
        long freed = 0;
        foreach (var file in now.Files)
        {
            try
            {
                var length = new FileInfo(file).Length;
                File.Delete(file);
                freed += length;
            }
            catch (FileNotFoundException) { }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new PtqException("CacheEntryNotRemoved", PtqErrorKind.WriteError, $"Cannot remove '{file}': {ex.Message}", file, ex);
            }
        }
        return freed;
    }

    /// <summary>Marks an entry as used now (its last access time), so that Clear-PtqCache -OlderThan keeps what is in use
    /// whatever the file system's atime policy.</summary>
    internal static void Touch(string path)
    {
        try { File.SetLastAccessTime(path, DateTime.Now); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }
}
