namespace PtqTools.Fuzz;

/// <summary>The child process side: runs cases from standard input until it closes.</summary>
public static class Worker
{
    /// <summary>The command that starts a worker from the harness assembly at <paramref name="assembly"/>.</summary>
    public static (string File, string[] Arguments) Command(string assembly)
    {
        var dir = Path.GetDirectoryName(assembly)!;
        var name = Path.GetFileNameWithoutExtension(assembly);
        var config = Path.Combine(dir, name + ".runtimeconfig.json");
        var deps = Path.Combine(dir, name + ".deps.json");
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        return (dotnet, new[] { "exec", "--runtimeconfig", config, "--depsfile", deps, assembly, "worker" });
    }

    public static int Serve()
    {
        var cache = Path.Combine(Path.GetTempPath(), $"ptq-fuzz-cache-{Environment.ProcessId}");
        Environment.SetEnvironmentVariable("PTQTOOLS_CACHE", cache);
        try
        {
            string? line;
            while ((line = Console.In.ReadLine()) is not null)
            {
                var parts = line.Split('\t');
                var result = CaseRunner.Run(parts[0], parts[1] == "-" ? null : parts[1], int.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture));
                // The prepared-model cache would otherwise grow by one entry per case.
                if (Directory.Exists(cache)) foreach (var f in Directory.EnumerateFiles(cache)) File.Delete(f);
                var detail = result.Detail.Replace('\t', ' ').Replace('\n', ' ').Replace('\r', ' ');
                Console.Out.WriteLine($"@@RESULT\t{result.Outcome}\t{result.Stage}\t{detail}");
                Console.Out.Flush();
            }
        }
        finally
        {
            try { Directory.Delete(cache, true); } catch (IOException) { }
        }
        return 0;
    }
}
