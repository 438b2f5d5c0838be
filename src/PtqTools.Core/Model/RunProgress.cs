namespace PtqTools.Core.Model;

/// <summary>Progress of a run over a data set.</summary>
public readonly record struct RunProgress(int Done, int Total, double SamplesPerSecond, string Current);
