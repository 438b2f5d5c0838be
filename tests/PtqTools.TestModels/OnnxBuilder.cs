using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.TestModels;

/// <summary>Builds ONNX graphs (the main graph or an If branch) with the OnnxSharp classes.</summary>
public sealed class OnnxBuilder
{
    int _next;

    public OnnxBuilder(string name, int opset = 13)
    {
        Model = new ModelProto { IrVersion = 7, ProducerName = "PtqTools.TestModels", Graph = new GraphProto { Name = name } };
        Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        Graph = Model.Graph;
    }

    /// <summary>A builder of a subgraph (an If branch): its nodes go into <paramref name="graph"/>; names share the
    /// parent's prefix so that they stay unique in the model.</summary>
    OnnxBuilder(GraphProto graph, OnnxBuilder parent)
    {
        Model = parent.Model;
        Graph = graph;
        _prefix = graph.Name + "/";
    }

    readonly string _prefix = "";

    public ModelProto Model { get; }
    public GraphProto Graph { get; }

    /// <summary>A builder of a new subgraph named <paramref name="name"/> (its nodes, inputs and outputs are its own).</summary>
    public OnnxBuilder Subgraph(string name) => new(new GraphProto { Name = name }, this);

    public string Fresh(string stem) => $"{_prefix}{stem}_{_next++}";

    string _scope = "";

    /// <summary>Names the nodes added until the result is disposed "scope/Op_N" (nested scopes join with '/'), so
    /// that layer names say which block they are in; tensor names are not affected.</summary>
    public IDisposable Scope(string name)
    {
        var previous = _scope;
        _scope = previous + name + "/";
        return new Restore(() => _scope = previous);
    }

    sealed class Restore(Action action) : IDisposable { public void Dispose() => action(); }

    public static ValueInfoProto Value(string name, long[]? dims, int elemType = (int)OnnxDataType.Float)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = elemType };
        if (dims is not null)
        {
            tensor.Shape = new TensorShapeProto();
            foreach (var d in dims) tensor.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    public string Input(string name, long[] dims, int elemType = (int)OnnxDataType.Float) { Graph.Input.Add(Value(name, dims, elemType)); return name; }

    public void Output(string name, long[]? dims, int elemType = (int)OnnxDataType.Float) => Graph.Output.Add(Value(name, dims, elemType));

    public string Init(string name, float[] values, params long[] dims) { Graph.Initializer.Add(TensorData.FromFloats(name, values, dims)); return name; }

    public string InitI64(string name, long[] values, params long[] dims) { Graph.Initializer.Add(Int64Tensor(name, values, dims)); return name; }

    /// <summary>A Constant node holding these floats (as exporters write weights inside If branches).</summary>
    public string Constant(string name, float[] values, params long[] dims)
    {
        var a = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorData.FromFloats(name, values, dims) };
        var node = new NodeProto { OpType = "Constant", Name = name + "_const" };
        node.Output.Add(name);
        node.Attribute.Add(a);
        Graph.Node.Add(node);
        return name;
    }

    public string ConstantI64(string name, long[] values, params long[] dims)
    {
        var a = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = Int64Tensor(name, values, dims) };
        var node = new NodeProto { OpType = "Constant", Name = name + "_const" };
        node.Output.Add(name);
        node.Attribute.Add(a);
        Graph.Node.Add(node);
        return name;
    }

    public static TensorProto Int64Tensor(string name, long[] values, params long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)OnnxDataType.Int64 };
        t.Dims.AddRange(dims);
        t.Int64Data.AddRange(values);
        return t;
    }

    public static TensorProto FloatTensor(string name, float[] values, params long[] dims) => TensorData.FromFloats(name, values, dims);

    /// <summary>Adds a node; returns its first output (a fresh name when none is given).</summary>
    public string Node(string op, string[] inputs, string? output = null, params (string Name, object Value)[] attributes)
        => NodeMulti(op, inputs, new[] { output ?? Fresh(op.ToLowerInvariant()) }, attributes)[0];

    public string[] NodeMulti(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = _scope + Fresh(op) };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        foreach (var (an, av) in attributes) node.Attribute.Add(Attribute(an, av));
        Graph.Node.Add(node);
        return outputs;
    }

    public static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case int i: a.I = i; a.Type = AttributeProto.Types.AttributeType.Int; break;
            case long l: a.I = l; a.Type = AttributeProto.Types.AttributeType.Int; break;
            case float f: a.F = f; a.Type = AttributeProto.Types.AttributeType.Float; break;
            case long[] ls: a.Ints.AddRange(ls); a.Type = AttributeProto.Types.AttributeType.Ints; break;
            case float[] fs: a.Floats.AddRange(fs); a.Type = AttributeProto.Types.AttributeType.Floats; break;
            case string s: a.S = ByteString.CopyFromUtf8(s); a.Type = AttributeProto.Types.AttributeType.String; break;
            case string[] ss: a.Strings.AddRange(ss.Select(ByteString.CopyFromUtf8)); a.Type = AttributeProto.Types.AttributeType.Strings; break;
            case GraphProto g: a.G = g; a.Type = AttributeProto.Types.AttributeType.Graph; break;
            case TensorProto t: a.T = t; a.Type = AttributeProto.Types.AttributeType.Tensor; break;
            default: throw new ArgumentException($"Attribute type {value.GetType()} is not handled.");
        }
        return a;
    }

    public byte[] Bytes() => Model.ToByteArray();
}

/// <summary>Seeded random weights, well conditioned: He-scaled normals.</summary>
public sealed class Weights
{
    readonly Random _r;
    public Weights(int seed) { _r = new Random(seed); }

    public double Normal()
    {
        double u1 = 1 - _r.NextDouble(), u2 = _r.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    public float[] He(int n, int fanIn, double gain = 1) { var s = gain * Math.Sqrt(2.0 / fanIn); return Enumerable.Range(0, n).Select(_ => (float)(Normal() * s)).ToArray(); }

    public float[] Uniform(int n, float lo, float hi) => Enumerable.Range(0, n).Select(_ => lo + (float)_r.NextDouble() * (hi - lo)).ToArray();

    public float[] Normals(int n, double std) => Enumerable.Range(0, n).Select(_ => (float)(Normal() * std)).ToArray();

    public Random Random => _r;
}
