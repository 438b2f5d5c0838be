using Onnx;
using PtqTools.TestModels;

// dotnet run --project tests/PtqTools.TestModels -c Release -- <outdir> [kind ...]
//   writes <outdir>/<kind>/model.onnx, calibration/, evaluation/ (ONNX test layout) and kind.txt for every model
// dotnet run --project tests/PtqTools.TestModels -c Release -- evaluate <float model.onnx> <other model.onnx>
//   prints the task metric, size and speed of the other model against the float one
// dotnet run --project tests/PtqTools.TestModels -c Release -- dump <model.onnx> [nodes]
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: PtqTools.TestModels <outdir> [bert11|crnn|textdir|vad|dbnet ...] | evaluate <float.onnx> <other.onnx> | dump <model.onnx>");
    return 2;
}
if (args[0] == "dump")
{
    var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(args.Length > 1 && args[1].Length > 0 ? args[1] : MiniLmSource.ModelPath));
    Console.WriteLine($"ir {m.IrVersion} opset {string.Join(",", m.OpsetImport.Select(o => o.Domain + ":" + o.Version))} producer {m.ProducerName} {m.ProducerVersion}");
    foreach (var i in m.Graph.Input) Console.WriteLine("in " + i.Name);
    foreach (var o in m.Graph.Output) Console.WriteLine("out " + o.Name);
    foreach (var n in m.Graph.Node.Take(args.Length > 2 ? int.Parse(args[2]) : 80))
        Console.WriteLine($"{n.OpType} {n.Name} [{string.Join(",", n.Input)}] -> [{string.Join(",", n.Output)}]");
    Console.WriteLine(string.Join(", ", m.Graph.Node.GroupBy(n => n.OpType).Select(g => $"{g.Key}:{g.Count()}")));
    return 0;
}
if (args[0] == "evaluate")
{
    Console.WriteLine(ArchitectureModels.Evaluate(args[1], args[2]).Summary());
    return 0;
}
var kinds = args.Length > 1 ? args[1..] : ArchitectureModelSet.Kinds;
foreach (var kind in kinds)
{
    var start = System.Diagnostics.Stopwatch.StartNew();
    var path = ArchitectureModelSet.Write(kind, Path.Combine(args[0], kind));
    var self = ArchitectureModels.Evaluate(path, path, latencyRuns: 10);
    Console.WriteLine($"{path}: {new FileInfo(path).Length:N0} bytes, {start.Elapsed.TotalSeconds:F1} s; float vs float: {self.Summary()}");
}
return 0;
