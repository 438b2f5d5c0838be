using System.Net;
using System.Text;
using System.Text.Json;
using PtqTools.Core.Model;
using ScottPlot;

namespace PtqTools.Core.Reporting;

/// <summary>The reports one quantization produced, gathered for one document.</summary>
public sealed class QuantizationReportData
{
    public List<QuantizationResult> Results { get; } = new();
    public List<AccuracyReport> Accuracy { get; } = new();
    public List<LayerError> Layers { get; } = new();
    public List<ModelPerformance> Performance { get; } = new();
    public List<TensorStatistics> Statistics { get; } = new();

    public bool IsEmpty => Results.Count + Accuracy.Count + Layers.Count + Performance.Count + Statistics.Count == 0;
}

/// <summary>HTML (self-contained: charts are PNG data URIs drawn with ScottPlot, nothing is fetched), Markdown and
/// JSON views of the same report objects.</summary>
public static class QuantizationReport
{
    // NewLine "\n", as the Markdown and HTML views: indented JSON takes Environment.NewLine (CRLF on Windows) by default.
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NewLine = "\n", NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static string ToJson(QuantizationReportData data) => JsonSerializer.Serialize(new
    {
        data.Results, data.Accuracy, data.Layers, data.Performance, data.Statistics,
    }, Json);

    public static string ToMarkdown(QuantizationReportData data)
    {
        var md = new StringBuilder("# Quantization report\n\n");
        foreach (var (title, header, rows) in Tables(data))
        {
            md.Append($"## {title}\n\n| {string.Join(" | ", header)} |\n|{string.Concat(header.Select(_ => "---|"))}\n");
            foreach (var row in rows) md.Append($"| {string.Join(" | ", row.Select(c => c.Replace("|", "\\|")))} |\n");
            md.Append('\n');
        }
        return md.ToString();
    }

    public static string ToHtml(QuantizationReportData data)
    {
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Quantization report</title>\n<style>")
            .Append("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}")
            .Append("td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}")
            .Append("img{max-width:100%;border:1px solid #ddd}.histograms{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figcaption{font-size:small;max-width:420px}</style></head><body>\n<h1>Quantization report</h1>\n");
        foreach (var (title, header, rows) in Tables(data))
        {
            html.Append($"<h2>{Enc(title)}</h2>\n<table><tr>{string.Concat(header.Select(h => $"<th>{Enc(h)}</th>"))}</tr>\n");
            foreach (var row in rows) html.Append($"<tr>{string.Concat(row.Select(c => $"<td>{Enc(c)}</td>"))}</tr>\n");
            html.Append("</table>\n");
        }
        if (data.Layers.Count > 0)
            html.Append("<h2>Per-layer SQNR</h2>\n").Append(Image("chart-layer-sqnr", "Per-layer SQNR (dB)", LayerChart(data.Layers)));
        if (data.Statistics.Count > 0)
            html.Append("<h2>Activation ranges</h2>\n<p>Observed minimum to maximum of each calibrated tensor (wide bar) and the range chosen for quantization (narrow bar).</p>\n")
                .Append(Image("chart-activation-ranges", "Activation ranges", RangeChart(data.Statistics)));
        var histograms = HistogramTensors(data.Statistics);
        if (histograms.Count > 0)
        {
            int withHistogram = data.Statistics.Count(s => s.Histogram.Length > 0);
            html.Append("<h2>Activation histograms</h2>\n<p>Calibration histogram of each tensor (log scale), with the range chosen for quantization (red) ")
                .Append("and the observed minimum and maximum (grey, dashed)")
                .Append(histograms.Count < withHistogram
                    ? $". The {histograms.Count} of {withHistogram} tensors whose chosen range loses the most (simulated quantization error relative to the tensor's variance) are shown, worst first.</p>\n"
                    : ".</p>\n")
                .Append("<div class=\"histograms\">\n");
            for (int i = 0; i < histograms.Count; i++)
            {
                var s = histograms[i];
                html.Append("<figure>").Append(Image($"chart-histogram-{i}", $"Histogram of {s.Tensor}", HistogramChart(s), "chart histogram").TrimEnd())
                    .Append($"<figcaption>{Enc(s.Tensor)}: {Enc(s.Method)} range [{F(s.RangeMin, "G4")}, {F(s.RangeMax, "G4")}] of observed [{F(s.Min, "G4")}, {F(s.Max, "G4")}]</figcaption></figure>\n");
            }
            html.Append("</div>\n");
        }
        // Marks, in the page the browser renders, how many charts decoded: a check that they show, not just that they are in the file.
        html.Append("<script>window.addEventListener('load',function(){function mark(sel,attr){var imgs=document.querySelectorAll(sel);var n=0;")
            .Append("imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute(attr,n+'/'+imgs.length);}")
            .Append("mark('img.chart','data-charts-rendered');mark('img.histogram','data-histograms-rendered');});</script>\n")
            .Append("</body></html>\n");
        return html.ToString();
    }

