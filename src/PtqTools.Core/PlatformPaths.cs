namespace PtqTools.Core;

/// <summary>
/// How file paths compare on the running platform: case-insensitively on Windows and macOS (NTFS and APFS as they
/// are set up by default), case-sensitively elsewhere. Every "is this the same file / inside this folder" check
/// goes through here, so that C:\Models\a.onnx and c:\models\A.onnx are one file on Windows.
/// </summary>
public static class PlatformPaths
{
    public static StringComparison Comparison { get; } =
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    public static StringComparer Comparer { get; } =
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;

    /// <summary>Whether two full paths name the same file or folder (trailing separators aside).</summary>
    public static bool Same(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(a), Path.TrimEndingDirectorySeparator(b), Comparison);
}
