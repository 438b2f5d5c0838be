using System.Globalization;
using System.IO.Compression;

namespace PtqTools.Core.Data;

/// <summary>
/// Files that hold samples as one array whose first axis counts them: .npy, .npz (one array: single-input models)
/// and CSV (one sample per row, numbers only, an optional header row). The "Npy" data set kind reads all three.
/// </summary>
public static class ArrayFiles
{
    public static bool IsArrayFile(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".npy" or ".npz" or ".csv";

    public static (float[] Data, int[] Shape) Read(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".npz" => ReadNpz(path),
        ".csv" => ReadCsv(path),
        _ => NpyFile.Read(path),
    };

    /// <summary>The one array of an .npz archive (zip of .npy members, compressed or not).</summary>
    public static (float[] Data, int[] Shape) ReadNpz(string path)
    {
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (InvalidDataException ex)
        {
            throw new PtqException("NpzNotReadable", PtqErrorKind.InvalidData, $"'{path}' is not an .npz archive: {ex.Message}", path, ex);
        }
        using (zip)
        {
            var arrays = zip.Entries.Where(e => e.FullName.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)).ToList();
            if (arrays.Count != 1)
                throw new PtqException("NpzNotReadable", PtqErrorKind.InvalidData,
                    $"'{path}' holds {arrays.Count} arrays ({string.Join(", ", arrays.Select(a => a.FullName))}); a data set of one input needs exactly one.", path);
            using var stream = arrays[0].Open();
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            buffer.Position = 0;
            return NpyFile.Read(buffer, $"{path}:{arrays[0].FullName}");
        }
    }

    /// <summary>One sample per row of numbers (comma-separated, invariant culture); a first row that is not all
    /// numbers is a header. Rows must have the same length.</summary>
    public static (float[] Data, int[] Shape) ReadCsv(string path)
    {
        var values = new List<float>();
        int columns = -1, rows = 0, lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Trim().Length == 0) continue;
            var cells = line.Split(',');
            var row = new float[cells.Length];
            bool numeric = true;
            for (int i = 0; i < cells.Length && numeric; i++)
                numeric = float.TryParse(cells[i].Trim().Trim('"'), NumberStyles.Float, CultureInfo.InvariantCulture, out row[i]);
            if (!numeric)
            {
                if (rows == 0 && columns < 0) { columns = cells.Length; continue; }   // header
                throw new PtqException("CsvNotReadable", PtqErrorKind.InvalidData, $"Line {lineNumber} of '{path}' has a cell that is not a number.", path);
            }
            if (columns >= 0 && cells.Length != columns)
                throw new PtqException("CsvNotReadable", PtqErrorKind.InvalidData, $"Line {lineNumber} of '{path}' has {cells.Length} values; the rows before it have {columns}.", path);
            columns = cells.Length;
            values.AddRange(row);
            rows++;
        }
        if (rows == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"'{path}' has no rows of numbers.", path);
        return (values.ToArray(), new[] { rows, columns });
    }
}
