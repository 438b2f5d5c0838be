using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;

namespace PtqTools.Arm64Check;

/// <summary>
/// Writes the quantized conformance models the engine check runs (on x64 only: calibration runs in ONNX Runtime):
/// small float models with fixed random weights, calibrated on 8 random samples and quantized by PtqTools.Core, and
/// 3 further samples of each as NAME.inN.pb. Together they reach every integer kernel of the engine: QLinearConv
/// (3x3 with padding, depthwise with stride 2, pointwise), QLinearAdd, QLinearGlobalAveragePool, Gemm, MatMul,
/// MaxPool, with u8 and s8 activations, in QDQ and QOperator form, and a dynamic MatMulInteger; one model has full-range
/// weights (-Target Vnni), whose u8 x s8 pairs can saturate in the emulation of CPUs without VNNI.
/// </summary>
public static class ConformanceModels
{
    public static void Write(string folder, TextWriter log)
    {
        Directory.CreateDirectory(folder);
        var work = Path.Combine(folder, "float");
        Directory.CreateDirectory(work);
        // Prepared models are cached by the source's SHA-256; keep them out of the user's cache unless one is set.
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("PTQTOOLS_CACHE")))
            Environment.SetEnvironmentVariable("PTQTOOLS_CACHE", Path.Combine(work, "cache"));
        try
        {
            var cnn = Save(Residual(), Path.Combine(work, "cnn.onnx"));
            var dw = Save(DepthwiseMatMul(), Path.Combine(work, "dwmm.onnx"));
            var mm = Save(MatMulOnly(), Path.Combine(work, "mm.onnx"));
            Static(cnn, new[] { 3, 8, 8 }, new QuantizationOptions(), folder, "cnn-qdq-u8", log);
            Static(cnn, new[] { 3, 8, 8 }, new QuantizationOptions { Format = QuantFormat.QOperator }, folder, "cnn-qop-u8", log);
            Static(dw, new[] { 4, 12, 12 }, new QuantizationOptions(), folder, "dwmm-qdq-u8", log);
            Static(dw, new[] { 4, 12, 12 }, new QuantizationOptions { ActivationType = QuantType.Int8 }, folder, "dwmm-qdq-s8", log);
            // Full-range weights (for VNNI): pairs of them can saturate where ONNX Runtime lacks VNNI (the @avx2 run).
            Static(cnn, new[] { 3, 8, 8 }, new QuantizationOptions { Target = QuantTarget.Vnni }, folder, "cnn-qdq-u8-vnni", log);
            var prepared = ModelPreparer.Prepare(mm);
            var output = Path.Combine(folder, "mm-dynamic.onnx");
            QuantizationPipeline.RunWithoutCalibration(prepared, null, new QuantizationOptions { Mode = QuantMode.Dynamic }, output, default);
            Samples("mm-dynamic", prepared.Model, new[] { 5, 24 }, folder, new Random(31), 3);
            log.WriteLine($"write: mm-dynamic.onnx ({Ops(output)})");
        }
        finally { Directory.Delete(work, true); }
    }

    static void Static(string source, int[] shape, QuantizationOptions options, string folder, string name, TextWriter log)
    {
        var prepared = ModelPreparer.Prepare(source);
        var random = new Random(name.Length * 7919 + shape[0]);
        var calibration = Enumerable.Range(0, 8).Select(_ => RandomFloats(random, shape.Aggregate(1, (a, b) => a * b))).ToArray();
        var data = DataSetReader.FromArrays(calibration, shape, null, new PtqDataSet());
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, default);
        var output = Path.Combine(folder, name + ".onnx");
        // Small models whose int8 layers would run slower than float: the speed rules would keep them float, and this
        // check is about the kernels, so it skips them.
        options.SkipRules = new[] { "ShallowConv", "SlowRegion" };
        QuantizationPipeline.Run(prepared, stats, options, output, default);
        Samples(name, prepared.Model, shape, folder, random, 3);
        log.WriteLine($"write: {name}.onnx ({Ops(output)})");
    }

    /// <summary>The op types of a written model (and a check that it holds integer ops: a float model would leave
    /// the engine's integer kernels untested).</summary>
    static string Ops(string path)
    {
        var ops = OnnxModelIO.Load(path).Graph.Node.Select(n => n.OpType).Distinct().OrderBy(o => o, StringComparer.Ordinal).ToList();
        if (!ops.Any(o => o is "QuantizeLinear" or "DynamicQuantizeLinear" || o.StartsWith("QLinear", StringComparison.Ordinal)))
            throw new InvalidOperationException($"'{path}' holds no quantized op: {string.Join(", ", ops)}.");
        return string.Join(", ", ops);
    }

    static void Samples(string name, ModelProto model, int[] shape, string folder, Random random, int count)
    {
        var input = model.Graph.Input[0].Name;
        var dims = new long[] { 1 }.Concat(shape.Select(d => (long)d)).ToArray();
        for (int i = 0; i < count; i++)
            File.WriteAllBytes(Path.Combine(folder, $"{name}.in{i}.pb"),
                TensorData.FromFloats(input, RandomFloats(random, shape.Aggregate(1, (a, b) => a * b)), dims).ToByteArray());
    }

    static float[] RandomFloats(Random random, int n, float scale = 2f) =>
        Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale).ToArray();

    static string Save(ModelProto model, string path)
    {
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    /// <summary>x[1,3,8,8] -> conv1(+bias, pad 1) -> Relu -> conv2(+bias, pad 1) -> Add(skip from the Relu) ->
    /// GlobalAveragePool -> Flatten -> Gemm -> y[1,10].</summary>
    static ModelProto Residual()
    {
        var b = new Builder(1);
        b.Input("x", 1, 3, 8, 8).Output("y", 1, 10)
            .Weight("w1", 0.4f, 8, 3, 3, 3).Weight("b1", 0.2f, 8).Weight("w2", 0.2f, 8, 8, 3, 3).Weight("b2", 0.2f, 8)
            .Weight("wg", 0.5f, 8, 10).Weight("bg", 0.2f, 10)
            .Node("Conv", new[] { "x", "w1", "b1" }, "c1", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "c1" }, "r1")
            .Node("Conv", new[] { "r1", "w2", "b2" }, "c2", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Add", new[] { "c2", "r1" }, "a")
            .Node("GlobalAveragePool", new[] { "a" }, "g")
            .Node("Flatten", new[] { "g" }, "f")
            .Node("Gemm", new[] { "f", "wg", "bg" }, "y");
        return b.Model;
    }

    /// <summary>x[1,4,12,12] -> conv 3x3 (16 channels, pad 1) -> Relu -> depthwise 3x3 stride 2 -> Relu -> pointwise
    /// (12 channels) -> MaxPool 2x2 -> Flatten -> MatMul [108, 20] -> y[1,20].</summary>
    static ModelProto DepthwiseMatMul()
    {
        var b = new Builder(2);
        b.Input("x", 1, 4, 12, 12).Output("y", 1, 20)
            .Weight("w1", 0.3f, 16, 4, 3, 3).Weight("b1", 0.2f, 16).Weight("wd", 0.5f, 16, 1, 3, 3).Weight("bd", 0.2f, 16)
            .Weight("wp", 0.3f, 12, 16, 1, 1).Weight("bp", 0.2f, 12).Weight("wm", 0.2f, 108, 20)
            .Node("Conv", new[] { "x", "w1", "b1" }, "c1", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "c1" }, "r1")
            .Node("Conv", new[] { "r1", "wd", "bd" }, "c2", ("pads", new long[] { 1, 1, 1, 1 }), ("strides", new long[] { 2, 2 }), ("group", 16L))
            .Node("Relu", new[] { "c2" }, "r2")
            .Node("Conv", new[] { "r2", "wp", "bp" }, "c3")
            .Node("MaxPool", new[] { "c3" }, "p", ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 }))
            .Node("Flatten", new[] { "p" }, "f")
            .Node("MatMul", new[] { "f", "wm" }, "y");
        return b.Model;
    }

    /// <summary>x[1,5,24] -> MatMul [24, 40] -> y[1,5,40] (the dynamic mode's MatMulInteger).</summary>
    static ModelProto MatMulOnly()
    {
        var b = new Builder(3);
        b.Input("x", 1, 5, 24).Output("y", 1, 5, 40).Weight("w", 0.3f, 24, 40).Node("MatMul", new[] { "x", "w" }, "y");
        return b.Model;
    }

    sealed class Builder
    {
        readonly Random _random;
        int _nodes;
        public ModelProto Model { get; }
        GraphProto Graph => Model.Graph;

        public Builder(int seed)
        {
            _random = new Random(seed);
            Model = new ModelProto { IrVersion = 7, ProducerName = "PtqTools.Arm64Check", Graph = new GraphProto { Name = "conformance" } };
            Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        }

        static ValueInfoProto Value(string name, long[] dims)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
        }

        public Builder Input(string name, params long[] dims) { Graph.Input.Add(Value(name, dims)); return this; }
        public Builder Output(string name, params long[] dims) { Graph.Output.Add(Value(name, dims)); return this; }

        public Builder Weight(string name, float scale, params long[] dims)
        {
            Graph.Initializer.Add(TensorData.FromFloats(name, RandomFloats(_random, (int)dims.Aggregate(1L, (a, b) => a * b), scale), dims));
            return this;
        }

        public Builder Node(string op, string[] inputs, string output, params (string Name, object Value)[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = $"{op.ToLowerInvariant()}{++_nodes}" };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            foreach (var (name, value) in attributes)
                node.Attribute.Add(value switch
                {
                    long i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
                    long[] ints => Ints(name, ints),
                    _ => throw new ArgumentException($"attribute {name}: {value.GetType().Name}"),
                });
            Graph.Node.Add(node);
            return this;
        }

        static AttributeProto Ints(string name, long[] values)
        {
            var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
            a.Ints.AddRange(values);
            return a;
        }
    }
}
