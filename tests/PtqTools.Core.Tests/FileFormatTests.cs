using System.Buffers.Binary;
using System.IO.Compression;
using PtqTools.Core.Data;
using Xunit;

namespace PtqTools.Core.Tests;

public class NpyFileTests
{
    [Theory]
    [InlineData(new[] { 7 })]
    [InlineData(new[] { 2, 3, 4 })]
    [InlineData(new[] { 0, 5 })]
    public void WriteThenRead_RoundTrips(int[] shape)
    {
        using var dir = new TempDir();
        var count = shape.Aggregate(1, (a, d) => a * d);
        var data = Check.RandomFloats(new Random(31), count, 100f);
        var path = dir.File("a.npy");
        NpyFile.Write(path, data, shape);
        var bytes = File.ReadAllBytes(path);
        // The header is padded so that the data starts on a 64-byte boundary, as NumPy writes it.
        Assert.Equal(0, (bytes.Length - count * 4) % 64);
        var (read, readShape) = NpyFile.Read(path);
        Assert.Equal(shape, readShape);
        Assert.Equal(data, read);
    }

    [Fact]
    public void Read_ConvertsOtherDtypes()
    {
        using var dir = new TempDir();
        var path = dir.File("i8.npy");
        File.WriteAllBytes(path, NpyBytes("|i1", "(4,)", new byte[] { 0x80, 0xFF, 0, 5 }));
        var (data, shape) = NpyFile.Read(path);
        Assert.Equal(new[] { 4 }, shape);
        Assert.Equal(new[] { -128f, -1f, 0f, 5f }, data);

        var f8 = new byte[16];
        BinaryPrimitives.WriteDoubleLittleEndian(f8, 1.5);
        BinaryPrimitives.WriteDoubleLittleEndian(f8.AsSpan(8), -2.25);
        File.WriteAllBytes(path, NpyBytes("<f8", "(1, 2)", f8));
        Assert.Equal(new[] { 1.5f, -2.25f }, NpyFile.Read(path).Data);
    }

    static byte[] NpyBytes(string descr, string shape, byte[] payload, bool fortran = false)
    {
        var header = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {shape}, }}\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY"u8.ToArray());
        bytes.Add(1); bytes.Add(0);
        bytes.Add((byte)(header.Length & 0xFF)); bytes.Add((byte)(header.Length >> 8));
        bytes.AddRange(System.Text.Encoding.ASCII.GetBytes(header));
        bytes.AddRange(payload);
        return bytes.ToArray();
    }

    [Fact]
    public void BadMagic_IsNotReadable()
    {
        using var dir = new TempDir();
        var path = dir.File("bad.npy");
        NpyFile.Write(path, new float[] { 1, 2 }, new[] { 2 });
        var bytes = File.ReadAllBytes(path);
        bytes[1] = (byte)'X';
        File.WriteAllBytes(path, bytes);
        Check.Throws("NpyNotReadable", () => NpyFile.Read(path));
        File.WriteAllText(path, "just some text that is long enough");
        Check.Throws("NpyNotReadable", () => NpyFile.Read(path));
        File.WriteAllBytes(path, NpyBytes("<f4", "(2,)", new byte[8], fortran: true));
        Check.Throws("NpyNotReadable", () => NpyFile.Read(path));
    }

    [Fact]
    public void EveryTruncation_IsNotReadable()
    {
        using var dir = new TempDir();
        var path = dir.File("full.npy");
        NpyFile.Write(path, Check.RandomFloats(new Random(32), 6, 1f), new[] { 2, 3 });
        var bytes = File.ReadAllBytes(path);
        var cut = dir.File("cut.npy");
        for (int length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(cut, bytes.AsSpan(0, length).ToArray());
            var ex = Assert.Throws<PtqException>(() => NpyFile.Read(cut));
            Assert.True(ex.ErrorId == "NpyNotReadable", $"A file cut to {length} of {bytes.Length} bytes gave {ex.ErrorId}: {ex.Message}");
        }
    }
}

public class IdxFileTests
{
    /// <summary>An unsigned-byte IDX file: magic 0x0000080N, big-endian dimensions, then the bytes.</summary>
    internal static byte[] IdxBytes(byte[] data, params int[] shape)
    {
        var bytes = new byte[4 + 4 * shape.Length + data.Length];
        bytes[2] = 0x08;
        bytes[3] = (byte)shape.Length;
        for (int i = 0; i < shape.Length; i++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), shape[i]);
        data.CopyTo(bytes, 4 + 4 * shape.Length);
        return bytes;
    }

    internal static void Write(string path, byte[] content)
    {
        if (path.EndsWith(".gz", StringComparison.Ordinal))
        {
            using var file = File.Create(path);
            using var gz = new GZipStream(file, CompressionLevel.Optimal);
            gz.Write(content);
        }
        else File.WriteAllBytes(path, content);
    }

    [Theory]
    [InlineData("images-idx3-ubyte")]
    [InlineData("images-idx3-ubyte.gz")]
    public void Read_PlainAndGzipped(string name)
    {
        using var dir = new TempDir();
        var data = Enumerable.Range(0, 2 * 3 * 4).Select(i => (byte)(i * 10)).ToArray();
        var path = dir.File(name);
        Write(path, IdxBytes(data, 2, 3, 4));
        var (read, shape) = IdxFile.Read(path);
        Assert.Equal(new[] { 2, 3, 4 }, shape);
        Assert.Equal(data, read);
    }

    [Theory]
    [InlineData("t-idx3-ubyte")]
    [InlineData("t-idx3-ubyte.gz")]
    public void EveryTruncation_IsNotReadable(string name)
    {
        using var dir = new TempDir();
        var content = IdxBytes(Enumerable.Range(0, 24).Select(i => (byte)i).ToArray(), 2, 3, 4);
        var path = dir.File(name);
        for (int length = 0; length < content.Length; length++)
        {
            Write(path, content.AsSpan(0, length).ToArray());
            var ex = Assert.Throws<PtqException>(() => IdxFile.Read(path));
            Assert.True(ex.ErrorId == "IdxNotReadable", $"Cut to {length}: {ex.ErrorId}: {ex.Message}");
        }
        // A gzip stream cut short inside its compressed bytes (a cut that only loses the 8-byte CRC/size trailer
        // still yields every IDX byte, and the reader does not verify the trailer).
        if (name.EndsWith(".gz", StringComparison.Ordinal))
        {
            Write(path, content);
            var gz = File.ReadAllBytes(path);
            foreach (var length in new[] { 5, 12, gz.Length / 2 })
            {
                File.WriteAllBytes(path, gz.AsSpan(0, length).ToArray());
                var ex = Assert.Throws<PtqException>(() => IdxFile.Read(path));
                Assert.True(ex.ErrorId == "IdxNotReadable", $"gzip cut to {length}: {ex.ErrorId}: {ex.Message}");
            }
        }
    }

    [Fact]
    public void WrongMagic_IsNotReadable()
    {
        using var dir = new TempDir();
        var path = dir.File("x-idx3-ubyte");
        var content = IdxBytes(new byte[4], 1, 2, 2);
        content[2] = 0x0D;   // float IDX: not read
        File.WriteAllBytes(path, content);
        Check.Throws("IdxNotReadable", () => IdxFile.Read(path));
        var notGzip = dir.File("y-idx3-ubyte.gz");
        File.WriteAllBytes(notGzip, IdxBytes(new byte[4], 1, 2, 2));   // plain bytes under a .gz name
        Check.Throws("IdxNotReadable", () => IdxFile.Read(notGzip));
    }
}
