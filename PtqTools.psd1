@{
    RootModule           = 'PtqTools.dll'
    # Imported before the root module: puts the engine and its dependencies in the module's own AssemblyLoadContext.
    NestedModules        = @('PtqTools.Loader.dll')
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    GUID                 = '5d0f3c7e-8a41-4f0e-9b7a-2f6c1d9e4a11'
    Author               = 'PtqTools developers'
    CompanyName          = 'PtqTools'
    Copyright            = '(c) PtqTools developers. MIT licence.'
    Description          = 'Post-training quantization of ONNX models (int8 QDQ) from PowerShell: inspect, calibrate, quantize and evaluate.'
    # The assemblies target .NET 10: pwsh 7.6 is the first that runs on it (7.4 and 7.5 run .NET 8 and 9).
    PowerShellVersion    = '7.6'
    # Update-Help reads <HelpInfoURI>/PtqTools_<GUID>_HelpInfo.xml; Get-Help -Online opens each cmdlet's HelpUri,
    # its page of docs/en-US at ProjectUri (src/PtqTools/HelpLinks.cs).
    HelpInfoURI          = 'https://github.com/ptqtools/PtqTools/releases/latest/download/'
    FormatsToProcess     = @('PtqTools.Format.ps1xml')
    TypesToProcess       = @('PtqTools.Types.ps1xml')
    CmdletsToExport      = @(
        'Get-OnnxModel'
        'Get-ModelLayer'
        'New-PtqDataSet'
        'Measure-ActivationRange'
        'Invoke-Quantization'
        'Test-QuantizedModel'
        'Export-ActivationRange'
        'Import-ActivationRange'
        'Merge-ActivationRange'
        'Measure-LayerError'
        'Measure-ModelPerformance'
        'Export-QuantizationReport'
        'Invoke-ModelInference'
        'Get-PtqCache'
        'Clear-PtqCache'
        'Get-QuantizationRule'
        'Update-QuantizedModel'
        'Get-QuantizationStatus'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('onnx', 'quantization', 'int8', 'ptq', 'machine-learning', 'onnxruntime', 'Windows', 'Linux', 'MacOS',
                'x64', 'arm64', 'PSEdition_Core')
            LicenseUri   = 'https://github.com/ptqtools/PtqTools/blob/main/LICENSE'
            ProjectUri   = 'https://github.com/ptqtools/PtqTools'
            ReleaseNotes = @'
PtqTools 0.1.0, the first release: post-training quantization of ONNX models from PowerShell 7.6 on Windows x64,
Linux x64 and ARM64, and macOS on Apple silicon (one package carries ONNX Runtime and SkiaSharp for each).

- Inspect a model (Get-OnnxModel, Get-ModelLayer) and describe calibration data (New-PtqDataSet: image folders, IDX,
  .npy/.npz, CSV, TensorProto files, tokenized text, arrays or a script block).
- Calibrate once and get every range method (Measure-ActivationRange: MinMax, moving average, Percentile, Entropy,
  MSE, Auto); save, load and merge the statistics of parallel shards (Export-, Import-, Merge-ActivationRange).
- Quantize (Invoke-Quantization): static QDQ or QOperator int8/int16, dynamic int8, int8/int4 weight-only (RTN, HQQ,
  GPTQ); per-channel weights, equalization, bias correction, per-tensor overrides, layers kept in float by rules and
  by an accuracy budget; the written model is checked against float on held-out samples and on this CPU.
- Evaluate (Test-QuantizedModel, Measure-LayerError, Measure-ModelPerformance, Invoke-ModelInference) and report
  (Export-QuantizationReport: HTML with charts, Markdown, JSON).
- Run in batch (Update-QuantizedModel, Get-QuantizationStatus, Invoke-PtqBatch.ps1 for a scheduler) and across hosts
  over PowerShell remoting (PtqTools.Remoting.ps1).
- The module's dependencies (ONNX Runtime, Google.Protobuf, SkiaSharp...) load in their own assembly load context,
  so other modules with other versions of them work in the same session.
'@
        }
    }
}
