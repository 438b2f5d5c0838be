namespace PtqTools.Core;

/// <summary>Opens the files of a data set, which may have changed since it was described.</summary>
internal static class DataFiles
{
    public static FileStream OpenRead(string path)
    {
        try { return File.OpenRead(path); }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException) { throw Missing(path, ex); }
    }

    public static byte[] ReadAllBytes(string path)
    {
        try { return File.ReadAllBytes(path); }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException) { throw Missing(path, ex); }
    }

    static PtqException Missing(string path, Exception ex) => new("DataSetFileMissing", PtqErrorKind.ObjectNotFound,
        $"'{path}' no longer exists: it was removed after the data set was described.", path, ex);
}
