using System.Text;
using Google.Protobuf;
using Onnx;

namespace PtqTools.Fuzz;

/// <summary>One fuzz case: the files of its folder (model.onnx and side files), symbolic links to create there,
/// what was done to the seed, and the data a calibration uses.</summary>
public sealed class FuzzCase
{
    public required int Index { get; init; }
    public required string Seed { get; init; }
    public required List<string> Mutations { get; init; }
    public required Dictionary<string, byte[]> Files { get; init; }
    public Dictionary<string, string> Links { get; init; } = new();
    public string? TensorProtoData { get; init; }

    /// <summary>Writes the case into <paramref name="folder"/> (emptied first).</summary>
    public void WriteTo(string folder)
    {
        if (Directory.Exists(folder)) Directory.Delete(folder, true);
        Directory.CreateDirectory(folder);
        foreach (var (name, bytes) in Files) File.WriteAllBytes(Path.Combine(folder, name), bytes);
        foreach (var (name, target) in Links) File.CreateSymbolicLink(Path.Combine(folder, name), target);
        File.WriteAllText(Path.Combine(folder, "case.txt"),
            $"index={Index}\nseed={Seed}\nmutations={string.Join(" | ", Mutations)}\ndata={TensorProtoData ?? "random"}\n");
    }
}

/// <summary>
/// Deterministic mutations (by seed and case index) of a seed model: byte-level (bit flips, truncation, splices,
/// hostile varints) and structural (huge and negative dimensions, wrong data types, field swaps, hostile
/// attributes, removed parts, odd opsets, hostile external-data locations, tensors claiming terabytes,
/// ConstantOfShape bombs, protobuf nesting bombs).
/// </summary>
public static class Mutator
{
    static readonly string[] Kinds =
    {
        "BitFlip", "Truncate", "Splice", "Varint", "Dim", "DataType", "ElemType", "Swap", "Attribute", "Drop",
        "Opset", "External", "HugeTensor", "ShapeBomb", "Nesting", "Duplicate",
    };

    static readonly long[] HostileDims = { 0, -1, -7, 1L << 31, 1L << 40, long.MaxValue, long.MinValue, 3 };

    /// <summary>The case of this seed and index. <paramref name="syntheticShare"/> of the cases start from the
    /// synthetic models (which run the whole pipeline), the rest from all seeds alike; with a share of 0 the cases
    /// are those of the first campaigns, whose findings the tests regenerate.</summary>
    public static FuzzCase Create(int seed, int index, IReadOnlyList<Seed> seeds, Seed? resnet, double resnetShare, double syntheticShare = 0)
    {
        var random = new Random(unchecked(seed * 1_000_003 + index));
        // The draw is made whether or not ResNet18 is there, so the other cases are the same either way.
        double draw = random.NextDouble();
        Seed source;
        if (resnet is not null && draw < resnetShare) source = resnet;
        else if (syntheticShare > 0 && draw >= 1 - syntheticShare)
        {
            var synthetic = seeds.Where(s => s.Name.StartsWith("synthetic/", StringComparison.Ordinal)).ToList();
            source = synthetic[random.Next(synthetic.Count)];
        }
        else source = seeds[random.Next(seeds.Count)];
        var files = source.SideFiles.ToDictionary(kv => kv.Key, kv => kv.Value);
        var links = new Dictionary<string, string>();
        var mutations = new List<string>();
        var bytes = source.Model;
        int count = random.Next(4) == 0 ? 2 : 1;
        for (int m = 0; m < count; m++)
        {
            var kind = Kinds[random.Next(Kinds.Length)];
            // On the 45 MB ResNet18, byte mutations almost always land in weights; structural ones test more.
            if (source == resnet && kind is "BitFlip" or "Splice" or "Varint" && random.Next(3) > 0) kind = "Dim";
            string what;
            (bytes, what) = Apply(kind, bytes, random, files, links);
            mutations.Add(what);
        }
        files["model.onnx"] = bytes;
        return new FuzzCase { Index = index, Seed = source.Name, Mutations = mutations, Files = files, Links = links, TensorProtoData = source.TensorProtoData };
    }

