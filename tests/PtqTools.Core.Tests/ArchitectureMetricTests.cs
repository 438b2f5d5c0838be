using PtqTools.Core.Evaluation;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The task metrics of issue 17 against scalar references computed by hand or by brute force.</summary>
public class ArchitectureMetricTests
{
    [Fact]
    public void MaskedMeanPooled_AveragesAttendedTokensOnly()
    {
        var hidden = new float[] { 1, 2, 3, 4, 100, 100 };   // 3 tokens of width 2, the last one padding
        Assert.Equal(new float[] { 2, 3 }, TaskMetrics.MaskedMeanPooled(hidden, new long[] { 1, 1, 0 }, 2));
        Assert.Equal(new float[] { 0, 0 }, TaskMetrics.MaskedMeanPooled(hidden, new long[] { 0, 0, 0 }, 2));
        Check.Throws("MetricLengthMismatch", () => TaskMetrics.MaskedMeanPooled(hidden, new long[] { 1, 1 }, 2));
    }

    [Fact]
    public void CtcGreedyDecode_CollapsesRepeatsThenDropsBlanks()
    {
        // Frames' top classes: 1 1 0 1 2 2 0 0 3 -> 1 1 2 3 (a blank between repeats keeps both).
        int[] top = { 1, 1, 0, 1, 2, 2, 0, 0, 3 };
        var scores = new float[top.Length * 4];
        for (int f = 0; f < top.Length; f++) { for (int c = 0; c < 4; c++) scores[f * 4 + c] = 0.1f; scores[f * 4 + top[f]] = 0.7f; }
        Assert.Equal(new[] { 1, 1, 2, 3 }, TaskMetrics.CtcGreedyDecode(scores, 4));
        Assert.Equal(new[] { 1, 0, 1, 2, 0, 3 }, TaskMetrics.CtcGreedyDecode(scores, 4, blank: 9));
    }

    [Fact]
    public void EditDistanceAndCer_MatchHandCounts()
    {
        Assert.Equal(3, TaskMetrics.EditDistance("kitten".Select(c => (int)c).ToArray(), "sitting".Select(c => (int)c).ToArray()));
        Assert.Equal(0, TaskMetrics.EditDistance(new[] { 1, 2 }, new[] { 1, 2 }));
        Assert.Equal(2, TaskMetrics.EditDistance(Array.Empty<int>(), new[] { 1, 2 }));
        // 1 edit over 4 reference characters plus 2 edits over 2: 3 / 6.
        Assert.Equal(0.5, TaskMetrics.CharacterErrorRate(new[] { new[] { 1, 2, 3 }, Array.Empty<int>() }, new[] { new[] { 1, 2, 3, 4 }, new[] { 5, 6 } }), 12);
        Assert.Equal(0.0, TaskMetrics.CharacterErrorRate(new[] { Array.Empty<int>() }, new[] { Array.Empty<int>() }));
    }

    [Fact]
    public void Auc_EqualsThePairwiseReference_WithTies()
    {
        Assert.Equal(0.75, TaskMetrics.Auc(new[] { 0.9, 0.4, 0.5, 0.1 }, new[] { true, true, false, false }), 12);   // 3 of 4 pairs
        Assert.Equal(0.5, TaskMetrics.Auc(new[] { 0.5, 0.5 }, new[] { true, false }), 12);                          // a tie counts half
        Assert.True(double.IsNaN(TaskMetrics.Auc(new[] { 0.5, 0.6 }, new[] { true, true })));
        var r = new Random(3);
        for (int trial = 0; trial < 20; trial++)
        {
            int n = r.Next(2, 200);
            var scores = Enumerable.Range(0, n).Select(_ => Math.Round(r.NextDouble(), 1)).ToArray();   // many ties
            var labels = Enumerable.Range(0, n).Select(i => i == 0 || (i != 1 && r.NextDouble() < 0.4)).ToArray();
            Assert.Equal(TaskMetrics.AucReference(scores, labels), TaskMetrics.Auc(scores, labels), 12);
        }
    }

    [Fact]
    public void DecisionAgreementAndMapIoU_MatchHandCounts()
    {
        Assert.Equal(0.75, TaskMetrics.DecisionAgreement(new[] { 0.6f, 0.4f, 0.5f, 0.1f }, new[] { 0.9f, 0.2f, 0.49f, 0.0f }));
        // Above 0.3: a = {0, 1, 2}, b = {1, 2, 3}: 2 / 4.
        Assert.Equal(0.5, TaskMetrics.MapIoU(new[] { 0.9f, 0.3f, 0.5f, 0.1f }, new[] { 0.1f, 0.8f, 0.31f, 0.7f }));
        Assert.Equal(1.0, TaskMetrics.MapIoU(new[] { 0.1f }, new[] { 0.2f }));
        Check.Throws("MetricLengthMismatch", () => TaskMetrics.MapIoU(new[] { 0.1f }, new[] { 0.2f, 0.3f }));
    }
}
