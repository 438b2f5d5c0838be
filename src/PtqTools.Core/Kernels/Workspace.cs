namespace PtqTools.Core.Kernels;

/// <summary>
/// The kernels' scratch buffers (im2col rows, int32 accumulators, widened GEMM operands), one set per calling thread,
/// shared by every layer and grown to the largest request: the working memory of a model run is then bounded by its
/// largest layer, not the sum of its layers (issue 16). A buffer is valid until the next request for the same slot
/// on the same thread; kernels take each slot once per call (nested calls take distinct slots), never hand it out.
/// </summary>
public static class Workspace
{
    /// <summary>The distinct buffers a kernel call may hold at once.</summary>
    internal enum Slot { Im2Col, GemmOut, ConvAcc, WideA, ParallelOut, Count }

    [ThreadStatic] static Array?[]? t_buffers;
    [ThreadStatic] static long t_bytes;
    [ThreadStatic] static long t_requested;

    /// <summary>A buffer of at least <paramref name="length"/> elements for this thread's <paramref name="slot"/>
    /// (contents undefined; clear what must start at zero). Grows, never shrinks, until <see cref="Release"/>.</summary>
    internal static T[] Rent<T>(Slot slot, long length) where T : unmanaged
    {
        var buffers = t_buffers ??= new Array?[(int)Slot.Count];
        long bytes = length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        t_requested = Math.Max(t_requested, bytes);
        if (buffers[(int)slot] is T[] held && held.Length >= length) return held;
        if (buffers[(int)slot] is { } old) t_bytes -= (long)old.Length * ElementSize(old);
        var fresh = GC.AllocateUninitializedArray<T>(checked((int)length));
        buffers[(int)slot] = fresh;
        t_bytes += bytes;
        return fresh;
    }

    static int ElementSize(Array a) => a switch { short[] => 2, int[] => 4, byte[] or sbyte[] => 1, _ => 8 };

    /// <summary>Bytes of scratch this thread holds now (the sum of its slots, each the largest it was asked for).</summary>
    public static long Bytes => t_bytes;

    /// <summary>The largest single scratch request on this thread since the last <see cref="Release"/>.</summary>
    public static long LargestRequest => t_requested;

    /// <summary>Drops this thread's scratch (the next kernel call allocates afresh).</summary>
    public static void Release()
    {
        t_buffers = null;
        t_bytes = 0;
        t_requested = 0;
    }
}
