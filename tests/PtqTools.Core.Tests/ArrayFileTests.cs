using System.IO.Compression;
using PtqTools.Core.Data;
using Xunit;
using PtqTools.Core.Model;

namespace PtqTools.Core.Tests;

/// <summary>CSV and .npz data sets read through the same reader as .npy, against the values written.</summary>
public sealed class ArrayFileTests
{
    static readonly float[] Values = { 1.5f, -2f, 3.25f, 0f, 1e-3f, 7f };

    static List<Sample> Samples(PtqDataSet ds)
    {
        using var reader = new SampleReader(ds);
        return reader.Read(CancellationToken.None).ToList();
    }

    [Fact]
    public void CsvRowsAreSamplesAfterAnOptionalHeader()
    {
        using var dir = new TempDir();
        var csv = dir.File("data.csv");
        File.WriteAllText(csv, "a,b,c\n1.5,-2,3.25\n\n0,0.001,7\n");
        var ds = DataSetReader.FromNpy(new[] { csv }, new PtqDataSet());
        Assert.Equal(2, ds.Count);
        Assert.Equal(new[] { 3 }, ds.SampleShape);
        var samples = Samples(ds);
        Assert.Equal(Values, samples.SelectMany(s => s.Data));
        Assert.Equal("data.csv[1]", samples[1].Id);
    }

    [Theory]
    [InlineData("1,2\n3\n", "has 1 values")]
    [InlineData("1,2\n3,x\n", "not a number")]
    public void BadCsvGivesAClearError(string text, string message)
    {
        using var dir = new TempDir();
        var csv = dir.File("bad.csv");
        File.WriteAllText(csv, text);
        var ex = Assert.Throws<PtqException>(() => DataSetReader.FromNpy(new[] { csv }, new PtqDataSet()));
        Assert.Equal("CsvNotReadable", ex.ErrorId);
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void NpzWithOneArrayIsRead()
    {
        using var dir = new TempDir();
        var npy = dir.File("x.npy");
        NpyFile.Write(npy, Values, new[] { 2, 1, 3 });
        var npz = dir.File("data.npz");
        using (var zip = ZipFile.Open(npz, ZipArchiveMode.Create)) zip.CreateEntryFromFile(npy, "x.npy", CompressionLevel.Optimal);
        var ds = DataSetReader.FromNpy(new[] { npz }, new PtqDataSet());
        Assert.Equal(new[] { 1, 3 }, ds.SampleShape);
        Assert.Equal(Values, Samples(ds).SelectMany(s => s.Data));
        // Two arrays: one input cannot take both.
        var two = dir.File("two.npz");
        using (var zip = ZipFile.Open(two, ZipArchiveMode.Create)) { zip.CreateEntryFromFile(npy, "x.npy"); zip.CreateEntryFromFile(npy, "y.npy"); }
        Assert.Equal("NpzNotReadable", Assert.Throws<PtqException>(() => DataSetReader.FromNpy(new[] { two }, new PtqDataSet())).ErrorId);
    }
}
