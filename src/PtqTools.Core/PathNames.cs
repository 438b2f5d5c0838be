namespace PtqTools.Core;

/// <summary>File paths compared as the platform's file system compares them: Windows' (and macOS's default) file
/// system does not tell upper from lower case, so 'C:\m\a.onnx' and 'c:\M\A.onnx' are one file there.</summary>
public static class PathNames
{
    public static StringComparison Comparison { get; } =
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    /// <summary>True when two full paths name the same file or folder on this platform.</summary>
    public static bool Same(string a, string b) => string.Equals(a, b, Comparison);
}
