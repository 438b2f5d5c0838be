using System.Collections;
using System.Globalization;

namespace PtqTools.Core.Model;

/// <summary>
/// A list property of an output object: a real list (indexing, Count, the pipeline, ConvertTo-Json and remoting see
/// its items) whose text is its items joined, so that Export-Csv and string conversion write the values rather than
/// a type name such as <c>System.String[]</c>. <see cref="Length"/> is <see cref="List{T}.Count"/>, as on an array.
/// </summary>
public sealed class ValueList<T> : List<T>
{
    public ValueList() { }

    public ValueList(IEnumerable<T> items) : base(items) { }

    /// <summary>The number of items (scripts written for an array read Length).</summary>
    public int Length => Count;

    [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(items))]
    public static implicit operator ValueList<T>?(T[]? items) => items is null ? null : new(items);

    public override string ToString() => ValueText.Join(this);
}

/// <summary>The text of list values: numbers in the invariant culture, nested lists in brackets.</summary>
public static class ValueText
{
    public static string Join(IEnumerable items)
    {
        var parts = new List<string>();
        bool numbers = true;   // numbers and nested lists joined with ", "; names and objects with "; "
        foreach (var item in items)
        {
            if (item is string || item is not (IConvertible or IEnumerable)) numbers = false;
            parts.Add(Item(item));
        }
        return string.Join(numbers ? ", " : "; ", parts);
    }

    static string Item(object? item) => item switch
    {
        null => "",
        string s => s,
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        IEnumerable e => "[" + Join(e) + "]",
        _ => item.ToString() ?? "",
    };
}
