using PtqTools.Core;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The prepared-model cache's listing and removal (Get-PtqCache, Clear-PtqCache), on a folder of its own.</summary>
public class PreparedModelCacheTests
{
    static readonly string ShaA = new('A', 64), ShaB = new('B', 64), ShaC = new('C', 64), ShaD = new('D', 64);

    static string Write(TempDir dir, string name, int bytes)
    {
        var path = dir.File(name);
        File.WriteAllBytes(path, new byte[bytes]);
        return path;
    }

    [Fact]
    public void Lists_entries_with_side_files_and_tells_stale_partial_and_in_use_apart()
    {
        using var dir = new TempDir();
        var entry = Write(dir, $"{ShaA}.{ModelPreparer.CacheVersion}.onnx", 100);
        var side = Write(dir, $"{ShaA}.{ModelPreparer.CacheVersion}.onnx.{Guid.NewGuid():N}.data", 1000);
        Write(dir, $"{ShaB}.p1.onnx", 10);
        Write(dir, $".{ShaC}.{int.MaxValue - 1}.{Guid.NewGuid():N}.onnx", 20);   // no such process
        var live = Write(dir, $".{ShaD}.{Environment.ProcessId}.{Guid.NewGuid():N}.onnx", 30);
        Write(dir, "unrelated.txt", 5);

        var entries = PreparedModelCache.List(dir.Path).ToDictionary(e => e.Sha256);
        Assert.Equal(4, entries.Count);
        Assert.Equal("Ready", entries[ShaA].Status);
        Assert.Equal(1100, entries[ShaA].SizeBytes);
        Assert.Equal(new[] { entry, side }.OrderBy(x => x), entries[ShaA].Files.OrderBy(x => x));
        Assert.Equal("Stale", entries[ShaB].Status);
        Assert.Equal("Partial", entries[ShaC].Status);
        Assert.Equal("InUse", entries[ShaD].Status);
        Assert.Equal(new[] { Environment.ProcessId }, entries[ShaD].WriterProcessIds);

        Assert.Equal(1100, PreparedModelCache.Remove(entries[ShaA]));
        Assert.False(File.Exists(entry));
        Assert.False(File.Exists(side));
        var refused = Assert.Throws<PtqException>(() => PreparedModelCache.Remove(entries[ShaD]));
        Assert.Equal("CacheEntryInUse", refused.ErrorId);
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(dir.File("unrelated.txt")));
    }

    [Fact]
    public void A_missing_folder_is_an_empty_cache() =>
        Assert.Empty(PreparedModelCache.List(Path.Combine(Path.GetTempPath(), "ptq-none-" + Guid.NewGuid().ToString("N"))));

    [Theory]
    [InlineData(".AAAA.123.abc.onnx", 123)]
    [InlineData(".AAAA.p6.onnx.456.0123abcd.tmp", 456)]
    [InlineData("AAAA.p6.onnx", null)]
    public void Finds_the_writer_process_in_a_temporary_name(string name, int? pid) =>
        Assert.Equal(pid, PreparedModelCache.WriterProcess(name));

    [Fact]
    public void List_text_is_the_items_joined()
    {
        Assert.Equal("a; b", new ValueList<string>(new[] { "a", "b" }).ToString());
        Assert.Equal("1, 2.5", new ValueList<double>(new[] { 1.0, 2.5 }).ToString());
        Assert.Equal("[1, 2], [3]", new ValueList<float[]>(new[] { new[] { 1f, 2f }, new[] { 3f } }).ToString());
        Assert.Equal("Conv:2; Relu:1", new ValueList<OpTypeCount>(new[] { new OpTypeCount { OpType = "Conv", Count = 2 }, new OpTypeCount { OpType = "Relu", Count = 1 } }).ToString());
        ValueList<int>? none = (int[]?)null;
        Assert.Null(none);
    }
}