    static string Image(string id, string alt, byte[] png, string cssClass = "chart") =>
        $"<img class=\"{cssClass}\" id=\"{id}\" alt=\"{Enc(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\">\n";

    static string F(double v, string format) => v.ToString(format, System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Most histograms the HTML page draws (one small chart each).</summary>
    public const int MaxHistograms = 24;

    /// <summary>The tensors whose histograms are drawn: all of them up to <see cref="MaxHistograms"/>, else those whose
    /// chosen range costs most (the chosen method's simulated mean squared error over the tensor's variance).</summary>
    internal static List<TensorStatistics> HistogramTensors(IEnumerable<TensorStatistics> stats)
    {
        var list = stats.Where(s => s.Histogram.Length > 0).ToList();
        if (list.Count <= MaxHistograms) return list;
        static double Loss(TensorStatistics s)
        {
            var method = s.SelectedMethod.Length > 0 ? s.SelectedMethod : s.Method;
            var chosen = s.Ranges.FirstOrDefault(r => r.Method == method) ?? s.Ranges.FirstOrDefault();
            return chosen is null ? 0 : chosen.Error / Math.Max(1e-30, s.Std * s.Std);
        }
        return list.OrderByDescending(Loss).ThenBy(s => s.Tensor, StringComparer.Ordinal).Take(MaxHistograms).ToList();
    }

    /// <summary>Bars of the calibration histogram (merged to at most 120 bars), counts on a log scale, with the chosen
    /// range and the observed extremes as vertical lines.</summary>
    static byte[] HistogramChart(TensorStatistics s)
    {
        double width = s.HistogramBinWidth;
        int merge = Math.Max(1, (s.Histogram.Length + 119) / 120);
        var bars = new List<Bar>();
        for (int i = 0; i < s.Histogram.Length; i += merge)
        {
            long count = 0;
            for (int j = i; j < Math.Min(s.Histogram.Length, i + merge); j++) count += s.Histogram[j];
            if (count == 0) continue;
            double left = (s.HistogramStart + i) * width;
            bars.Add(new Bar { Position = left + merge * width / 2, Value = Math.Log10(count + 1), Size = merge * width, FillColor = Colors.SteelBlue, LineWidth = 0 });
        }
        var plot = new Plot();
        plot.Add.Bars(bars);
        foreach (var (x, color, dashed) in new[] { ((double)s.RangeMin, Colors.Red, false), (s.RangeMax, Colors.Red, false), (s.Min, Colors.Gray, true), (s.Max, Colors.Gray, true) })
        {
            var line = plot.Add.VerticalLine(x);
            line.Color = color;
            line.LineWidth = 2;
            if (dashed) line.LinePattern = LinePattern.Dashed;
        }
        plot.Title(s.Tensor.Length > 48 ? s.Tensor[..45] + "..." : s.Tensor);
        plot.YLabel("log10(count + 1)");
        plot.XLabel("value");
        return plot.GetImageBytes(420, 260, ImageFormat.Png);
    }

    static string Enc(string s) => WebUtility.HtmlEncode(s);

    static byte[] LayerChart(List<LayerError> layers)
    {
        var ordered = layers.OrderBy(l => l.Rank).ToList();
        var plot = new Plot();
        var isolated = ordered.Select((l, i) => new Bar { Position = i * 3, Value = l.IsolatedSqnrDb, FillColor = Colors.SteelBlue }).ToList();
        var accumulated = ordered.Select((l, i) => new Bar { Position = i * 3 + 1, Value = l.AccumulatedSqnrDb, FillColor = Colors.Orange }).ToList();
        plot.Add.Bars(isolated).LegendText = "isolated";
        plot.Add.Bars(accumulated).LegendText = "accumulated";
        plot.Axes.Bottom.SetTicks(ordered.Select((_, i) => i * 3 + 0.5).ToArray(), ordered.Select(l => l.Layer).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 60;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 160;
        plot.YLabel("SQNR (dB)");
        plot.Title("Per-layer SQNR, worst first");
        plot.ShowLegend();
        return plot.GetImageBytes(Math.Max(600, 40 * ordered.Count), 500, ImageFormat.Png);
    }

    static byte[] RangeChart(List<TensorStatistics> stats)
    {
        var plot = new Plot();
        var observed = stats.Select((s, i) => new Bar { Position = i, ValueBase = s.Min, Value = s.Max, Size = 0.8, FillColor = Colors.LightGray }).ToList();
        var chosen = stats.Select((s, i) => new Bar { Position = i, ValueBase = s.RangeMin, Value = s.RangeMax, Size = 0.3, FillColor = Colors.SteelBlue }).ToList();
        plot.Add.Bars(observed).LegendText = "observed min..max";
        plot.Add.Bars(chosen).LegendText = "chosen range";
        plot.Axes.Bottom.SetTicks(stats.Select((_, i) => (double)i).ToArray(), stats.Select(s => s.Tensor).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 60;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 160;
        plot.YLabel("value");
        plot.Title("Activation ranges");
        plot.ShowLegend();
        return plot.GetImageBytes(Math.Max(600, 30 * stats.Count), 500, ImageFormat.Png);
    }

    static IEnumerable<(string Title, string[] Header, IEnumerable<string[]> Rows)> Tables(QuantizationReportData d)
    {
        static string F(double? v, string format = "0.####") => v is double x ? x.ToString(format, System.Globalization.CultureInfo.InvariantCulture) : "";
        if (d.Results.Count > 0)
            yield return ("Quantization", new[] { "output", "size (bytes)", "of source", "quantized layers", "kept in float", "search" },
                d.Results.Select(r => new[] { Path.GetFileName(r.OutputPath), r.OutputSizeBytes.ToString(), F(r.SizeRatio, "0.0%"), r.QuantizedLayerCount.ToString(),
                    string.Join(", ", r.KeptInFloat), r.SearchSummary ?? "" }));
        if (d.Accuracy.Count > 0)
            yield return ("Accuracy", new[] { "quantized model", "samples", "cosine", "SQNR (dB)", "top-1 fp32", "top-1 int8", "metric", "metric fp32", "metric int8", "drop (95% CI)", "speedup" },
                d.Accuracy.Select(a =>
                {
                    var drop = a.MetricDrop ?? a.AccuracyDrop;
                    return new[] { Path.GetFileName(a.QuantizedModel), a.SampleCount.ToString(), F(a.Cosine), F(a.SqnrDb, "0.0"), F(a.FloatAccuracy), F(a.QuantizedAccuracy),
                        a.MetricName ?? "", F(a.FloatMetric), F(a.QuantizedMetric),
                        drop is null ? "" : $"{F(drop.Drop)}{(drop.DropLow is null ? "" : $" [{F(drop.DropLow)}, {F(drop.DropHigh)}]")}", F(a.Speedup, "0.00") };
                }));
        if (d.Performance.Count > 0)
            yield return ("Speed", new[] { "model", "threads", "batch", "p50 (ms)", "p90 (ms)", "p99 (ms)", "samples/s", "memory (MB)" },
                d.Performance.Select(p => new[] { Path.GetFileName(p.Model), p.Threads.ToString(), p.BatchSize.ToString(), F(p.P50Ms, "0.00"), F(p.P90Ms, "0.00"),
                    F(p.P99Ms, "0.00"), F(p.SamplesPerSecond, "0.0"), F(p.PeakMemoryBytes / 1048576.0, "0.0") }));
        if (d.Layers.Count > 0)
            yield return ("Layers", new[] { "rank", "layer", "op", "isolated SQNR (dB)", "model output, layer alone (dB)", "accumulated SQNR (dB)", "weight SQNR (dB)", "activation SQNR (dB)" },
                d.Layers.OrderBy(l => l.Rank).Select(l => new[] { l.Rank.ToString(), l.Layer, l.OpType, F(l.IsolatedSqnrDb, "0.0"), F(l.IsolatedOutputSqnrDb, "0.0"), F(l.AccumulatedSqnrDb, "0.0"), F(l.WeightSqnrDb, "0.0"), F(l.ActivationSqnrDb, "0.0") }));
    }
}
