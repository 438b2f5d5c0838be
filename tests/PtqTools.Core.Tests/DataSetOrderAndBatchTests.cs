using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>-Shuffle/-Seed, batching, and the push-based calibration session.</summary>
public sealed class DataSetOrderAndBatchTests
{
    static PtqDataSet Arrays(int n, PtqDataSet options, int seed = 1)
    {
        var random = new Random(seed);
        var samples = Enumerable.Range(0, n).Select(_ => TinyModels.RandomInput(random)).ToArray();
        return DataSetReader.FromArrays(samples, new[] { 3, 8, 8 }, null, options);
    }

    static int[] Order(PtqDataSet ds)
    {
        using var reader = new SampleReader(ds);
        return reader.Read(CancellationToken.None).Select(s => s.Index).ToArray();
    }

    [Fact]
    public void ShuffleIsAPermutationFixedByTheSeed()
    {
        var a = Order(Arrays(50, new PtqDataSet { Shuffle = true, Seed = 7, Skip = 5 }));
        var b = Order(Arrays(50, new PtqDataSet { Shuffle = true, Seed = 7, Skip = 5 }));
        var c = Order(Arrays(50, new PtqDataSet { Shuffle = true, Seed = 8, Skip = 5 }));
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        // A permutation of the samples after Skip.
        Assert.Equal(Enumerable.Range(5, 45), a.OrderBy(i => i));
        Assert.NotEqual(Enumerable.Range(5, 45), a);
        // With a count, a random subset: the first Count of the same permutation.
        var subset = Order(Arrays(50, new PtqDataSet { Shuffle = true, Seed = 7, Skip = 5, Count = 10 }));
        Assert.Equal(a[..10], subset);
        // Without Shuffle: in order.
        Assert.Equal(new[] { 5, 6, 7 }, Order(Arrays(50, new PtqDataSet { Skip = 5, Count = 3 })));
        // SplitMix64 + Fisher-Yates gives the same order on every platform and .NET version: these indices come from
        // an independent implementation of the same definition (a few lines of Python with 64-bit integers).
        Assert.Equal(new[] { 22, 6, 45, 32, 27, 19, 29, 24, 17, 28 }, subset);
        Assert.Equal(DataSetReader.Indices(new PtqDataSet { Shuffle = true, Seed = 7, SourceCount = 50, Skip = 5, Count = 10 }), subset);
    }

    [Fact]
    public void ShuffledSamplesAreTheSameSamples()
    {
        var plain = Arrays(12, new PtqDataSet());
        var shuffled = Arrays(12, new PtqDataSet { Shuffle = true, Seed = 3 });
        using var r1 = new SampleReader(plain);
        using var r2 = new SampleReader(shuffled);
        var byIndex = r1.Read(CancellationToken.None).ToDictionary(s => s.Index);
        foreach (var s in r2.Read(CancellationToken.None)) Assert.Equal(byIndex[s.Index].Data, s.Data);
    }

