using System.Reflection;
using System.Reflection.Emit;
using PtqTools.Core;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>
/// Issue 14: the namespaces of PtqTools.Core depend on each other without cycles, so each layer can be read and changed
/// on its own. The dependencies are read from the compiled assembly (signatures, fields, base types and every type or
/// member a method body references), not from using directives, so a fully qualified name counts too.
/// </summary>
public class NamespaceTests(ITestOutputHelper output)
{
    static readonly Assembly Core = typeof(PtqException).Assembly;

    /// <summary>The namespace a type belongs to, for nested and compiler-generated types its outermost type's.</summary>
    static string? NamespaceOf(Type? t)
    {
        while (t is { IsNested: true }) t = t.DeclaringType;
        if (t is null || t.Assembly != Core || t.Namespace is not { } ns || !ns.StartsWith("PtqTools.Core", StringComparison.Ordinal)) return null;
        return ns;
    }

    static IEnumerable<Type> Closed(Type t)
    {
        if (t.HasElementType) { foreach (var e in Closed(t.GetElementType()!)) yield return e; yield break; }
        yield return t;
        if (t.IsGenericType && !t.IsGenericTypeDefinition)
            foreach (var a in t.GetGenericArguments()) foreach (var e in Closed(a)) yield return e;
    }

    /// <summary>Namespace -> the namespaces its types use.</summary>
    internal static Dictionary<string, HashSet<string>> Dependencies()
    {
        var graph = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (var type in Core.GetTypes())
        {
            var from = NamespaceOf(type);
            if (from is null) continue;
            var set = graph.TryGetValue(from, out var s) ? s : graph[from] = new HashSet<string>(StringComparer.Ordinal);
            void Use(Type? t)
            {
                if (t is null) return;
                foreach (var c in Closed(t)) if (NamespaceOf(c) is { } to && to != from) set.Add(to);
            }
            Use(type.BaseType);
            foreach (var i in type.GetInterfaces()) Use(i);
            foreach (var f in type.GetFields(all)) Use(f.FieldType);
            foreach (var p in type.GetProperties(all)) Use(p.PropertyType);
            foreach (var m in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                if (m is MethodInfo mi) Use(mi.ReturnType);
                foreach (var p in m.GetParameters()) Use(p.ParameterType);
                foreach (var t in BodyReferences(m)) Use(t);
            }
        }
        return graph;
    }

    static readonly Dictionary<short, OpCode> OpCodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>The types a method body names: the declaring types of the members it calls or reads, and the types it
    /// creates, casts to or loads tokens of.</summary>
    static IEnumerable<Type> BodyReferences(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); } catch { yield break; }
        if (il is null) yield break;
        var module = method.Module;
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            short code = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            i += il[i] == 0xFE ? 2 : 1;
            if (!OpCodes.TryGetValue(code, out var op)) yield break;
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            if (op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                int token = BitConverter.ToInt32(il, i);
                Type? found = null;
                try
                {
                    found = module.ResolveMember(token, typeArgs, methodArgs) switch
                    {
                        Type t => t,
                        MethodBase mb => mb.DeclaringType,
                        FieldInfo f => f.DeclaringType,
                        _ => null,
                    };
                }
                catch (ArgumentException) { }
                if (found is not null) yield return found;
            }
            i += size;
        }
    }

    /// <summary>The cycles of the graph, each as its strongly connected component (Tarjan).</summary>
    internal static List<List<string>> Cycles(Dictionary<string, HashSet<string>> graph)
    {
        var index = new Dictionary<string, int>(); var low = new Dictionary<string, int>();
        var stack = new Stack<string>(); var on = new HashSet<string>(); var result = new List<List<string>>(); int next = 0;
        void Visit(string v)
        {
            index[v] = low[v] = next++; stack.Push(v); on.Add(v);
            foreach (var w in graph.GetValueOrDefault(v) ?? [])
            {
                if (!index.ContainsKey(w)) { Visit(w); low[v] = Math.Min(low[v], low[w]); }
                else if (on.Contains(w)) low[v] = Math.Min(low[v], index[w]);
            }
            if (low[v] != index[v]) return;
            var component = new List<string>();
            string x;
            do { x = stack.Pop(); on.Remove(x); component.Add(x); } while (x != v);
            if (component.Count > 1) result.Add(component.OrderBy(c => c, StringComparer.Ordinal).ToList());
        }
        foreach (var v in graph.Keys.OrderBy(k => k, StringComparer.Ordinal)) if (!index.ContainsKey(v)) Visit(v);
        return result;
    }

    [Fact]
    public void Core_Namespaces_HaveNoCycles()
    {
        var graph = Dependencies();
        foreach (var (ns, uses) in graph.OrderBy(p => p.Key, StringComparer.Ordinal))
            output.WriteLine($"{ns} -> {string.Join(", ", uses.OrderBy(u => u, StringComparer.Ordinal))}");
        var cycles = Cycles(graph);
        Assert.True(cycles.Count == 0, "Namespace cycles: " + string.Join("; ", cycles.Select(c => string.Join(" <-> ", c))));
    }

    [Fact]
    public void CycleFinder_FindsACycle()
    {
        var graph = new Dictionary<string, HashSet<string>>
        {
            ["A"] = ["B"], ["B"] = ["C"], ["C"] = ["A"], ["D"] = ["A"],
        };
        Assert.Equal(new[] { "A", "B", "C" }, Assert.Single(Cycles(graph)));
        graph["C"].Clear();
        Assert.Empty(Cycles(graph));
    }

    [Fact]
    public void Dependencies_SeeMethodBodies()
    {
        // Quantizer's body uses OnnxModelIO (Onnx) without naming it in any signature.
        Assert.Contains("PtqTools.Core.Onnx", Dependencies()["PtqTools.Core.Quantization"]);
    }
}
