using System.Collections.Concurrent;
using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PtqTools.Core;
using PtqTools.Core.Model;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

/// <summary>
/// The batch run: brings the quantized outputs of many models up to date. Each source's output is checked first
/// (<see cref="QuantizationStatusCheck"/>, the decision Get-QuantizationStatus shows); the models whose output is not
/// current are quantized by Invoke-Quantization, with the same options, in parallel runspaces of this process.
/// </summary>
[Cmdlet(VerbsData.Update, "QuantizedModel", DefaultParameterSetName = "Path", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, HelpUri = HelpLinks.Docs + "Update-QuantizedModel.md")]
[OutputType(typeof(QuantizedModelUpdate))]
public sealed class UpdateQuantizedModelCommand : SourceModelsCmdlet
{
    /// <summary>The folder the outputs go to, as &lt;source name&gt;.int8.onnx; created when missing.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string OutputFolder { get; set; } = "";

    /// <summary>Calibration data for the models that have no &lt;name&gt;.dataset.xml beside them.</summary>
    [Parameter]
    public PSObject? DataSet { get; set; }

    /// <summary>How many models are quantized at once.</summary>
    [Parameter]
    [ValidateRange(1, 64)]
    public int ThrottleLimit { get; set; } = 2;

    /// <summary>ONNX Runtime threads of each model's calibration run; by default the processors divided by -ThrottleLimit.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; }

    /// <summary>A JSON log of the run: a summary and one record per model.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? LogPath { get; set; }

    /// <summary>Quantizes every model, current outputs included.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Passed on to Invoke-Quantization.</summary>
    [Parameter]
    public SwitchParameter SkipHostCheck { get; set; }

    /// <summary>Passed on to Invoke-Quantization.</summary>
    [Parameter]
    public SwitchParameter SkipFidelityCheck { get; set; }

    /// <summary>Passed on to Invoke-Quantization.</summary>
    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double MinCosine { get; set; } = Core.Pipeline.FidelityGuard.DefaultMinCosine;

    const int BatchActivity = 10;
    QuantizationOptions _options = null!;
    Core.Model.PtqDataSet? _data;
    string _folder = "";
    string? _log;
    readonly BlockingCollection<Action> _messages = new();
    readonly List<Job> _running = new();

    protected override string? OutputFolderForSkip => _folder;

    protected override void Begin()
    {
        try
        {
            _options = BuildOptions();
            // A data set given here is read in other runspaces: a copy of the description, never a script block
            // of this session (Invoke-Quantization refuses script data sets anyway).
            if (DataSet is not null) _data = PipelineObjects.To<Core.Model.PtqDataSet>(DataSet).Clone();
            _folder = ResolveOutput(OutputFolder);
            if (File.Exists(_folder))
                throw new PtqException("OutputFolderIsFile", PtqErrorKind.InvalidArgument, $"-OutputFolder '{_folder}' is a file; give a folder.", _folder);
            if (LogPath is not null)
            {
                _log = ResolveOutput(LogPath);
                var logFolder = System.IO.Path.GetDirectoryName(_log)!;
                // The output folder is created when missing, so a log inside it is fine.
                if (!Directory.Exists(logFolder) && !Core.PlatformPaths.Same(logFolder, _folder))
                    throw new PtqException("LogFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder of the log '{_log}' does not exist.", _log);
                if (Directory.Exists(_log))
                    throw new PtqException("LogPathIsFolder", PtqErrorKind.InvalidArgument, $"-LogPath '{_log}' is a folder; give a file name.", _log);
            }
        }
        catch (PtqException ex) { Fail(ex); }
        if (ThreadCount == 0) ThreadCount = Math.Max(1, Environment.ProcessorCount / ThrottleLimit);
    }

    protected override void StopProcessing()
    {
        base.StopProcessing();
        _messages.Add(() => { });   // wakes the pipeline thread, which stops the running models
    }

    bool WhatIfMode =>
        MyInvocation.BoundParameters.TryGetValue("WhatIf", out var w) && LanguagePrimitives.IsTrue(w)
        || LanguagePrimitives.IsTrue(GetVariableValue("WhatIfPreference"));

