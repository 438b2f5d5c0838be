namespace PtqTools.Core.Kernels;

/// <summary>
/// Runs the parts of one kernel call on separate threads: part 0 on the caller, parts 1.. each on its own dedicated
/// worker thread (started once, then reused: their thread-static buffers and AMX tile permission stay). Parallel.For
/// is not used for this: with a few coarse parts the calling thread usually takes them all before a pool thread wakes
/// (measured: 2 parts of 250 µs ran on two threads only 10 times in 200 on the loaded machine, 176 quiet). The work is described by a function pointer and
/// a pointer to the caller's state, so a call allocates nothing. One call at a time uses the workers; a concurrent or
/// nested call runs its parts one after the other on its own thread (same result, the parts are independent).
/// </summary>
internal static unsafe class KernelWorkers
{
    sealed class Worker
    {
        public readonly ManualResetEventSlim Go = new(false, 200);
        public delegate*<void*, int, void> Body;
        public void* State;
        public int Part;
        public Exception? Error;
    }

    static readonly object Gate = new();
    static Worker[] s_workers = Array.Empty<Worker>();
    static readonly ManualResetEventSlim Done = new(false, 200);
    static int s_pending;
    static int s_busy;

    /// <summary>body(state, part) for every part in [0, parts), in parallel where the workers are free.</summary>
    public static void Run(int parts, delegate*<void*, int, void> body, void* state)
    {
        if (parts <= 1) { if (parts == 1) body(state, 0); return; }
        if (Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
        {
            for (int p = 0; p < parts; p++) body(state, p);
            return;
        }
        try
        {
            var workers = Workers(parts - 1);
            Done.Reset();
            Volatile.Write(ref s_pending, parts - 1);
            for (int p = 1; p < parts; p++)
            {
                var w = workers[p - 1];
                w.Body = body; w.State = state; w.Part = p; w.Error = null;
                w.Go.Set();
            }
            Exception? mine = null;
            try { body(state, 0); } catch (Exception e) { mine = e; }
            Done.Wait();
            if (mine is not null) throw mine;
            for (int p = 1; p < parts; p++)
                if (workers[p - 1].Error is { } e) throw new AggregateException("A kernel worker failed.", e);
        }
        finally { Volatile.Write(ref s_busy, 0); }
    }

    static Worker[] Workers(int count)
    {
        if (s_workers.Length >= count) return s_workers;
        lock (Gate)
        {
            if (s_workers.Length >= count) return s_workers;
            var list = new Worker[count];
            s_workers.CopyTo(list, 0);
            for (int i = s_workers.Length; i < count; i++)
            {
                var w = list[i] = new Worker();
                new Thread(() => Loop(w)) { IsBackground = true, Name = $"PtqTools kernel worker {i + 1}" }.Start();
            }
            return s_workers = list;
        }
    }

    static void Loop(Worker w)
    {
        while (true)
        {
            w.Go.Wait();
            w.Go.Reset();
            try { w.Body(w.State, w.Part); } catch (Exception e) { w.Error = e; }
            if (Interlocked.Decrement(ref s_pending) == 0) Done.Set();
        }
    }
}
