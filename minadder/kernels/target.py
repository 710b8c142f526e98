"""Which CPU the cpu kernels are compiled for, and the register blocking that fits it.

The forward kernel's inner step keeps a block of filter values in vector registers while
it streams the input: 4 channels x 4 rows (16 broadcast weights) fit a machine with 32
vector registers (AVX-512's zmm0-31, aarch64's NEON v0-31) but not one with 16 (AVX2's
ymm0-15), where the compiler spills them to the stack in the hottest loop. So the block
is chosen for the target, here, once:

    "wide"    32 registers: 4 channels x 4 rows per step  (AVX-512, aarch64 NEON/SVE)
    "narrow"  16 registers: 2 channels x 4 rows per step  (AVX2, SSE, anything unknown)

The target is the CPU Numba compiles for: the host, or the CPU named by
``NUMBA_CPU_NAME`` (with ``NUMBA_CPU_FEATURES``, if given). So on an AVX-512 machine
``NUMBA_CPU_NAME=haswell`` compiles and runs the AVX2 code, and both can be measured
on one machine. Numba's on-disk cache keys compiled code by the target CPU too, so the
two never mix. This module defines no kernel: settings.py reads it before the cpu kernels
are imported (see there why that order matters).
"""
import os
import platform
from typing import NamedTuple

#: LLVM CPU names whose cores have AVX-512F (and with it 32 vector registers)
AVX512_CPUS = frozenset({
    "knl", "knm", "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake",
    "icelake-client", "icelake-server", "rocketlake", "tigerlake", "sapphirerapids",
    "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids", "znver4",
    "znver5", "x86-64-v4",
})


#: LLVM CPU names of x86 cores without AVX (128-bit SSE vectors only)
PRE_AVX_CPUS = frozenset({
    "generic", "x86-64", "x86-64-v2", "core2", "penryn", "nehalem", "westmere", "atom",
    "bonnell", "silvermont", "goldmont", "goldmont-plus", "tremont", "k8", "amdfam10",
    "btver1", "pentium4", "prescott", "nocona",
})


class Target(NamedTuple):
    """The CPU the kernels are compiled for."""
    name: str          # LLVM's name, e.g. "znver3", "haswell", "sapphirerapids", "apple-m1"
    machine: str       # "x86_64", "aarch64", ...
    vector_bits: int   # width of one vector register
    registers: int     # number of vector registers

    @property
    def blocking(self):
        """"wide" where 32 vector registers hold the 4 x 4 block, else "narrow"."""
        return "wide" if self.registers >= 32 else "narrow"


def _named_features(features):
    """{"avx2": True, "avx512f": False, ...} from a '+avx2,-avx512f' string."""
    return {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}


def describe(name, machine, features):
    """The Target of CPU ``name`` on architecture ``machine`` with these LLVM features."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64"):
        return Target(name, machine, 128, 32)        # NEON: 32 x 128-bit
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        if features.get("avx512f", name in AVX512_CPUS):
            return Target(name, machine, 512, 32)
        if features.get("avx2", features.get("avx", name not in PRE_AVX_CPUS)):
            return Target(name, machine, 256, 16)
        return Target(name, machine, 128, 16)
    return Target(name, machine, 128, 16)             # unknown: the cautious choice


def detect():
    """The Target Numba compiles for here (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``, else the host)."""
    machine = platform.machine()
    name = os.environ.get("NUMBA_CPU_NAME", "host") or "host"
    named = _named_features(os.environ.get("NUMBA_CPU_FEATURES", ""))
    if name == "host":
        try:
            import llvmlite.binding as ll
            name = ll.get_host_cpu_name()
            host = dict(ll.get_host_cpu_features().items()) if not named else {}
        except Exception:  # noqa: BLE001  (no llvmlite: the cpu backend is unavailable anyway)
            name, host = "unknown", {}
        return describe(name, machine, {**host, **named})
    return describe(name, machine, named)


def named_cpu_features():
    """"" (the named CPU's own features) when NUMBA_CPU_NAME names a CPU and
    NUMBA_CPU_FEATURES is not set, else None.

    Numba otherwise pairs the named CPU with the *host's* features, so that
    NUMBA_CPU_NAME=haswell on an AVX-512 machine would still compile 512-bit code.
    """
    if "NUMBA_CPU_FEATURES" in os.environ or os.environ.get("NUMBA_CPU_NAME", "host") in ("", "host"):
        return None
    return ""


def full_width_features():
    """The host's LLVM feature string with 512-bit vectors preferred, or None to leave it.

    LLVM tunes Intel's AVX-512 cores (Skylake-SP to Emerald Rapids) to prefer 256-bit
    vectors, which halves the lanes of the adder kernels' vminps/vaddps loops (measured
    in benchmarks/README.md). Only for the host, and only when NUMBA_CPU_FEATURES is not
    set: an explicit choice is always kept.
    """
    if "NUMBA_CPU_FEATURES" in os.environ or os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return None
    try:
        import llvmlite.binding as ll
        features = ll.get_host_cpu_features()
    except Exception:  # noqa: BLE001
        return None
    if not features.get("avx512f"):
        return None
    return features.flatten() + ",-prefer-256-bit"


def cpu_model():
    """The host CPU as benchmarks name it: lscpu's model name and its widest x86 vector ISA."""
    import subprocess
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return f"unknown CPU ({platform.machine()})"
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    return f"{name} ({isa})"


#: detected once, when this module is first imported
TARGET = detect()