    static (byte[], string) Apply(string kind, byte[] bytes, Random r, Dictionary<string, byte[]> files, Dictionary<string, string> links)
    {
        switch (kind)
        {
            case "BitFlip":
            {
                var b = (byte[])bytes.Clone();
                int flips = 1 + r.Next(16);
                // Half the flips land in the first 4 KiB, where the graph structure usually is.
                for (int i = 0; i < flips; i++)
                {
                    int at = r.Next(2) == 0 ? r.Next(Math.Min(b.Length, 4096)) : r.Next(b.Length);
                    b[at] ^= (byte)(1 << r.Next(8));
                }
                return (b, $"BitFlip x{flips}");
            }
            case "Truncate":
            {
                int n = r.Next(bytes.Length);
                return (bytes[..n], $"Truncate to {n} of {bytes.Length}");
            }
            case "Splice":
            {
                int from = r.Next(bytes.Length), len = Math.Min(bytes.Length - from, 1 + r.Next(64)), to = r.Next(bytes.Length);
                var b = new List<byte>(bytes);
                b.InsertRange(to, bytes.AsSpan(from, len).ToArray());
                return (b.ToArray(), $"Splice {len} bytes from {from} to {to}");
            }
            case "Varint":
            {
                var b = (byte[])bytes.Clone();
                int at = r.Next(Math.Min(b.Length, 8192));
                int n = Math.Min(b.Length - at, 1 + r.Next(10));
                for (int i = 0; i < n; i++) b[at + i] = (byte)(r.Next(2) == 0 ? 0xFF : 0x80);
                return (b, $"Varint {n} bytes at {at}");
            }
        }
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException) { return (bytes, $"{kind} skipped (not parseable)"); }
        if (model.Graph is null) return (bytes, $"{kind} skipped (no graph)");
        var what = Structural(kind, model, r, files, links);
        if (what.StartsWith("Nesting", StringComparison.Ordinal)) return (NestingBomb(model, r, out var depth), $"{what} depth {depth}");
        return (model.ToByteArray(), what);
    }

    static string Structural(string kind, ModelProto model, Random r, Dictionary<string, byte[]> files, Dictionary<string, string> links)
    {
        var g = model.Graph;
        var tensors = PtqTools.Core.Onnx.ExternalData.Tensors(g).ToList();
        var values = g.Input.Concat(g.Output).Concat(g.ValueInfo).ToList();
        T Pick<T>(IList<T> list) => list[r.Next(list.Count)];
        switch (kind)
        {
            case "Dim":
            {
                long d = HostileDims[r.Next(HostileDims.Length)];
                if (tensors.Count > 0 && r.Next(2) == 0)
                {
                    var t = Pick(tensors);
                    if (t.Dims.Count == 0) t.Dims.Add(d); else t.Dims[r.Next(t.Dims.Count)] = d;
                    return $"Dim tensor '{t.Name}' -> {d}";
                }
                var v = values.Where(x => x.Type?.TensorType?.Shape is not null).ToList();
                if (v.Count == 0) return "Dim skipped";
                var vi = Pick(v);
                var dims = vi.Type.TensorType.Shape.Dim;
                var dim = new TensorShapeProto.Types.Dimension { DimValue = d };
                if (dims.Count == 0 || r.Next(4) == 0) dims.Add(dim); else dims[r.Next(dims.Count)] = dim;
                return $"Dim value '{vi.Name}' -> {d}";
            }
            case "DataType":
            {
                if (tensors.Count == 0) return "DataType skipped";
                var t = Pick(tensors);
                int type = r.Next(6) == 0 ? new[] { -1, 99, int.MaxValue }[r.Next(3)] : r.Next(24);
                t.DataType = type;
                return $"DataType '{t.Name}' -> {type}";
            }
            case "ElemType":
            {
                var v = values.Where(x => x.Type?.TensorType is not null).ToList();
                if (v.Count == 0) return "ElemType skipped";
                var vi = Pick(v);
                int type = r.Next(6) == 0 ? new[] { -1, 99 }[r.Next(2)] : r.Next(24);
                vi.Type.TensorType.ElemType = type;
                return $"ElemType '{vi.Name}' -> {type}";
            }
            case "Swap":
            {
                if (g.Node.Count == 0) return "Swap skipped";
                var a = Pick(g.Node);
                var b = Pick(g.Node);
                switch (r.Next(5))
                {
                    case 0: (a.OpType, b.OpType) = (b.OpType, a.OpType); return $"Swap op types '{a.Name}' '{b.Name}'";
                    case 1:
                    {
                        var ai = a.Input.ToList();
                        a.Input.Clear(); a.Input.AddRange(b.Input);
                        b.Input.Clear(); b.Input.AddRange(ai);
                        return $"Swap inputs '{a.Name}' '{b.Name}'";
                    }
                    case 2:
                        if (a.Input.Count == 0 || a.Output.Count == 0) return "Swap skipped";
                        (a.Input[0], a.Output[0]) = (a.Output[0], a.Input[0]);
                        return $"Swap input/output of '{a.Name}'";
                    case 3:
                    {
                        var nodes = g.Node.Reverse().ToList();
                        g.Node.Clear(); g.Node.AddRange(nodes);
                        return "Swap node order (reversed)";
                    }
                    default:
                    {
                        var aa = a.Attribute.ToList();
                        a.Attribute.Clear(); a.Attribute.AddRange(b.Attribute.Select(x => x.Clone()));
                        b.Attribute.Clear(); b.Attribute.AddRange(aa);
                        return $"Swap attributes '{a.Name}' '{b.Name}'";
                    }
                }
            }
            case "Attribute":
            {
                var withAttr = g.Node.Where(n => n.Attribute.Count > 0).ToList();
                if (withAttr.Count == 0)
                {
                    if (g.Node.Count == 0) return "Attribute skipped";
                    var n0 = Pick(g.Node);
                    n0.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = HostileDims[r.Next(HostileDims.Length)] });
                    return $"Attribute added axis on '{n0.Name}'";
                }
                var n = Pick(withAttr);
                var a = Pick(n.Attribute);
                long v = HostileDims[r.Next(HostileDims.Length)];
                switch (r.Next(5))
                {
                    case 0: a.I = v; a.Type = AttributeProto.Types.AttributeType.Int; return $"Attribute '{n.Name}.{a.Name}' int {v}";
                    case 1:
                        if (a.Ints.Count == 0) a.Ints.Add(v); else a.Ints[r.Next(a.Ints.Count)] = v;
                        return $"Attribute '{n.Name}.{a.Name}' ints [{string.Join(",", a.Ints)}]";
                    case 2: a.Type = (AttributeProto.Types.AttributeType)r.Next(15); return $"Attribute '{n.Name}.{a.Name}' type {a.Type}";
                    case 3: n.Attribute.Remove(a); return $"Attribute '{n.Name}.{a.Name}' removed";
                    default: a.F = new[] { float.NaN, float.PositiveInfinity, -1e38f, 0f }[r.Next(4)]; return $"Attribute '{n.Name}.{a.Name}' float {a.F}";
                }
            }
            case "Drop":
                switch (r.Next(4))
                {
                    case 0 when g.Node.Count > 0: { var n = Pick(g.Node); g.Node.Remove(n); return $"Drop node '{n.Name}' ({n.OpType})"; }
                    case 1 when g.Initializer.Count > 0: { var t = Pick(g.Initializer); g.Initializer.Remove(t); return $"Drop initializer '{t.Name}'"; }
                    case 2 when g.Input.Count > 0: { var i = Pick(g.Input); g.Input.Remove(i); return $"Drop input '{i.Name}'"; }
                    case 3 when g.Output.Count > 0: { var o = Pick(g.Output); g.Output.Remove(o); return $"Drop output '{o.Name}'"; }
                    default: g.Node.Clear(); return "Drop all nodes";
                }
            case "Opset":
                if (r.Next(2) == 0)
                {
                    model.IrVersion = new long[] { 0, 1, 2, 3, 12, -1, long.MaxValue }[r.Next(7)];
                    return $"Opset IR version {model.IrVersion}";
                }
                else
                {
                    if (model.OpsetImport.Count == 0) model.OpsetImport.Add(new OperatorSetIdProto());
                    var o = Pick(model.OpsetImport);
                    o.Version = new long[] { 0, 1, 6, 7, 25, 1000, -3, long.MaxValue }[r.Next(8)];
                    if (r.Next(5) == 0) o.Domain = "com.example.hostile";
                    return $"Opset '{o.Domain}' -> {o.Version}";
                }
            case "External": return External(g, tensors, r, files, links);
            case "HugeTensor":
            {
                // A tensor that claims terabytes (or more than a long holds) with little or no data behind it.
                var t = tensors.Count > 0 && r.Next(2) == 0 ? Pick(tensors) : new TensorProto { Name = "huge", DataType = 1 };
                if (!tensors.Contains(t)) g.Initializer.Add(t);
                t.Dims.Clear();
                t.Dims.AddRange(r.Next(3) switch { 0 => new long[] { 1L << 20, 1L << 20, 1L << 20 }, 1 => new long[] { 1L << 40 }, _ => new long[] { long.MaxValue, 2 } });
                if (r.Next(2) == 0) t.RawData = ByteString.Empty;
                return $"HugeTensor '{t.Name}' [{string.Join(",", t.Dims)}]";
            }
            case "ShapeBomb":
            {
                // A ConstantOfShape whose constant shape asks for gigabytes to terabytes, made a graph output.
                long side = new long[] { 1L << 10, 1L << 16, 1L << 20, 3L << 30 }[r.Next(4)];
                var shape = new long[] { side, side };
                var st = PtqTools.Core.Onnx.TensorData.FromFloats("bomb_shape", Array.Empty<float>(), 2);
                st.DataType = 7;
                st.RawData = ByteString.CopyFrom(shape.SelectMany(BitConverter.GetBytes).ToArray());
                g.Initializer.Add(st);
                g.Node.Add(Seeds.Node(r.Next(2) == 0 ? "ConstantOfShape" : "Expand", "bomb", r.Next(2) == 0 ? new[] { "bomb_shape" } : new[] { g.Input.FirstOrDefault()?.Name ?? "bomb_shape", "bomb_shape" }, new[] { "bomb_out" }));
                g.Output.Add(Seeds.Value("bomb_out", 1, side, side));
                return $"ShapeBomb {g.Node[^1].OpType} [{side},{side}]";
            }
            case "Nesting": return "Nesting";
            default:
            {
                if (g.Node.Count == 0) return "Duplicate skipped";
                var n = Pick(g.Node);
                g.Node.Add(n.Clone());
                return $"Duplicate node '{n.Name}'";
            }
        }
    }

    static readonly string[] HostileLocations =
    {
        "../outside.bin", "../../../../../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "..\\..\\x.bin", "a\0b",
        "link-file", "link-dir/passwd", "missing.bin", "", "model.onnx", ".", "data.bin",
    };

    static string External(GraphProto g, List<TensorProto> tensors, Random r, Dictionary<string, byte[]> files, Dictionary<string, string> links)
    {
        if (tensors.Count == 0) return "External skipped";
        var t = tensors[r.Next(tensors.Count)];
        var location = HostileLocations[r.Next(HostileLocations.Length)];
        if (location == "link-file") links["link-file"] = "/etc/passwd";
        if (location == "link-dir/passwd") links["link-dir"] = "/etc";
        if (location == "data.bin") files["data.bin"] = t.RawData.ToByteArray()[..Math.Max(0, t.RawData.Length - r.Next(2) * 3)];
        t.DataLocation = TensorProto.Types.DataLocation.External;
        t.RawData = ByteString.Empty;
        t.ExternalData.Clear();
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        string extra = "";
        switch (r.Next(5))
        {
            case 0: t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "-4096" }); extra = " offset -4096"; break;
            case 1: t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "1099511627776" }); extra = " length 1 TiB"; break;
            case 2: t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "9223372036854775807" }); extra = " offset long.MaxValue"; break;
            case 3: t.Dims.Clear(); t.Dims.AddRange(new long[] { 1L << 20, 1L << 20 }); extra = " dims 1M x 1M"; break;
        }
        return $"External '{t.Name}' -> '{location.Replace("\0", "\\0")}'{extra}";
    }

    /// <summary>
    /// Wraps the graph in If nodes <c>depth</c> levels deep, written straight to the wire format from the inside
    /// out (so that even 100,000 levels take linear time and no recursion here).
    /// </summary>
    static byte[] NestingBomb(ModelProto model, Random r, out int depth)
    {
        depth = new[] { 3, 20, 33, 34, 60, 1000, 100_000 }[r.Next(7)];
        var graph = model.Graph.ToByteArray();
        // Built reversed: each level prepends its headers in front of what it holds.
        var rev = new List<byte>(graph.Length + depth * 40);
        for (int i = graph.Length - 1; i >= 0; i--) rev.Add(graph[i]);
        void Prepend(ReadOnlySpan<byte> b) { for (int i = b.Length - 1; i >= 0; i--) rev.Add(b[i]); }
        void PrependLengthDelimited(int field, int length)
        {
            Prepend(Varint((ulong)length));
            Prepend(Varint((ulong)(field << 3 | 2)));
        }
        var name = Encoding.UTF8.GetBytes("then_branch");
        var op = Encoding.UTF8.GetBytes("If");
        for (int level = 0; level < depth; level++)
        {
            // AttributeProto { name = 1, g = 6, type = 20 (GRAPH = 5) }
            PrependLengthDelimited(6, rev.Count);
            Prepend(new byte[] { 0xA0, 0x01, 0x05 });
            Prepend(name); PrependLengthDelimited(1, name.Length);
            // NodeProto { op_type = 4, attribute = 5 }
            PrependLengthDelimited(5, rev.Count);
            Prepend(op); PrependLengthDelimited(4, op.Length);
            // GraphProto { node = 1 }
            PrependLengthDelimited(1, rev.Count);
        }
        var nested = rev.ToArray();
        Array.Reverse(nested);
        model.Graph = null;
        var head = model.ToByteArray();
        using var ms = new MemoryStream();
        ms.Write(head);
        ms.Write(Varint(7 << 3 | 2));
        ms.Write(Varint((ulong)nested.Length));
        ms.Write(nested);
        return ms.ToArray();
    }

    static byte[] Varint(ulong v)
    {
        var b = new List<byte>(10);
        do { byte x = (byte)(v & 0x7F); v >>= 7; if (v != 0) x |= 0x80; b.Add(x); } while (v != 0);
        return b.ToArray();
    }
}
