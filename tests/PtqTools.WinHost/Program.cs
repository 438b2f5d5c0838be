// Runs one PowerShell script file in PowerShell 7.6.9 hosted by this program, as pwsh -NoProfile -NonInteractive
// -File would: PtqTools.WinHost.exe <script.ps1> [arguments...]. Exit code: the script's (exit N), 1 when it ended
// with a terminating error, 2 on a usage error, else 0. Output and Write-Host go to stdout, errors (with their
// position), warnings and verbose messages to stderr.
using System.Management.Automation;
using System.Management.Automation.Runspaces;

if (args.Length < 1)
{
    Console.Error.WriteLine("usage: PtqTools.WinHost <script.ps1> [arguments...]");
    return 2;
}

// The SDK's built-in modules (Microsoft.PowerShell.Utility, .Management, ...) are published as content files under
// runtimes/win/lib/net10.0/Modules, not $PSHOME/Modules: put that folder first on the module path.
var builtIn = Path.Combine(AppContext.BaseDirectory, "runtimes", "win", "lib", "net10.0", "Modules");
var modulePath = Environment.GetEnvironmentVariable("PSModulePath");
Environment.SetEnvironmentVariable("PSModulePath", string.IsNullOrEmpty(modulePath) ? builtIn : builtIn + Path.PathSeparator + modulePath);

var initial = InitialSessionState.CreateDefault2();
initial.ExecutionPolicy = Microsoft.PowerShell.ExecutionPolicy.Bypass;
using var runspace = RunspaceFactory.CreateRunspace(initial);
runspace.Open();
using var ps = PowerShell.Create(runspace);

// Every stream goes out as it comes: output and information (Write-Host) to stdout, the rest to stderr.
var output = new PSDataCollection<PSObject>();
output.DataAdded += (_, e) => Console.Out.WriteLine(Render(output[e.Index]));
ps.Streams.Information.DataAdded += (_, e) => Console.Out.WriteLine(ps.Streams.Information[e.Index].MessageData);
ps.Streams.Warning.DataAdded += (_, e) => Console.Error.WriteLine("WARNING: " + ps.Streams.Warning[e.Index].Message);
ps.Streams.Verbose.DataAdded += (_, e) => Console.Error.WriteLine("VERBOSE: " + ps.Streams.Verbose[e.Index].Message);
ps.Streams.Error.DataAdded += (_, e) => Console.Error.WriteLine(Describe(ps.Streams.Error[e.Index]));

ps.AddCommand(Path.GetFullPath(args[0]));
// Arguments as pwsh -File takes them: -Name value, -Name:value, -Switch, and positional values.
for (var i = 1; i < args.Length; i++)
{
    var a = args[i];
    if (a.Length > 1 && a[0] == '-' && !char.IsDigit(a[1]))
    {
        var colon = a.IndexOf(':');
        if (colon > 0) ps.AddParameter(a[1..colon], a[(colon + 1)..]);
        else if (i + 1 < args.Length && !(args[i + 1].Length > 1 && args[i + 1][0] == '-' && !char.IsDigit(args[i + 1][1]))) ps.AddParameter(a[1..], args[++i]);
        else ps.AddParameter(a[1..]);
    }
    else ps.AddArgument(a);
}
try
{
    ps.Invoke<PSObject>(null, output);
}
catch (RuntimeException e)
{
    Console.Error.WriteLine(Describe(e.ErrorRecord));
    return 1;
}
// 'exit N' in a script file ends the script and leaves N in $LASTEXITCODE; a script that ran to its end returns 0
// (its non-terminating errors were printed), as with pwsh -File.
var exitCode = runspace.SessionStateProxy.GetVariable("LASTEXITCODE");
return exitCode is int code ? code : 0;

static string Render(PSObject item) => item?.BaseObject is string s ? s : item?.ToString() ?? "";

static string Describe(ErrorRecord error)
{
    var where = error.InvocationInfo?.PositionMessage;
    return $"ERROR: {error} ({error.FullyQualifiedErrorId}, {error.Exception.GetType().FullName})" + (string.IsNullOrEmpty(where) ? "" : "\n" + where);
}
