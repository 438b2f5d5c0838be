using Google.Protobuf;
using Onnx;
using PtqTools.Core.Onnx;
using SkiaSharp;

namespace PtqTools.TestModels;

/// <summary>Writes and reads samples in the ONNX test layout: folder/test_data_set_N/input_K.pb.</summary>
public static class SampleFiles
{
    public static void Write(string folder, int index, params TensorProto[] inputs)
    {
        var dir = Path.Combine(folder, $"test_data_set_{index}");
        Directory.CreateDirectory(dir);
        for (int k = 0; k < inputs.Length; k++) File.WriteAllBytes(Path.Combine(dir, $"input_{k}.pb"), inputs[k].ToByteArray());
    }

    public static string[] Sets(string folder) =>
        Directory.GetDirectories(folder, "test_data_set_*").OrderBy(d => int.Parse(Path.GetFileName(d)["test_data_set_".Length..])).ToArray();

    public static List<TensorProto> Read(string set)
    {
        var files = Directory.GetFiles(set, "input_*.pb").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[6..])).ToArray();
        return files.Select(f => TensorProto.Parser.ParseFrom(File.ReadAllBytes(f))).ToList();
    }

    public static TensorProto Floats(string name, float[] v, params long[] dims) => TensorData.FromFloats(name, v, dims);

    public static TensorProto Int64s(string name, long[] v, params long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)OnnxDataType.Int64 };
        t.Dims.AddRange(dims);
        var raw = new byte[v.Length * 8];
        Buffer.BlockCopy(v, 0, raw, 0, raw.Length);
        t.RawData = ByteString.CopyFrom(raw);
        return t;
    }
}

/// <summary>Text images drawn with SkiaSharp: dark text on a light, slightly noisy background, in the fonts the
/// machine has (DejaVu and Liberation, read from their files: SkiaSharp's NoDependencies build has no fontconfig).</summary>
public sealed class TextRenderer
{
    readonly Random _r;
    readonly SKTypeface[] _fonts;

    public TextRenderer(int seed)
    {
        _r = new Random(seed);
        var files = new[] { "/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation" }
            .Where(Directory.Exists).SelectMany(d => Directory.GetFiles(d, "*.ttf")).Where(f => !f.Contains("Math", StringComparison.Ordinal))
            .OrderBy(f => f, StringComparer.Ordinal).ToArray();
        _fonts = files.Select(SKTypeface.FromFile).Where(t => t is not null).ToArray();
        if (_fonts.Length == 0) _fonts = new[] { SKTypeface.Default };
    }

    public Random Random => _r;

    /// <summary>RGB bytes (HWC) of a width x height image with the given words placed; rotated 180 degrees when asked.</summary>
    public byte[] Render(int width, int height, IEnumerable<(string Text, float X, float Y, float Size)> words, bool rotate180 = false)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(bitmap))
        {
            byte bg = (byte)_r.Next(190, 250);
            canvas.Clear(new SKColor(bg, (byte)Math.Min(255, bg + _r.Next(-8, 8)), (byte)Math.Min(255, bg + _r.Next(-8, 8))));
            if (rotate180) { canvas.Translate(width, height); canvas.RotateDegrees(180); }
            foreach (var (text, x, y, size) in words)
            {
                byte fg = (byte)_r.Next(0, 70);
                using var paint = new SKPaint { Color = new SKColor(fg, fg, (byte)Math.Min(255, fg + _r.Next(0, 40))), IsAntialias = true };
                using var font = new SKFont(_fonts[_r.Next(_fonts.Length)], size);
                canvas.DrawText(text, x, y, SKTextAlign.Left, font, paint);
            }
        }
        var pixels = bitmap.Pixels;
        var rgb = new byte[width * height * 3];
        for (int i = 0; i < pixels.Length; i++)
        {
            int noise = (int)(_r.NextDouble() * 12 - 6);
            rgb[i * 3] = Clamp(pixels[i].Red + noise);
            rgb[i * 3 + 1] = Clamp(pixels[i].Green + noise);
            rgb[i * 3 + 2] = Clamp(pixels[i].Blue + noise);
        }
        return rgb;
    }

    static byte Clamp(int v) => (byte)Math.Clamp(v, 0, 255);

    /// <summary>CHW floats: (x / 255 - mean) / std per channel.</summary>
    public static float[] Normalize(byte[] rgb, int width, int height, float[] mean, float[] std)
    {
        var v = new float[3 * width * height];
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < width * height; i++) v[c * width * height + i] = (rgb[i * 3 + c] / 255f - mean[c]) / std[c];
        return v;
    }

    /// <summary>A text snippet of <paramref name="min"/> to <paramref name="max"/> characters from the sentences.</summary>
    public string Snippet(IReadOnlyList<string> sentences, int min, int max, bool charsetOnly)
    {
        var s = sentences[_r.Next(sentences.Count)];
        if (charsetOnly) s = new string(s.ToLowerInvariant().Where(ch => ImageModels.CrnnCharset.Contains(ch) || ch == ' ').ToArray());
        int len = Math.Min(s.Length, _r.Next(min, max + 1));
        int start = _r.Next(0, Math.Max(1, s.Length - len));
        return s.Substring(start, len).Trim() is { Length: > 0 } t ? t : "text";
    }
}

/// <summary>Synthetic audio: a noise floor, speech-like bursts (a voiced harmonic series with a wandering pitch,
/// syllable-rate amplitude modulation) and non-speech noise bursts.</summary>
public static class Audio
{
    public static float[] Stream(Random r, int length, int sampleRate)
    {
        var a = new float[length];
        double floor = 0.002 + r.NextDouble() * 0.006;
        for (int i = 0; i < length; i++) a[i] = (float)(Gauss(r) * floor);
        int pos = r.Next(0, sampleRate / 4);
        while (pos < length)
        {
            int len = (int)(sampleRate * (0.2 + r.NextDouble() * 0.7));
            bool speech = r.NextDouble() < 0.75;
            double amp = 0.04 + r.NextDouble() * 0.25, f0 = 90 + r.NextDouble() * 140, syll = 3 + r.NextDouble() * 3, phase = 0;
            for (int i = 0; i < len && pos + i < length; i++)
            {
                double t = i / (double)sampleRate;
                double env = Math.Sin(Math.PI * i / len) * (speech ? 0.55 + 0.45 * Math.Sin(2 * Math.PI * syll * t) : 1);
                double v;
                if (speech)
                {
                    double f = f0 * (1 + 0.08 * Math.Sin(2 * Math.PI * 1.3 * t));
                    phase += 2 * Math.PI * f / sampleRate;
                    v = 0;
                    for (int k = 1; k <= 12 && k * f < sampleRate / 2; k++) v += Math.Sin(k * phase) / k * (k is 3 or 4 ? 1.8 : 1);
                    v *= 0.5;
                }
                else v = Gauss(r) * 0.4;
                a[pos + i] += (float)(amp * env * v);
            }
            pos += len + (int)(sampleRate * (0.15 + r.NextDouble() * 0.8));
        }
        return a;
    }

    static double Gauss(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
}
