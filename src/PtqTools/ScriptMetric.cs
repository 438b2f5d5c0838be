using System.Collections;
using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Evaluation;

namespace PtqTools;

/// <summary>Turns a -Metric script block into an engine task metric. It runs on the pipeline thread (the engine calls
/// it from the cmdlet's own call), with $args[0] / param($Outputs, $Labels).</summary>
internal static class ScriptMetric
{
    public static TaskMetric From(ScriptBlock script, string name) => (outputs, labels) =>
    {
        System.Collections.ObjectModel.Collection<PSObject> result;
        try
        {
            result = script.Invoke(outputs, labels);
        }
        catch (RuntimeException ex)
        {
            throw new PtqException("MetricFailed", PtqErrorKind.InvalidArgument, $"The metric '{name}' failed: {ex.Message}", name, ex);
        }
        var values = new List<double>();
        foreach (var item in result)
        {
            var value = item?.BaseObject;
            if (value is IEnumerable list and not string)
                foreach (var v in list) values.Add(ToDouble(v, name));
            else
                values.Add(ToDouble(value, name));
        }
        return values.ToArray();
    };

    static double ToDouble(object? value, string name)
    {
        if (value is PSObject pso) value = pso.BaseObject;
        try
        {
            return LanguagePrimitives.ConvertTo<double>(value);
        }
        catch (PSInvalidCastException)
        {
            throw new PtqException("MetricNotNumeric", PtqErrorKind.InvalidArgument,
                $"The metric '{name}' returned '{value}', which is not a number; return one number per sample or a single number.", name);
        }
    }
}