    protected override void EndProcessing()
    {
        var clock = Stopwatch.StartNew();
        var records = new QuantizedModelUpdate?[Sources.Count];
        // SIGTERM (systemd stopping the unit, docker stop, kill) ends the process; first it stops the run as Ctrl+C
        // does and waits (up to 30 s) until the running models are stopped and the log is written.
        var cleanedUp = new ManualResetEventSlim();   // not disposed: a late signal handler may still wait on it
        using var terminate = OnTerminate(() =>
        {
            StopProcessing();
            cleanedUp.Wait(TimeSpan.FromSeconds(30));
        });
        try
        {
            Run(records);
            WriteLog(records, clock, stopped: false, report: true);
        }
        catch (Exception ex) when (ex is PipelineStoppedException or OperationCanceledException)
        {
            StopAll();
            WriteLog(records, clock, stopped: true, report: false);
            throw new PipelineStoppedException();
        }
        catch
        {
            // A terminating error: the log still records the models done so far.
            StopAll();
            WriteLog(records, clock, stopped: false, report: false);
            throw;
        }
        finally
        {
            cleanedUp.Set();
        }
    }

    static IDisposable? OnTerminate(Action handler)
    {
        try { return System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, _ => handler()); }
        catch (Exception ex) when (ex is PlatformNotSupportedException or IOException) { return null; }
    }

    void WriteLog(QuantizedModelUpdate?[] records, Stopwatch clock, bool stopped, bool report)
    {
        if (_log is null || WhatIfMode) return;
        var done = records.Where(r => r is not null).Select(r => r!).ToList();
        var summary = UpdateSummary.Of(done, Sources.Count, _options.ToString(), _folder, clock.Elapsed.TotalSeconds, stopped);
        try
        {
            UpdateLog.Write(_log, summary, done);
        }
        catch (PtqException ex) when (report)
        {
            WriteError(ToErrorRecord(new PtqException("LogNotWritable", PtqErrorKind.WriteError, ex.Message, _log, ex), _log));
        }
        catch (PtqException) { }
    }

    void Run(QuantizedModelUpdate?[] records)
    {
        int n = Sources.Count;
        if (n == 0) return;
        if (!Directory.Exists(_folder) && ShouldProcess(_folder, "Create the output folder"))
        {
            try { Directory.CreateDirectory(_folder); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                Fail(new PtqException("OutputFolderNotWritable", PtqErrorKind.WriteError, $"Cannot create the output folder '{_folder}': {ex.Message}", _folder, ex));
            }
        }

        var outputs = Sources.Select(s => OutputIn(_folder, _options, s)).ToArray();
        var statuses = CheckAll(outputs, out var checkErrors);

        var comparer = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;
        var owners = new Dictionary<string, string>(comparer);
        var jobs = new List<Job>();
        for (int i = 0; i < n; i++)
        {
            var (source, output) = (Sources[i], outputs[i]);
            if (checkErrors[i] is { } error)
            {
                Report(records, i, Failed(source, output, "", error));
                continue;
            }
            var status = statuses[i]!;
            if (!owners.TryAdd(output, source))
            {
                Report(records, i, Failed(source, output, status.State, new PtqException("OutputNameCollision", PtqErrorKind.InvalidArgument,
                    $"'{source}' and '{owners[output]}' would both be written to '{output}'; only the first is quantized.", source)));
                continue;
            }
            if (status.IsCurrent && !Force)
            {
                Report(records, i, new QuantizedModelUpdate
                {
                    SourcePath = source, OutputPath = output, Status = nameof(UpdateStatus.UpToDate), Reason = status.State,
                    Message = status.Reason, SourceSha256 = status.SourceSha256, OutputSha256 = null,
                });
                continue;
            }
            var reason = status.IsCurrent ? "Forced" : status.State;
            if (ShouldProcess($"Quantize '{source}' to '{output}' ({reason}: {status.Reason})",
                    $"Quantize '{source}' to '{output}'? ({reason}: {status.Reason})", "Update-QuantizedModel", out var why))
                jobs.Add(new Job(i, source, output, reason, status));
            else if (why != ShouldProcessReason.WhatIf)
                Report(records, i, new QuantizedModelUpdate
                {
                    SourcePath = source, OutputPath = output, Status = nameof(UpdateStatus.Skipped), Reason = reason,
                    Message = $"Not quantized (declined): {status.Reason}", SourceSha256 = status.SourceSha256,
                });
        }
        if (jobs.Count > 0) Quantize(jobs, records);
        CompleteProgress(BatchActivity, "Updating quantized models");
    }

    /// <summary>The up-to-date decision of every model, -ThrottleLimit at a time (hashing the sources is the cost).</summary>
    QuantizationStatus?[] CheckAll(string[] outputs, out PtqException?[] errors)
    {
        int n = outputs.Length;
        var statuses = new QuantizationStatus?[n];
        var failures = new PtqException?[n];
        int done = 0;
        var options = new ParallelOptions { MaxDegreeOfParallelism = ThrottleLimit, CancellationToken = Cancel };
        var sources = Sources.ToArray();
        var task = Task.Run(() => Parallel.For(0, n, options, i =>
        {
            try { statuses[i] = QuantizationStatusCheck.Check(sources[i], outputs[i], _options, Cancel); }
            catch (PtqException ex) { failures[i] = ex; }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                failures[i] = new PtqException("SourceNotReadable", PtqErrorKind.InvalidData, $"Cannot read '{sources[i]}': {ex.Message}", sources[i], ex);
            }
            Interlocked.Increment(ref done);
        }));
        while (!((IAsyncResult)task).AsyncWaitHandle.WaitOne(200))   // (Task.Wait would throw on a stop)
            WriteProgress(new ProgressRecord(BatchActivity, "Updating quantized models", $"Checking outputs: {Volatile.Read(ref done)} of {n} models")
            { PercentComplete = 100 * Volatile.Read(ref done) / n });
        try { task.GetAwaiter().GetResult(); }
        catch (Exception ex) when (ex is OperationCanceledException || Cancel.IsCancellationRequested) { throw new PipelineStoppedException(); }
        errors = failures;
        return statuses;
    }

    void Report(QuantizedModelUpdate?[] records, int index, QuantizedModelUpdate record)
    {
        records[index] = record;
        WriteObject(record);
    }

    QuantizedModelUpdate Failed(string source, string output, string reason, PtqException error)
    {
        WriteError(ToErrorRecord(error, source));
        return new QuantizedModelUpdate
        {
            SourcePath = source, OutputPath = output, Status = nameof(UpdateStatus.Failed), Reason = reason,
            Message = error.Message, ErrorId = error.ErrorId,
        };
    }

    sealed class Job(int index, string source, string output, string reason, QuantizationStatus status)
    {
        public int Index { get; } = index;
        public string Source { get; } = source;
        public string Output { get; } = output;
        public string Reason { get; } = reason;
        public QuantizationStatus Status { get; } = status;
        public string Name => System.IO.Path.GetFileName(Source);
        public int Slot { get; set; }
        public PowerShell? Shell { get; set; }
        public IAsyncResult? Handle { get; set; }
        public PSDataCollection<PSObject> Results { get; } = new();
        public Stopwatch Clock { get; } = new();
        public HashSet<int> Activities { get; } = new();
    }

    /// <summary>Runs Invoke-Quantization for each job in a pool of -ThrottleLimit runspaces. Everything the
    /// runspaces write (warnings, verbose, progress, their end) comes back as a message that the pipeline thread
    /// runs, so every Write* call stays on the pipeline thread.</summary>
    void Quantize(List<Job> jobs, QuantizedModelUpdate?[] records)
    {
        var state = InitialSessionState.CreateDefault2();
        state.Commands.Add(new SessionStateCmdletEntry("Invoke-Quantization", typeof(InvokeQuantizationCommand), null));
        using var pool = RunspaceFactory.CreateRunspacePool(state);
        pool.SetMaxRunspaces(ThrottleLimit);
        pool.Open();
        var shared = _data is null ? null : PSObject.AsPSObject(_data);
        var free = new Queue<int>(Enumerable.Range(0, ThrottleLimit));
        int next = 0, finished = 0;
        void ShowProgress() => WriteProgress(new ProgressRecord(BatchActivity, "Updating quantized models",
            $"{finished} of {jobs.Count} models quantized, {_running.Count} running")
        { PercentComplete = 100 * finished / jobs.Count, CurrentOperation = string.Join(", ", _running.Select(j => j.Name)) });

        while (next < jobs.Count || _running.Count > 0)
        {
            while (_running.Count < ThrottleLimit && next < jobs.Count)
            {
                var job = jobs[next++];
                Cancel.ThrowIfCancellationRequested();
                job.Slot = free.Dequeue();
                if (!Start(job, pool, shared, out var failure))
                {
                    free.Enqueue(job.Slot);
                    finished++;
                    Report(records, job.Index, failure!);
                    continue;
                }
                _running.Add(job);
                ShowProgress();
            }
            if (_running.Count == 0) continue;
            // A message, or every 250 ms a look at the running models (a completion is also a message).
            if (_messages.TryTake(out var message, 250, Cancel)) message();
            foreach (var job in _running.Where(j => j.Handle!.IsCompleted && j.Shell!.InvocationStateInfo.State is not PSInvocationState.Running).ToList())
            {
                _running.Remove(job);
                free.Enqueue(job.Slot);
                finished++;
                Report(records, job.Index, Finish(job));
                ShowProgress();
            }
        }
    }

    bool Start(Job job, RunspacePool pool, object? shared, out QuantizedModelUpdate? failure)
    {
        failure = null;
        object? data = shared;
        var dataFile = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(job.Source)!, System.IO.Path.GetFileNameWithoutExtension(job.Source) + ".dataset.xml");
        if (File.Exists(dataFile))
        {
            try { data = PSSerializer.Deserialize(File.ReadAllText(dataFile)); }
            catch (Exception ex) when (ex is not OperationCanceledException and not PipelineStoppedException)
            {
                failure = Failed(job.Source, job.Output, job.Reason, new PtqException("DataSetUnreadable", PtqErrorKind.InvalidData,
                    $"The calibration data description '{dataFile}' cannot be read (save it with New-PtqDataSet ... | Export-Clixml): {ex.Message}", dataFile, ex));
                return false;
            }
        }
        var ps = PowerShell.Create();
        ps.RunspacePool = pool;
        ps.AddCommand("Invoke-Quantization")
            .AddParameter("LiteralPath", new[] { job.Source })
            .AddParameter("OutputPath", job.Output)
            .AddParameter("ThreadCount", ThreadCount)
            .AddParameter("Force", true)
            .AddParameter("Confirm", false);
        if (data is not null) ps.AddParameter("DataSet", data);
        if (SkipHostCheck) ps.AddParameter("SkipHostCheck", true);
        if (SkipFidelityCheck) ps.AddParameter("SkipFidelityCheck", true);
        if (MyInvocation.BoundParameters.ContainsKey(nameof(MinCosine))) ps.AddParameter("MinCosine", MinCosine);
        foreach (var name in OptionParameters)
            if (name != nameof(Target) && MyInvocation.BoundParameters.TryGetValue(name, out var value)) ps.AddParameter(name, value);
        // Host is resolved once for the whole run.
        ps.AddParameter("Target", _options.Target.ToString());
        string prefix = job.Name + ": ";
        ps.Streams.Warning.DataAdded += (s, e) =>
        {
            var message = ((PSDataCollection<WarningRecord>)s!)[e.Index].Message;
            _messages.Add(() => WriteWarning(prefix + message));
        };
        ps.Streams.Verbose.DataAdded += (s, e) =>
        {
            var message = ((PSDataCollection<VerboseRecord>)s!)[e.Index].Message;
            _messages.Add(() => WriteVerbose(prefix + message));
        };
        ps.Streams.Progress.DataAdded += (s, e) =>
        {
            var record = ((PSDataCollection<ProgressRecord>)s!)[e.Index];
            _messages.Add(() => Forward(job, record));
        };
        job.Shell = ps;
        job.Clock.Start();
        var input = new PSDataCollection<PSObject>();
        input.Complete();
        job.Handle = ps.BeginInvoke(input, job.Results, null, _ => _messages.Add(() => { }), null);
        return true;
    }

    /// <summary>A progress record of a running model, as a child of the batch's, with an id of its slot.</summary>
    void Forward(Job job, ProgressRecord record)
    {
        if (job.Shell is null || !_running.Contains(job)) return;
        int id = 100 + job.Slot * 10 + record.ActivityId;
        job.Activities.Add(id);
        WriteProgress(new ProgressRecord(id, $"{job.Name}: {record.Activity}", string.IsNullOrEmpty(record.StatusDescription) ? "..." : record.StatusDescription)
        {
            ParentActivityId = BatchActivity,
            PercentComplete = record.PercentComplete,
            SecondsRemaining = record.SecondsRemaining,
            CurrentOperation = record.CurrentOperation,
            RecordType = record.RecordType,
        });
    }

    QuantizedModelUpdate Finish(Job job)
    {
        var ps = job.Shell!;
        Exception? thrown = null;
        try { ps.EndInvoke(job.Handle!); }
        catch (Exception ex) { thrown = ex; }
        job.Clock.Stop();
        foreach (var activity in job.Activities)
            WriteProgress(new ProgressRecord(activity, job.Name, "Done") { ParentActivityId = BatchActivity, RecordType = ProgressRecordType.Completed });
        var result = job.Results.Select(r => r.BaseObject).OfType<QuantizationResult>().FirstOrDefault();
        var error = ps.Streams.Error.FirstOrDefault() ?? (thrown as IContainsErrorRecord)?.ErrorRecord;
        ps.Dispose();
        job.Shell = null;
        var record = new QuantizedModelUpdate
        {
            SourcePath = job.Source, OutputPath = job.Output, Reason = job.Reason, SourceSha256 = job.Status.SourceSha256,
            Seconds = Math.Round(job.Clock.Elapsed.TotalSeconds, 2),
        };
        if (result is not null && error is null && thrown is null)
        {
            record.Status = nameof(UpdateStatus.Quantized);
            record.Message = job.Reason == "Forced" ? "Quantized again (-Force); the output was current." : job.Status.Reason;
            record.SizeRatio = result.SizeRatio;
            record.SourceSha256 = result.SourceSha256;
            record.OutputSha256 = result.OutputSha256;
            return record;
        }
        // A failure: the error record Invoke-Quantization wrote (or threw), as this cmdlet's, for this source.
        var exception = error?.Exception ?? thrown ?? new PtqException("QuantizationFailed", PtqErrorKind.InvalidData, $"Invoke-Quantization wrote no model for '{job.Source}'.", job.Source);
        if (exception is CmdletInvocationException { InnerException: { } inner }) exception = inner;
        var id = exception is PtqException ptq ? ptq.ErrorId : error?.FullyQualifiedErrorId.Split(',')[0] ?? "QuantizationFailed";
        var message = exception.Message;
        if (id == "DataSetRequired")
            message = $"No calibration data for '{job.Source}': save its data set description as '{System.IO.Path.GetFileNameWithoutExtension(job.Source)}.dataset.xml' beside it (New-PtqDataSet ... | Export-Clixml), or give -DataSet. ({message})";
        var category = error?.CategoryInfo.Category ?? ErrorCategory.NotSpecified;
        WriteError(new ErrorRecord(exception is PtqException && message == exception.Message ? exception : new PtqException(id, PtqErrorKind.InvalidArgument, message, job.Source, exception),
            id, category, job.Source));
        record.Status = nameof(UpdateStatus.Failed);
        record.Message = message;
        record.ErrorId = id;
        return record;
    }

    /// <summary>Stops the running models and waits for them: Invoke-Quantization removes what it was writing, so a
    /// stop leaves the outputs as they were or complete.</summary>
    void StopAll()
    {
        foreach (var job in _running)
        {
            try { job.Shell?.Stop(); } catch (Exception) { }
            try { job.Shell?.Dispose(); } catch (Exception) { }
        }
        _running.Clear();
    }
}
