namespace PtqTools.Core.Engine;

/// <summary>
/// The engine's recycled value arrays: an intermediate dropped at its last use (<see cref="IntegerEngine.ReleasedAfter"/>)
/// whose array nothing else holds comes back here, and the next op asking for an array of that element type and
/// length takes it instead of a new one. A run then allocates (almost) nothing once the first has filled the pool,
/// and the pool holds at most what one run released. Thread-safe (an engine may run on several threads).
/// </summary>
internal sealed class EngineBuffers
{
    /// <summary>Arrays kept per element type and length: more are dropped to the GC.</summary>
    const int PerShape = 4;

    readonly Dictionary<(Type, int), Stack<Array>> _free = new();
    long _bytes;

    /// <summary>Bytes the pool holds now.</summary>
    public long Bytes { get { lock (_free) return _bytes; } }

    /// <summary>An array of exactly <paramref name="length"/> elements, contents undefined (callers write every one).</summary>
    public T[] Rent<T>(long length) where T : unmanaged
    {
        int n = checked((int)length);
        lock (_free)
        {
            if (_free.TryGetValue((typeof(T), n), out var stack) && stack.Count > 0)
            {
                var a = (T[])stack.Pop();
                _bytes -= (long)n * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
                return a;
            }
        }
        return GC.AllocateUninitializedArray<T>(n);
    }

    /// <summary>Takes back an array nothing will read again (the caller's guarantee).</summary>
    public void Return(Array a)
    {
        var element = a.GetType().GetElementType()!;
        int size = element == typeof(float) || element == typeof(int) ? 4 : element == typeof(byte) || element == typeof(sbyte) ? 1 : 0;
        if (size == 0 || a.Length == 0) return; // only the types the engine's own ops produce
        lock (_free)
        {
            if (!_free.TryGetValue((element, a.Length), out var stack)) _free[(element, a.Length)] = stack = new Stack<Array>();
            if (stack.Count >= PerShape) return;
            foreach (var held in stack) if (ReferenceEquals(held, a)) return;
            stack.Push(a);
            _bytes += (long)a.Length * size;
        }
    }
}
