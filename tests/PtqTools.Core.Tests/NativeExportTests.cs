using System.Runtime.InteropServices;
using System.Text;
using PtqTools.Core.Kernels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The native libraries the build writes (runtimes/&lt;rid&gt;/native) export exactly the functions
/// NativeKernels binds: read from the ELF .dynsym of linux-x64 and the PE export table of win-x64, not by loading.</summary>
public sealed class NativeExportTests
{
    static string Runtimes => Path.Combine(AppContext.BaseDirectory, "runtimes");

    [Fact]
    public void LinuxLibrary_ExportsExactlyWhatIsBound()
    {
        var path = Path.Combine(Runtimes, "linux-x64", "native", "libptqkernels.so");
        Assert.True(File.Exists(path), $"{path} was not built");
        Assert.Equal(NativeKernels.BoundExports.Order(), ElfExports(File.ReadAllBytes(path)).Order());
    }

    [Fact]
    public void WindowsLibrary_ExportsExactlyWhatIsBound_AsX64()
    {
        var path = Path.Combine(Runtimes, "win-x64", "native", "ptqkernels.dll");
        Assert.True(File.Exists(path), $"{path} was not built");
        var (machine, exports) = PeExports(File.ReadAllBytes(path));
        Assert.Equal(0x8664, machine);   // IMAGE_FILE_MACHINE_AMD64
        Assert.Equal(NativeKernels.BoundExports.Order(), exports.Order());
    }

    [HostFact(HostNeed.X64)]
    public void LoadedLibrary_HasThisAssemblysAbi()
    {
        Assert.True(NativeKernels.Available, NativeKernels.LoadError);
        Assert.Null(NativeKernels.LoadError);
        Assert.Contains(Path.Combine("runtimes", NativeKernels.RuntimeId, "native"), NativeKernels.LoadedFrom);
    }

    /// <summary>A library of another ABI version, or one missing an export, is refused with the reason (stubs compiled
    /// here with the gcc the build needs on Linux x64).</summary>
    [HostFact(HostNeed.LinuxX64)]
    public void StaleOrIncompleteLibrary_IsRefused_WithTheReason()
    {
        var dir = Directory.CreateTempSubdirectory("ptq-abi-").FullName;
        try
        {
            string Stub(string name, string source)
            {
                var c = Path.Combine(dir, name + ".c");
                var so = Path.Combine(dir, name + ".so");
                File.WriteAllText(c, source);
                var gcc = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("gcc", $"-shared -fPIC -o \"{so}\" \"{c}\"") { RedirectStandardError = true })!;
                gcc.WaitForExit();
                Assert.Equal(0, gcc.ExitCode);
                return so;
            }
            var stale = Stub("stale", $"int ptq_abi_version(void) {{ return {NativeKernels.AbiVersion - 1}; }}");
            Assert.Null(NativeKernels.Open(stale, out var why));
            Assert.Contains($"ABI version {NativeKernels.AbiVersion - 1}, this assembly needs {NativeKernels.AbiVersion}", why);
            var old = Stub("old", "int ptq_version(void) { return 5; }");
            Assert.Null(NativeKernels.Open(old, out why));
            Assert.Contains("no ptq_abi_version export", why);
            var partial = Stub("partial", $"int ptq_abi_version(void) {{ return {NativeKernels.AbiVersion}; }} int ptq_has_vnni(void) {{ return 0; }}");
            Assert.Null(NativeKernels.Open(partial, out why));
            Assert.Contains("missing exports", why);
            Assert.Contains("ptq_gemm_u8s8_avx2", why);
            Assert.NotNull(NativeKernels.Open(NativeKernels.LoadedFrom!, out why));
            Assert.Null(why);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Defined global functions of .dynsym (ELF64 little endian).</summary>
    static List<string> ElfExports(byte[] f)
    {
        Assert.True(f[0] == 0x7f && f[1] == (byte)'E' && f[2] == (byte)'L' && f[3] == (byte)'F' && f[4] == 2, "not an ELF64 file");
        Assert.Equal(62, BitConverter.ToUInt16(f, 18));   // EM_X86_64
        long shoff = BitConverter.ToInt64(f, 0x28);
        int shentsize = BitConverter.ToUInt16(f, 0x3A), shnum = BitConverter.ToUInt16(f, 0x3C);
        var names = new List<string>();
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (BitConverter.ToUInt32(f, (int)sh + 4) != 11) continue;   // SHT_DYNSYM
            long off = BitConverter.ToInt64(f, (int)sh + 0x18), size = BitConverter.ToInt64(f, (int)sh + 0x20), ent = BitConverter.ToInt64(f, (int)sh + 0x38);
            int link = (int)BitConverter.ToUInt32(f, (int)sh + 0x28);
            long str = BitConverter.ToInt64(f, (int)(shoff + (long)link * shentsize) + 0x18);
            for (long s = off; s < off + size; s += ent)
            {
                int info = f[s + 4], shndx = BitConverter.ToUInt16(f, (int)s + 6);
                if (shndx == 0 || (info >> 4) != 1 || (info & 0xf) != 2) continue;   // defined, GLOBAL, FUNC
                long n = str + BitConverter.ToUInt32(f, (int)s);
                int end = Array.IndexOf(f, (byte)0, (int)n);
                names.Add(Encoding.ASCII.GetString(f, (int)n, end - (int)n));
            }
        }
        return names;
    }

    /// <summary>The machine and the export names of a PE32+ file.</summary>
    static (int Machine, List<string> Names) PeExports(byte[] f)
    {
        int pe = BitConverter.ToInt32(f, 0x3C);
        Assert.Equal(0x00004550u, BitConverter.ToUInt32(f, pe));   // "PE\0\0"
        int machine = BitConverter.ToUInt16(f, pe + 4), sections = BitConverter.ToUInt16(f, pe + 6), optSize = BitConverter.ToUInt16(f, pe + 20);
        int opt = pe + 24;
        Assert.Equal(0x20b, BitConverter.ToUInt16(f, opt));   // PE32+
        int exportRva = BitConverter.ToInt32(f, opt + 112);
        int Offset(int rva)
        {
            for (int i = 0; i < sections; i++)
            {
                int s = opt + optSize + i * 40;
                int va = BitConverter.ToInt32(f, s + 12), vsize = BitConverter.ToInt32(f, s + 8), raw = BitConverter.ToInt32(f, s + 20);
                if (rva >= va && rva < va + Math.Max(vsize, BitConverter.ToInt32(f, s + 16))) return rva - va + raw;
            }
            throw new InvalidDataException($"RVA {rva:x} is in no section");
        }
        var names = new List<string>();
        int dir = Offset(exportRva);
        int count = BitConverter.ToInt32(f, dir + 24), namesRva = BitConverter.ToInt32(f, dir + 32);
        for (int i = 0; i < count; i++)
        {
            int n = Offset(BitConverter.ToInt32(f, Offset(namesRva) + i * 4));
            int end = Array.IndexOf(f, (byte)0, n);
            names.Add(Encoding.ASCII.GetString(f, n, end - n));
        }
        return (machine, names);
    }
}
