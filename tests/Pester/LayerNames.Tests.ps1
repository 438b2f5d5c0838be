# Layer names given by hand: -Exclude entries that match nothing, their completion, and Get-ModelLayer -Name.
BeforeAll {
    Import-Module $env:PTQTOOLS_MODULE -Force
    . (Join-Path $PSScriptRoot 'TestData.ps1')
    $script:work = Join-Path ([IO.Path]::GetTempPath()) "ptq-names-$PID"
    New-Item -ItemType Directory -Path $work -Force | Out-Null
    # A data set that records whether anything read it: a refused call must not have started calibrating.
    $script:calibrated = $false
    $script:watched = New-PtqDataSet -ScriptBlock { $script:calibrated = $true } -Shape 3, 224, 224
}

AfterAll {
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}

Describe 'Invoke-Quantization -Exclude entries that match no layer' {
    BeforeEach { $script:calibrated = $false }

    It 'refuses an entry that matches nothing before calibration, with the entry as target, and writes nothing' {
        $out = Join-Path $work 'nosuch.onnx'
        $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -DataSet $watched -Exclude 'features.1.cnv' -OutputPath $out -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -Be 'ExcludeMatchesNothing,PtqTools.Commands.InvokeQuantizationCommand'
        $e.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $e.TargetObject | Should -Be 'features.1.cnv'
        $e.Exception.Message | Should -BeLike "*-Exclude entry 'features.1.cnv' matches no layer*ResNet18.onnx*"
        $e.Exception.Message | Should -Not -BeLike '*did you mean*'
        $calibrated | Should -BeFalse
        Test-Path $out | Should -BeFalse
    }

    It 'suggests the layer name that matches in another case' {
        $e = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -DataSet $watched -Exclude 'Add', 'convolution249' -OutputPath (Join-Path $work 'case.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ExcludeMatchesNothing,*'
        $e.TargetObject | Should -Be 'convolution249'
        $e.Exception.Message | Should -BeLike "*did you mean 'Convolution249'?*"
        $calibrated | Should -BeFalse
    }

    It 'suggests the op type that matches in another case, and a name a pattern would match' {
        $op = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -Mode Dynamic -Exclude 'conv' -OutputPath (Join-Path $work 'op.onnx') -ErrorAction Stop }
        $op.Exception.Message | Should -BeLike "*did you mean 'Conv'?*"
        $pattern = Get-ErrorRecord { Invoke-Quantization -Path $ResNet18 -Mode Dynamic -Exclude 'convolution*' -OutputPath (Join-Path $work 'pat.onnx') -ErrorAction Stop }
        $pattern.FullyQualifiedErrorId | Should -BeLike 'ExcludeMatchesNothing,*'
        $pattern.Exception.Message | Should -BeLike "*a pattern that matches 'Convolution249'*"
    }

    It 'checks layers that come through the pipeline too, before calibration' {
        $e = Get-ErrorRecord { Get-ModelLayer $ResNet18 -Quantizable | Invoke-Quantization -DataSet $watched -Exclude 'nosuch*' -OutputPath (Join-Path $work 'pipe.onnx') -ErrorAction Stop }
        $e.FullyQualifiedErrorId | Should -BeLike 'ExcludeMatchesNothing,*'
        $e.TargetObject | Should -Be 'nosuch*'
        $calibrated | Should -BeFalse
    }

    It 'warns, and does not refuse, an op type the quantizer knows but the model lacks' {
        $e = $null
        $w = try { Invoke-Quantization -Path $ResNet18 -Mode Dynamic -Exclude 'MatMul' -OutputPath (Join-Path $work 'mm.onnx') -ErrorAction Stop 3>&1 } catch { $e = $_ }
        # ResNet18 has no MatMul: Dynamic mode then has nothing to quantize, the error that follows the check.
        $e.FullyQualifiedErrorId | Should -BeLike 'NothingToQuantize,*'
        "$w" | Should -BeLike "*-Exclude op type 'MatMul' matches no layer*"
    }

    It 'keeps matching entries working: a name pattern and an op type' {
        $r = Invoke-Quantization -Path $ResNet18 -DataSet (New-ResNetDataSet -Split train -Count 2) -Exclude 'Add', 'Convolution24?' -SkipHostCheck -ThreadCount 1 -OutputPath (Join-Path $work 'partial.onnx') -WarningAction SilentlyContinue
        $r.Decisions | Where-Object { $_ -like "Convolution249 (Conv): excluded (-Exclude pattern 'Convolution24?')*" } | Should -HaveCount 1
        $r.Decisions | Where-Object { $_ -like "* (Add): excluded (-Exclude op type 'Add')*" } | Should -HaveCount 9
        $r.QuantizedLayers | Should -Not -Contain 'Convolution249'
        @($r.QuantizedLayers | Where-Object { $_ -like 'Plus*' }) | Should -HaveCount 0
        $r.QuantizedLayerCount | Should -BeGreaterThan 10
        $r.QuantizedLayers | Should -Contain 'Convolution257'
    }
}

Describe 'Completion of layer names' {
    It 'completes -Exclude with the layer names of the -Path model' {
        $line = "Invoke-Quantization -Path '$ResNet18' -OutputPath x.onnx -Exclude Convolution24"
        $r = TabExpansion2 -inputScript $line -cursorColumn $line.Length
        $r.CompletionMatches.CompletionText | Should -Be @('Convolution249')
        $line = "Invoke-Quantization -Path '$ResNet18' -OutputPath x.onnx -Exclude plus"
        $names = (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
        $names | Should -HaveCount 9
        $names | Should -Contain 'Plus267'
    }
}

Describe 'Get-ModelLayer -Name' {
    It 'writes LayerNotFound for a name that matches no layer, and still the layers of the names that match' {
        $layers = Get-ModelLayer $ResNet18 -Name 'nosuch', 'convolution249' -ErrorVariable err -ErrorAction SilentlyContinue
        $layers.Name | Should -Be @('Convolution249')
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -Be 'LayerNotFound,PtqTools.Commands.GetModelLayerCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].TargetObject | Should -Be 'nosuch'
        $err[0].Exception.Message | Should -BeLike "*layer 'nosuch'*ResNet18.onnx*"
    }

    It 'stays silent for a wildcard pattern that matches nothing' {
        $layers = Get-ModelLayer $ResNet18 -Name 'nosuch*', 'no?such' -ErrorVariable err
        $layers | Should -BeNullOrEmpty
        $err | Should -BeNullOrEmpty
    }

    It 'does not report a name that matches a layer filtered out by -OpType' {
        $layers = Get-ModelLayer $ResNet18 -Name 'Convolution249' -OpType Add -ErrorVariable err
        $layers | Should -BeNullOrEmpty
        $err | Should -BeNullOrEmpty
    }
}
