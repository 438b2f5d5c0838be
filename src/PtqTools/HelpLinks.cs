namespace PtqTools;

/// <summary>Where the help lives online: each cmdlet's HelpUri (Get-Help -Online) is its page of docs/en-US at the
/// project's URL, the ProjectUri of PtqTools.psd1 (a test checks that they agree).</summary>
internal static class HelpLinks
{
    public const string ProjectUri = "https://github.com/ptqtools/PtqTools";
    public const string Docs = ProjectUri + "/blob/main/docs/en-US/";
}