    [Fact]
    public void BatchesHoldOnlySamplesOfOneShape()
    {
        Sample F(int i, params int[] shape) => new(i, $"s{i}", new float[shape.Aggregate(1, (a, d) => a * d)], shape, -1);
        var samples = new[] { F(0, 2, 2), F(1, 2, 2), F(2, 2, 2), F(3, 4), F(4, 4), F(5, 2, 2) };
        var batches = SampleBatcher.Group(samples, 2).Select(b => b.Select(s => s.Index).ToArray()).ToList();
        Assert.Equal(new[] { new[] { 0, 1 }, new[] { 2 }, new[] { 3, 4 }, new[] { 5 } }, batches);
        var combined = SampleBatcher.Combine(new[] { samples[0] with { Data = new float[] { 1, 2, 3, 4 } }, samples[1] with { Data = new float[] { 5, 6, 7, 8 } } });
        Assert.Equal(2, combined.BatchCount);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, combined.Data);
        Assert.Equal(new[] { 2, 2 }, combined.Shape);
    }

    [Fact]
    public void WholeInputSamplesConcatenateAlongTheBatch()
    {
        TensorProto Ids(params long[] ids)
        {
            var t = new TensorProto { Name = "input_ids", DataType = (int)OnnxDataType.Int64 };
            t.Int64Data.AddRange(ids);
            t.Dims.Add(1); t.Dims.Add(ids.Length);
            return t;
        }
        var a = new Sample(0, "a", Array.Empty<float>(), new[] { 1, 3 }, -1) { Inputs = new[] { Ids(1, 2, 3) } };
        var b = new Sample(1, "b", Array.Empty<float>(), new[] { 1, 3 }, -1) { Inputs = new[] { Ids(4, 5, 6) } };
        var c = new Sample(2, "c", Array.Empty<float>(), new[] { 1, 2 }, -1) { Inputs = new[] { Ids(7, 8) } };
        Assert.False(SampleBatcher.Compatible(a, c));
        var ab = SampleBatcher.Combine(new[] { a, b });
        var t = Assert.Single(ab.Inputs!);
        Assert.Equal(new long[] { 2, 3 }, t.Dims);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, Enumerable.Range(0, 6).Select(i => BitConverter.ToInt64(t.RawData.Span[(8 * i)..])));
    }

    /// <summary>The residual tiny model with a dynamic batch dimension.</summary>
    static string DynamicBatchModel(TempDir dir)
    {
        var b = TinyModels.ResidualCnn();
        foreach (var v in new[] { b.Graph.Input[0], b.Graph.Output[0] })
        {
            v.Type.TensorType.Shape.Dim[0].ClearDimValue();
            v.Type.TensorType.Shape.Dim[0].DimParam = "N";
        }
        return b.Save(dir.File("dynamic.onnx"));
    }

    [Fact]
    public void BatchedCalibrationGivesWhatOneSampleAtATimeGives()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var prepared = ModelPreparer.Prepare(DynamicBatchModel(dir));
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var one = ActivationCalibrator.Run(prepared, plan.Activations, Arrays(10, new PtqDataSet()), 1, null, CancellationToken.None);
        var progress = new List<RunProgress>();
        var batched = ActivationCalibrator.Run(prepared, plan.Activations, Arrays(10, new PtqDataSet { BatchSize = 4 }), 1, new CalibrationOptions(), null,
            new SyncProgress(progress.Add), CancellationToken.None);
        // Batches of 4, 4 and 2: one progress report per batch.
        Assert.Equal(new[] { 4, 8, 10 }, progress.Select(p => p.Done));
        for (int i = 0; i < one.Count; i++)
        {
            Assert.Equal(10, batched[i].SampleCount);
            Assert.Equal(one[i].ElementCount, batched[i].ElementCount);
            // ONNX Runtime may compute a batch with other kernels: equal up to float rounding.
            Assert.Equal(one[i].Min, batched[i].Min, 1e-4f);
            Assert.Equal(one[i].Max, batched[i].Max, 1e-4f);
            Assert.Equal(one[i].SampleMaxSum, batched[i].SampleMaxSum, 1e-3);
            Assert.Equal(one[i].Histogram.Sum(), batched[i].Histogram.Sum());
        }
    }

    [Fact]
    public void AFixedBatchDimensionRefusesBatches()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var prepared = ModelPreparer.Prepare(TinyModels.ResidualCnn().Save(dir.File("fixed.onnx")));
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var ex = Check.Throws("BatchSizeNotSupported", () => ActivationCalibrator.Run(prepared, plan.Activations, Arrays(4, new PtqDataSet { BatchSize = 2 }), 1, null, CancellationToken.None));
        Assert.Contains("-BatchSize 1", ex.Message);
    }

    [Fact]
    public void ASessionTakesPushedSamplesAndSkipsBadOnesInABatch()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var prepared = ModelPreparer.Prepare(DynamicBatchModel(dir));
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var random = new Random(5);
        var good = Enumerable.Range(0, 5).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var huge = Enumerable.Repeat(float.MaxValue, 3 * 8 * 8).ToArray();
        var data = new PtqDataSet { Name = "pushed", BatchSize = 3 };
        var skipped = new List<PtqException>();
        List<TensorStatistics> stats;
        using (var session = new CalibrationSession(prepared, plan.Activations, data, 1, new CalibrationOptions(), skipped.Add, null, CancellationToken.None))
        {
            int i = 0;
            foreach (var s in new[] { good[0], huge, good[1], good[2], good[3], good[4] })
                session.Add(new Sample(i, $"s{i++}", s, new[] { 3, 8, 8 }, -1));
            stats = session.Finish();
            Assert.Equal(5, session.Done);
            Assert.Equal(1, session.Skipped);
        }
        Assert.Equal("s1", Assert.Single(skipped).Target);
        var reference = ActivationCalibrator.Run(prepared, plan.Activations, DataSetReader.FromArrays(good, new[] { 3, 8, 8 }, null, new PtqDataSet()), 1, null, CancellationToken.None);
        for (int t = 0; t < stats.Count; t++)
        {
            Assert.Equal(5, stats[t].SampleCount);
            Assert.Equal(reference[t].Max, stats[t].Max, 1e-4f);
        }
    }

    sealed class SyncProgress(Action<RunProgress> report) : IProgress<RunProgress>
    {
        public void Report(RunProgress value) => report(value);
    }
}
