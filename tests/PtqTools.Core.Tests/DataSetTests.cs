using PtqTools.Core.Data;
using SkiaSharp;
using Xunit;
using PtqTools.Core.Model;

namespace PtqTools.Core.Tests;

public class DataSetTests
{
    static readonly SKColor CatColour = new(200, 100, 50);
    static readonly SKColor DogColour = new(10, 220, 130);

    static void WritePng(string path, int width, int height, SKColor colour)
    {
        using var bitmap = new SKBitmap(width, height);
        bitmap.Erase(colour);
        using var image = SKImage.FromBitmap(bitmap);
        using var png = image.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, png.ToArray());
    }

    /// <summary>cat/ (2 images) and dog/ (3 images), 10x6 pixels of one colour each.</summary>
    static TempDir ImageFolder()
    {
        var dir = new TempDir();
        foreach (var (cls, n, colour) in new[] { ("dog", 3, DogColour), ("cat", 2, CatColour) })
        {
            Directory.CreateDirectory(dir.File(cls));
            for (int i = 0; i < n; i++) WritePng(Path.Combine(dir.File(cls), $"{cls}{i}.png"), 10, 6, colour);
        }
        return dir;
    }

    static List<Sample> ReadAll(PtqDataSet ds)
    {
        using var reader = new SampleReader(ds);
        return reader.Read(CancellationToken.None).ToList();
    }

    [Fact]
    public void ImageFolder_CountsLabelsAndNormalises()
    {
        using var dir = ImageFolder();
        float[] mean = { 0.485f, 0.456f, 0.406f }, std = { 0.229f, 0.224f, 0.225f };
        var ds = DataSetReader.FromImageFolder(dir.Path, new PtqDataSet { Resize = 4, Mean = mean, Std = std });
        Assert.Equal("ImageFolder", ds.Kind);
        Assert.Equal(5, ds.Count);
        Assert.Equal(new[] { "cat", "dog" }, ds.Classes);
        Assert.True(ds.HasLabels);
        Assert.Equal(2, ds.ClassCount);
        Assert.Equal(new[] { 3, 4, 4 }, ds.SampleShape);   // NCHW after -Resize 4 of a 10x6 image

        var samples = ReadAll(ds);
        Assert.Equal(5, samples.Count);
        Assert.Equal(new[] { 0, 0, 1, 1, 1 }, samples.Select(s => s.Label));
        foreach (var s in samples)
        {
            Assert.Equal(new[] { 3, 4, 4 }, s.Shape);
            Assert.Equal(3 * 4 * 4, s.Data.Length);
            var colour = s.Label == 0 ? CatColour : DogColour;
            byte[] rgb = { colour.Red, colour.Green, colour.Blue };
            for (int c = 0; c < 3; c++)
            {
                float expected = (rgb[c] / 255f - mean[c]) / std[c];
                // A uniform image stays uniform through the resize; each channel plane holds its own value.
                for (int k = 0; k < 16; k++)
                    Assert.True(Math.Abs(s.Data[c * 16 + k] - expected) < 1e-4, $"{s.Id} channel {c}: {s.Data[c * 16 + k]} vs {expected}");
            }
        }
    }

    [Fact]
    public void ImageFolder_HonoursLayoutChannelOrderSkipAndCount()
    {
        using var dir = ImageFolder();
        var ds = DataSetReader.FromImageFolder(dir.Path, new PtqDataSet { Layout = "NHWC", ChannelOrder = "BGR", Scale = 1, Skip = 1, Count = 2 });
        Assert.Equal(2, ds.Count);
        Assert.Equal(new[] { 6, 10, 3 }, ds.SampleShape);   // no resize: H, W, C
        var samples = ReadAll(ds);
        Assert.Equal(new[] { 0, 1 }, samples.Select(s => s.Label));   // cat1, dog0
        Assert.Equal(new[] { 1, 2 }, samples.Select(s => s.Index));
        var first = samples[0].Data;
        Assert.Equal(new float[] { CatColour.Blue, CatColour.Green, CatColour.Red }, first[..3]);
        Assert.Equal(new float[] { DogColour.Blue, DogColour.Green, DogColour.Red }, samples[1].Data[^3..]);
    }

    [Fact]
    public void ImageFolder_WithANonImageFile_IsRefused()
    {
        using var dir = ImageFolder();
        File.WriteAllText(dir.File(Path.Combine("dog", "notes.txt")), "not an image");
        var ex = Check.Throws("DataSetFileNotImage", () => DataSetReader.FromImageFolder(dir.Path, new PtqDataSet()));
        Assert.EndsWith("notes.txt", (string)ex.Target!);
    }

    [Fact]
    public void UndecodablePng_FailsWhenRead()
    {
        using var dir = ImageFolder();
        var bad = dir.File(Path.Combine("dog", "zz-broken.png"));
        var junk = new byte[300];
        new Random(41).NextBytes(junk);
        File.WriteAllBytes(bad, junk);
        // Describing the folder decodes only the first image.
        var ds = DataSetReader.FromImageFolder(dir.Path, new PtqDataSet { Resize = 4 });
        Assert.Equal(6, ds.Count);
        using var reader = new SampleReader(ds);
        int read = 0;
        var ex = Assert.Throws<PtqException>(() => { foreach (var _ in reader.Read(CancellationToken.None)) read++; });
        Assert.Equal("ImageNotDecodable", ex.ErrorId);
        Assert.Equal(Path.GetFullPath(bad), ex.Target);
        Assert.Equal(5, read);
    }

    [Fact]
    public void Idx_ReadsLabelsAndPixels()
    {
        using var dir = new TempDir();
        var pixels = Enumerable.Range(0, 3 * 2 * 5).Select(i => (byte)(i * 8)).ToArray();
        IdxFileTests.Write(dir.File("small-images-idx3-ubyte.gz"), IdxFileTests.IdxBytes(pixels, 3, 2, 5));
        IdxFileTests.Write(dir.File("small-labels-idx1-ubyte.gz"), IdxFileTests.IdxBytes(new byte[] { 4, 0, 2 }, 3));
        var ds = DataSetReader.FromIdx(dir.File("small-images-idx3-ubyte.gz"), null, new PtqDataSet { Channels = 1 });
        Assert.Equal(3, ds.Count);
        Assert.True(ds.HasLabels);
        Assert.Equal(5, ds.ClassCount);
        Assert.Equal(new[] { 1, 2, 5 }, ds.SampleShape);
        var samples = ReadAll(ds);
        Assert.Equal(new[] { 4, 0, 2 }, samples.Select(s => s.Label));
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 10; k++)
                Assert.True(Math.Abs(samples[i].Data[k] - pixels[i * 10 + k] / 255f) < 1e-4, $"image {i} pixel {k}: {samples[i].Data[k]}");
    }

    [Fact]
    public void Arrays_CheckShapeAndCount()
    {
        var random = new Random(42);
        var samples = Enumerable.Range(0, 4).Select(_ => Check.RandomFloats(random, 6)).ToArray();
        var ds = DataSetReader.FromArrays(samples, new[] { 2, 3 }, new[] { 0, 2, 1, 2 }, new PtqDataSet());
        Assert.Equal("Array", ds.Kind);
        Assert.Equal(4, ds.Count);
        Assert.Equal(3, ds.ClassCount);
        Assert.Equal(new[] { 2, 3 }, ds.SampleShape);
        var read = ReadAll(ds);
        // Array samples are taken as given: no scale, mean or std.
        Assert.Equal(samples, read.Select(s => s.Data));

        samples[2] = new float[5];
        var ex = Check.Throws("DataShapeMismatch", () => DataSetReader.FromArrays(samples, new[] { 2, 3 }, null, new PtqDataSet()));
        Assert.Equal(2, ex.Target);
        Check.Throws("DataSetEmpty", () => DataSetReader.FromArrays(Array.Empty<float[]>(), new[] { 2, 3 }, null, new PtqDataSet()));
        Check.Throws("DataSetEmpty", () => DataSetReader.FromArrays(new[] { new float[6] }, new[] { 2, 3 }, null, new PtqDataSet { Skip = 1 }));
        Check.Throws("DataLabelsMismatch", () => DataSetReader.FromArrays(new[] { new float[6] }, new[] { 2, 3 }, new[] { 0, 1 }, new PtqDataSet()));
    }

    [Fact]
    public void EmptyImageFolder_IsEmpty()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("only-a-class"));
        Check.Throws("DataSetEmpty", () => DataSetReader.FromImageFolder(dir.Path, new PtqDataSet()));
        Check.Throws("DataSetNotFound", () => DataSetReader.FromImageFolder(dir.File("missing"), new PtqDataSet()));
    }
}
