using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace PtqTools.Core.Data;

/// <summary>Reads NumPy .npy arrays (little-endian float32/float64/uint8/int8/int32/int64, C order).</summary>
public static partial class NpyFile
{
    public static (float[] Data, int[] Shape) Read(string path)
    {
        using var stream = DataFiles.OpenRead(path);
        return Read(stream, path);
    }

    public static (float[] Data, int[] Shape) Read(Stream stream, string source)
    {
        try { return ReadCore(stream, source); }
        catch (EndOfStreamException) { throw Bad(source, "it is truncated"); }
    }

    static (float[] Data, int[] Shape) ReadCore(Stream stream, string source)
    {
        using var reader = new BinaryReader(stream, Encoding.ASCII, leaveOpen: true);
        var magic = reader.ReadBytes(6);
        if (magic.Length < 6 || magic[0] != 0x93 || Encoding.ASCII.GetString(magic, 1, 5) != "NUMPY")
            throw Bad(source, "it does not start with the .npy magic bytes");
        int major = reader.ReadByte();
        reader.ReadByte();
        int headerLength = major == 1 ? reader.ReadUInt16() : (int)reader.ReadUInt32();
        if (headerLength <= 0 || headerLength > 1 << 20) throw Bad(source, "its header length is invalid");
        var header = Encoding.ASCII.GetString(reader.ReadBytes(headerLength));
        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !shapeMatch.Success) throw Bad(source, "its header has no dtype or shape");
        if (fortran.Success && fortran.Groups[1].Value == "True") throw Bad(source, "it is in Fortran order");
        var shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, out var d) && d >= 0 ? d : throw Bad(source, $"its shape has an invalid dimension '{s}'")).ToArray();
        long count = 1;
        try { foreach (var d in shape) count = checked(count * d); }
        catch (OverflowException) { throw Bad(source, "its shape's element count overflows"); }
        var dtype = descr.Groups[1].Value;
        int size = dtype switch { "<f4" => 4, "<f8" => 8, "|u1" or "u1" => 1, "|i1" or "i1" => 1, "<i4" => 4, "<i8" => 8, _ => 0 };
        if (size == 0) throw new PtqException("NpyTypeNotSupported", PtqErrorKind.NotSupported, $"'{source}' holds dtype '{dtype}'; float32, float64, uint8, int8, int32 and int64 are read.", source);
        if (count * size > int.MaxValue) throw Bad(source, "it is larger than 2 GB");
        // A header may claim more than the file holds: refused before the claimed size is allocated.
        if (stream.CanSeek && count * size > stream.Length - stream.Position)
            throw Bad(source, $"it is truncated ({stream.Length - stream.Position} of {count * size} data bytes)");
        var bytes = reader.ReadBytes((int)(count * size));
        if (bytes.Length != count * size) throw Bad(source, $"it is truncated ({bytes.Length} of {count * size} data bytes)");
        var data = new float[count];
        for (int i = 0; i < count; i++)
        {
            var span = bytes.AsSpan(i * size);
            data[i] = dtype switch
            {
                "<f4" => BinaryPrimitives.ReadSingleLittleEndian(span),
                "<f8" => (float)BinaryPrimitives.ReadDoubleLittleEndian(span),
                "<i4" => BinaryPrimitives.ReadInt32LittleEndian(span),
                "<i8" => BinaryPrimitives.ReadInt64LittleEndian(span),
                "|i1" or "i1" => (sbyte)span[0],
                _ => span[0],
            };
        }
        return (data, shape);
    }

    /// <summary>Writes float32 .npy (used by tests and by users who export prepared samples).</summary>
    public static void Write(string path, float[] data, int[] shape)
    {
        var header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream);
        writer.Write((byte)0x93);
        writer.Write(Encoding.ASCII.GetBytes("NUMPY"));
        writer.Write((byte)1);
        writer.Write((byte)0);
        writer.Write((ushort)header.Length);
        writer.Write(Encoding.ASCII.GetBytes(header));
        foreach (var v in data) writer.Write(v);
    }

    static PtqException Bad(string source, string why) =>
        new("NpyNotReadable", PtqErrorKind.InvalidData, $"'{source}' is not a readable .npy file: {why}.", source);

    [GeneratedRegex(@"'descr'\s*:\s*'([^']+)'")] private static partial Regex DescrPattern();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranPattern();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapePattern();
}

/// <summary>Reads IDX files (MNIST, Fashion-MNIST), gzipped or not.</summary>
public static class IdxFile
{
    public static (byte[] Data, int[] Shape) Read(string path)
    {
        using var file = DataFiles.OpenRead(path);
        Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
        using var _ = stream;
        var head = new byte[4];
        try
        {
            stream.ReadExactly(head);
            if (head[0] != 0 || head[1] != 0 || head[2] != 0x08)
                throw Bad(path, "only unsigned-byte IDX files (magic 0x0000080N) are read");
            int rank = head[3];
            if (rank is < 1 or > 4) throw Bad(path, $"rank {rank} is out of range");
            var shape = new int[rank];
            for (int i = 0; i < rank; i++)
            {
                stream.ReadExactly(head);
                shape[i] = BinaryPrimitives.ReadInt32BigEndian(head);
                if (shape[i] < 0) throw Bad(path, "it has a negative dimension");
            }
            long count = 1;
            foreach (var d in shape) count = checked(count * d);
            if (count > int.MaxValue) throw Bad(path, "it is larger than 2 GB");
            // A header may claim more than the file holds: check before allocating (a compressed file is read
            // in pieces, so a short one never gets its claimed size allocated).
            if (stream == file && count > file.Length - file.Position) throw Bad(path, "it is truncated");
            byte[] data;
            if (stream == file) { data = new byte[count]; stream.ReadExactly(data); }
            else
            {
                using var buffer = new MemoryStream();
                var chunk = new byte[1 << 20];
                while (buffer.Length < count)
                {
                    int n = stream.Read(chunk, 0, (int)Math.Min(chunk.Length, count - buffer.Length));
                    if (n == 0) throw new EndOfStreamException();
                    buffer.Write(chunk, 0, n);
                }
                data = buffer.ToArray();
            }
            return (data, shape);
        }
        catch (EndOfStreamException)
        {
            throw Bad(path, "it is truncated");
        }
        catch (InvalidDataException ex)
        {
            throw Bad(path, ex.Message);
        }
    }

    static PtqException Bad(string path, string why) =>
        new("IdxNotReadable", PtqErrorKind.InvalidData, $"'{path}' is not a readable IDX file: {why}.", path);
}
