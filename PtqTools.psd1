@{
    RootModule           = 'PtqTools.dll'
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    GUID                 = '5d0f3c7e-8a41-4f0e-9b7a-2f6c1d9e4a11'
    Author               = 'PtqTools developers'
    CompanyName          = 'PtqTools'
    Copyright            = '(c) PtqTools developers. MIT licence.'
    Description          = 'Post-training quantization of ONNX models (int8 QDQ) from PowerShell: inspect, calibrate, quantize and evaluate.'
    PowerShellVersion    = '7.4'
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
            Tags         = @('onnx', 'quantization', 'int8', 'ptq', 'machine-learning', 'onnxruntime', 'Linux', 'PSEdition_Core')
            LicenseUri   = 'https://opensource.org/licenses/MIT'
            ProjectUri   = 'https://github.com/ptqtools/PtqTools'
            ReleaseNotes = 'See CHANGELOG.md; the packaged manifest carries the notes of its version.'
        }
    }
}
