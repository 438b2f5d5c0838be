namespace PtqTools.Core;

/// <summary>What kind of failure a <see cref="PtqException"/> is; the cmdlets map it to an ErrorCategory.</summary>
public enum PtqErrorKind
{
    InvalidData,
    InvalidArgument,
    ObjectNotFound,
    NotSupported,
    SecurityError,
    WriteError,
    ResourceExists,
    OperationStopped,
    PermissionDenied,
}

/// <summary>
/// The one exception type the engine throws for expected failures. <see cref="ErrorId"/> is stable: scripts and
/// tests may match on it. <see cref="Target"/> is the object the failure is about (a path, a tensor name).
/// </summary>
public sealed class PtqException : Exception
{
    public PtqException(string errorId, PtqErrorKind kind, string message, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Kind = kind;
        Target = target;
    }

    public string ErrorId { get; }
    public PtqErrorKind Kind { get; }
    public object? Target { get; }
}
