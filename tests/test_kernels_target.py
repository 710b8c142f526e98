"""The cpu kernels' target: which register blocking each CPU gets, and the narrow (AVX2)
variant checked against the reference in a process compiled for Haswell."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
from minadder.kernels import target  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,machine,features,bits,registers,blocking", [
    ("haswell", "x86_64", {}, 256, 16, "narrow"),
    ("znver3", "x86_64", {"avx2": True, "avx512f": False}, 256, 16, "narrow"),
    ("skylake-avx512", "x86_64", {}, 512, 32, "wide"),
    ("emeraldrapids", "x86_64", {"avx512f": True}, 512, 32, "wide"),
    ("sapphirerapids", "x86_64", {"avx512f": False, "avx2": True}, 256, 16, "narrow"),  # features win
    ("apple-m1", "arm64", {}, 128, 32, "wide"),
    ("neoverse-n1", "aarch64", {}, 128, 32, "wide"),
    ("core2", "x86_64", {"sse4.1": True}, 128, 16, "narrow"),
    ("some-cpu", "riscv64", {}, 128, 16, "narrow"),
])
def test_describe_gives_each_cpu_its_registers(name, machine, features, bits, registers, blocking):
    t = target.describe(name, machine, features)
    assert (t.vector_bits, t.registers, t.blocking) == (bits, registers, blocking)


def test_numba_cpu_name_selects_the_target(monkeypatch):
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    t = target.detect()
    assert t.name == "haswell" and t.blocking == ("narrow" if t.machine.startswith(("x86", "amd64")) else "wide")
    assert target.full_width_features() is None          # an explicit CPU is left alone
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,-avx512f")
    assert target.detect().vector_bits in (256, 128)


def test_feature_strings_are_read():
    assert target._named_features("+avx2,-avx512f,+fma") == {"avx2": True, "avx512f": False, "fma": True}


NARROW_CHECK = r"""
import numpy as np
import minadder
minadder.configure()    # before the kernels are defined: the CPU named by NUMBA_CPU_NAME gets its own features
from minadder.kernels import cpu, reference as ref
from minadder.kernels.cpu import forward, register_block
from minadder.kernels.geometry import Window
from numba.core.registry import cpu_target
assert forward.MR == register_block.BLOCK_CHANNELS == 2 and register_block.DOT_FILTERS == 4, (forward.MR, register_block.TARGET)
assert register_block.TARGET.blocking == "narrow" and register_block.BLOCK_VECTORS * register_block.vector_length(4) == 32
codegen = cpu_target.target_context.codegen()
features = codegen._tm_features
assert codegen._get_host_cpu_name() == "haswell" and "+avx512f" not in features, features
rng = np.random.default_rng(0)
for (n, c, h, co, k, s, p) in [(2, 3, 9, 7, 3, 1, 1), (3, 5, 8, 4, 3, 2, 1), (2, 6, 5, 9, 1, 1, 0), (2, 3, 20, 6, 3, 1, 1)]:
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((co, c, k, k)).astype(np.float32)
    win = Window.of(x.shape, w.shape, s, p)
    y, saved = cpu.adder2d_forward(x, w, win)
    y_ref, saved_ref = ref.adder2d_forward(x, w, win)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    for mode in ("full", "sign"):
        for a, b in zip(cpu.adder2d_backward(g, saved, mode), ref.adder2d_backward(g, saved_ref, mode)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
print("narrow ok")
"""


@pytest.mark.skipif(not target.TARGET.machine.lower().startswith(("x86", "amd64")), reason="x86 only")
def test_the_avx2_variant_equals_the_reference():
    """NUMBA_CPU_NAME=haswell compiles the 16-register code (2 x 4 blocks); on any x86-64
    machine that runs it (Haswell's instructions are a subset of every later x86 core's).
    configure() runs before the kernels are defined, and the check asserts that Numba's
    CPU target is Haswell without AVX-512 (not Haswell's name with the host's features)."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell")
    env.pop("NUMBA_CPU_FEATURES", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", NARROW_CHECK], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and "narrow ok" in proc.stdout, proc.stdout + proc.stderr[-3000:]
