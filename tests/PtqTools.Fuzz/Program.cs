using System.Globalization;
using PtqTools.Fuzz;

// PtqTools.Fuzz run [--seed N] [--cases N] [--out DIR] [--resnet SHARE] [--synthetic SHARE] [--first N]
//   runs a campaign: cases are made here and run in a worker child process restarted when it dies.
// PtqTools.Fuzz worker      reads "folder<TAB>data<TAB>variant" lines, answers "@@RESULT<TAB>outcome<TAB>stage<TAB>detail".
// PtqTools.Fuzz replay DIR  runs one saved case folder in this process (to debug a finding).
var mode = args.Length > 0 ? args[0] : "run";
string Option(string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

switch (mode)
{
    case "worker":
        return Worker.Serve();
    case "replay":
    {
        var folder = args[1];
        var data = Option("--data", "-");
        var r = CaseRunner.Run(folder, data == "-" ? null : data, int.Parse(Option("--variant", "0"), CultureInfo.InvariantCulture));
        Console.WriteLine($"{r.Outcome} {r.Stage}: {r.Detail}");
        return r.Outcome == Outcome.Unexpected ? 1 : 0;
    }
    default:
    {
        int seed = int.Parse(Option("--seed", "1"), CultureInfo.InvariantCulture);
        int cases = int.Parse(Option("--cases", "10000"), CultureInfo.InvariantCulture);
        int first = int.Parse(Option("--first", "0"), CultureInfo.InvariantCulture);
        double share = double.Parse(Option("--resnet", "0.005"), CultureInfo.InvariantCulture);
        double synthetic = double.Parse(Option("--synthetic", "0.1"), CultureInfo.InvariantCulture);
        var output = Path.GetFullPath(Option("--out", Path.Combine("out", "fuzz")));
        var seeds = Seeds.Load();
        var resnetPath = share > 0 ? Seeds.ResNet18Path() : null;
        if (share > 0 && resnetPath is null) Console.Error.WriteLine("ResNet18 is not restored; its share of cases goes to the other seeds.");
        Console.WriteLine($"Fuzzing: seed {seed}, {cases} cases from {first}, {seeds.Count} seed models{(resnetPath is null ? "" : $" + ResNet18 ({share:P1})")}, synthetic share {synthetic:P0}, output {output}");
        var (file, prefix) = Worker.Command(typeof(Program).Assembly.Location);
        var summary = new Supervisor { WorkerFile = file, WorkerArguments = prefix, OutputFolder = output, Log = Console.WriteLine }
            .Run(seed, cases, seeds, resnetPath is null ? null : Seeds.ResNet18(resnetPath), share, first, synthetic);
        Console.WriteLine($"{summary.Cases} cases in {summary.Seconds} s: {summary.Valid} valid, {summary.Refused} refused, {summary.Unexpected} unexpected, " +
                          $"{summary.Crashes} host crashes, {summary.Hangs} hangs, {summary.MemoryBlowups} memory blow-ups ({summary.WorkerStarts} worker starts)");
        foreach (var (k, v) in summary.ByOutcome.OrderByDescending(kv => kv.Value)) Console.WriteLine($"  {v,6}  {k}");
        Console.WriteLine($"Summary: {Path.Combine(output, $"summary-{seed}.json")}");
        return summary.Clean ? 0 : 1;
    }
}
