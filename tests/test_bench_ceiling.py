"""benchmarks/ceiling.py: its loops are the instructions they claim, on registers only, on this
machine's target (and the AVX2 code), the integer SAD loop wherever the CPU has vpsadbw; its
quick mode prints the table; bench_adder_layers.py divides each kernel by the matching ceiling.

Nothing here is a timing: --quick runs every loop for milliseconds only. ceiling.py sets
Numba's CPU features as it is imported, so it runs in child processes, never in this one.
"""
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

REPO = Path(__file__).resolve().parents[1]
CEILING = REPO / "benchmarks" / "ceiling.py"
X86 = platform.machine().lower() in ("x86_64", "amd64")

#: what one term of each mix must compile to (x86 mnemonic prefixes), written here apart
#: from ceiling.py's own claims
EXPECTED = {
    "fma": ("vfmadd",),
    "min+add": ("vminps", "vaddps"),
    "clamp+fma": ("vmaxps", "vminps", "vfmadd"),
    "select+add": ("vcmp", "vblend", "vaddps"),
    "sgn+fma": ("vsubps", "vfixupimmps", "vfmadd"),
    "sad": ("vpsadbw", "vpaddq"),
}
REGISTER = {512: "zmm", 256: "ymm", 128: "xmm"}


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _host_flags():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(next((ln.split(":", 1)[1] for ln in out.splitlines() if ln.startswith("Flags")), "").split())


def _sad_bits(width, flags):
    """The SAD loop's vector bits in a width's rows: AVX-512BW's 512 for this CPU's own code
    where it has them, AVX2's 256, or None (no vpsadbw: no sad rows)."""
    if width == "native" and "avx512bw" in flags:
        return 512
    return 256 if "avx2" in flags else None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(stdout, record) of one `ceiling.py --quick --threads 2 --json PATH`."""
    path = tmp_path_factory.mktemp("ceiling") / "ceiling.json"
    proc = subprocess.run([sys.executable, str(CEILING), "--quick", "--threads", "2", "--json", str(path)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(path.read_text())


def test_quick_mode_prints_the_cpu_and_a_table(quick):
    stdout, record = quick
    lines = stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "lscpu model name" in lines[0]
    if X86:
        assert all(f"{flag} " in lines[1] for flag in ("avx2", "fma", "avx512f", "avx512bw")), lines[1]
    header = next(ln for ln in lines if ln.startswith("mix"))
    assert all(col in header for col in ("vector", "threads", "G terms/s", "of FMA"))
    assert record["quick"] is True and record["threads"] == 2
    flags = _host_flags() if X86 else set()
    for width in {r["width"] for r in record["rows"]}:
        got = {(r["mix"], r["threads"]) for r in record["rows"] if r["width"] == width}
        mixes = [m for m in EXPECTED if (m != "sad" or _sad_bits(width, flags))
                 and (m != "sgn+fma" or (width == "native" and "avx512f" in flags))]
        want = {("sgemm", 1), ("sgemm", 2)} if width == "sgemm" else {(m, t) for m in mixes for t in (1, 2)}
        if width == "memory":
            want = {(m, t) for m in ("read", "copy") for t in (1, 2)}
        assert got == want, (width, got)
    memory = [r for r in record["rows"] if r["width"] == "memory"]
    assert len({r["bytes"] for r in memory}) == 2 and all(r["gbytes"] > 0 for r in memory), memory
    assert all(f"{r['gbytes']:.1f}" in stdout for r in memory)
    for r in (r for r in record["rows"] if r["width"] != "memory"):
        assert r["gterms"] > 0, r
        if r["width"] != "sgemm":
            fma = next(f for f in record["rows"]
                       if (f["mix"], f["width"], f["threads"]) == ("fma", r["width"], r["threads"]))
            assert r["fraction_of_fma"] == pytest.approx(r["gterms"] / fma["gterms"])
            assert f"{r['gterms']:.1f}" in stdout


@pytest.mark.skipif(not X86, reason="the claimed instructions are x86's")
def test_every_loop_is_its_claimed_instructions_on_registers_only(quick):
    """The loop that runs ``reps`` times: exactly ``chains`` of each claimed instruction on
    the width's registers, no other vector instruction, no memory operand (no spill)."""
    _, record = quick
    flags = _host_flags()
    widths = {r["width"]: r["bits"] for r in record["rows"] if r["mix"] == "fma"}
    assert widths["native"] == (512 if "avx512f" in flags else 256 if "avx2" in flags else 128)
    if "avx512f" in flags:
        assert widths["avx2"] == 256
    for r in (r for r in record["rows"] if r["width"] not in ("sgemm", "memory")):
        if r["mix"] == "sad":
            assert r["bits"] == _sad_bits(r["width"], flags), r
        register = REGISTER[r["bits"]]
        vector = {k: v for k, v in r["loop"].items() if k.endswith(("zmm", "ymm", "xmm"))}
        for claim in EXPECTED[r["mix"]]:
            assert sum(v for k, v in vector.items() if k.startswith(claim) and k.endswith(register)) \
                == r["chains"], (r["mix"], r["width"], vector)
        assert set(vector) == {k for k in vector if k.startswith(EXPECTED[r["mix"]])}, (r["mix"], vector)
        assert r["memory_operands"] == 0 and r["chains"] >= 8, r


CHECKER = r"""
import json, sys
sys.argv = ["ceiling.py"]
import ceiling as c
spill = ["\tvmovups\t64(%rsp), %ymm3", "\tvaddps\t%ymm1, %ymm2, %ymm2", "\tvmovaps\t%ymm4, (%rax,%rcx,4)",
         "\tvmovups\tymm0, ymmword ptr [rsp + 32]"]
nested = [".LBB0_1:", "\tvaddps\t%zmm1, %zmm0, %zmm0", ".LBB0_2:", "\tjne\t.LBB0_2", "\tjne\t.LBB0_1"]
right = {"vminps zmm": 16, "vaddps zmm": 16, "decq": 1}
out = {
    "memory": c.memory_operands(spill),
    "nested": c.innermost(nested), "inner": c.innermost(nested[2:4]),
    "right": c.problems(right, 0, ("vminps", "vaddps"), "zmm", 16),
    "short": c.problems({"vminps zmm": 12, "vaddps zmm": 16}, 0, ("vminps", "vaddps"), "zmm", 16),
    "ymm": c.problems({"vminps ymm": 16, "vaddps ymm": 16}, 0, ("vminps", "vaddps"), "zmm", 16),
    "extra": c.problems(dict(right, **{"vmovups zmm": 2}), 0, ("vminps", "vaddps"), "zmm", 16),
    "spill": c.problems(right, 3, ("vminps", "vaddps"), "zmm", 16),
}
print(json.dumps(out))
"""


def test_the_loop_check_catches_spills_and_wrong_instructions():
    """The check itself can fail: memory operands in both syntaxes, a loop holding a loop,
    too few or too narrow instructions, an extra load."""
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(CEILING.parent), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", CHECKER], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["memory"] == 3
    assert out["nested"] is False and out["inner"] is True
    assert out["right"] == []
    assert any("12 vminps zmm" in p for p in out["short"])
    assert len(out["ymm"]) == 3 and "other vector instructions" in out["ymm"][-1]
    assert out["extra"] == ["other vector instructions vmovups zmm x2"]
    assert out["spill"] == ["3 memory operands (loads, stores or stack spills)"]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_adder_layers", REPO / "benchmarks" / "bench_adder_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_layer_benchmark_divides_by_the_matching_ceiling(tmp_path):
    bench = _bench_module()
    rows = [dict(mix=m, width=w, threads=t, bits=b, gterms=g) for m, w, t, b, g in [
        ("fma", "native", 2, 512, 200.0), ("min+add", "native", 2, 512, 100.0),
        ("clamp+fma", "native", 2, 512, 50.0), ("select+add", "native", 2, 512, 40.0),
        ("min+add", "native", 1, 512, 55.0), ("min+add", "avx2", 2, 256, 80.0),
        ("sgemm", "sgemm", 2, None, 160.0)]]
    path = tmp_path / "ceiling.json"
    path.write_text(json.dumps(dict(cpu="test CPU", time="now", quick=False, rows=rows)))
    record, note = bench.load_ceilings(str(path), 2)
    assert "test CPU" in note and "not a measurement" not in note
    macs = 10e9                              # 1 s per pass is 10 G terms/s
    result = dict(fwd=1.0, dx=0.5, dw=0.25, dws=1.0, dxs=0.5, bwd=0.5, fwk=0.8, dxk=0.4, dwk=0.125)
    # dX and dW in one call: 10/50 + 10/160 = 0.2625 s at the ceilings, over 0.5 s
    assert bench.fraction_row("L", "cpu", result, macs, record, 2) == [
        "L", "cpu", "0.10", "0.40", "0.20", "0.25", "0.50", "0.25", "0.53", "0.12", "0.50", "0.50"]
    assert bench.fraction_row("L", "cpu-avx2", result, macs, record, 2)[2:4] == ["0.12", "-"]
    assert bench.fraction_row("L", "cpu", result, macs, record, 1)[2:4] == ["0.18", "-"]
    # the sign columns against sgn+fma where the code has it (the AVX-512 code), else select+add
    rows += [dict(mix="sgn+fma", width="native", threads=2, bits=512, gterms=20.0),
             dict(mix="select+add", width="avx2", threads=2, bits=256, gterms=25.0)]
    path.write_text(json.dumps(dict(cpu="test CPU", time="now", quick=False, rows=rows)))
    record = bench.load_ceilings(str(path), 2)[0]
    assert bench.fraction_row("L", "cpu", result, macs, record, 2)[6:8] == ["1.00", "0.50"]
    assert bench.fraction_row("L", "cpu-avx2", result, macs, record, 2)[6:8] == ["0.80", "0.40"]
    conv_row = bench.fraction_row("L", "conv2d", result, macs, record, 2)
    assert conv_row[2:] == ["0.05", "0.10", "0.20", "0.25"] + ["-"] * 6
    assert bench.load_ceilings(str(tmp_path / "missing.json"), 2)[0] is None
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert bench.load_ceilings(str(tmp_path / "bad.json"), 2)[0] is None


def test_the_layer_benchmark_counts_the_bytes_each_pass_must_move():
    """X's rows that windows reach (half of them for a 1x1 stride-2 layer), G or Y, dX."""
    bench = _bench_module()
    mib = 2 ** 20
    shortcut = bench.traffic(bench.LAYERS["resnet20 1x1 16->32ch s2 32x32"], 64)
    assert shortcut == dict(fwd=(2 * mib, 2 * mib), dx=(4 * mib, 4 * mib), dw=(4 * mib, 4 * 32 * 16),
                            dws=(4 * mib, 4 * 32 * 16))
    strided = bench.traffic(bench.LAYERS["resnet20 16->32ch s2 32x32"], 64)
    assert strided["fwd"] == (4 * mib, 2 * mib) and strided["dx"] == (6 * mib, 4 * mib)


def test_the_memory_bound_is_the_arithmetic_over_the_data_time():
    """min(1, arithmetic at the ceiling / data time); the rates of the largest arrays for
    the memory, of the smallest for a layer-size cache; '-' without the rates."""
    bench = _bench_module()
    ceilings = [dict(mix=m, width=w, threads=2, bits=512, gterms=g) for m, w, g in [
        ("min+add", "native", 100.0), ("clamp+fma", "native", 50.0), ("select+add", "native", 40.0),
        ("sgemm", "sgemm", 160.0)]]
    memory = [dict(mix=m, threads=2, gbytes=g, bytes=b) for m, g, b in [
        ("read", 10.0, 2 ** 30), ("copy", 10.0, 2 ** 30), ("read", 40.0, 2 ** 24), ("copy", 40.0, 2 ** 24)]]
    record = dict(rows=ceilings + memory)
    # a copy of S bytes at 10 GB/s (read and written): S / 10 GB/s read + S / 10 GB/s written
    assert bench.memory_seconds(1e9, 1e9, record, 2, "memory") == pytest.approx(0.2)
    assert bench.memory_seconds(1e9, 0, record, 2, "layer") == pytest.approx(0.025)
    layer = bench.LAYERS["resnet20 1x1 16->32ch s2 32x32"]
    macs = 32 * 16 * 64 * 16 * 16                      # 8.4 M terms: 84 us at 100 G/s
    data = 4 * 2 ** 20 / 10e9                            # 2 MiB read, 2 MiB written: 419 us
    row = bench.memory_row("L", "cpu", layer, 64, record, 2)
    assert row[:3] == ["L", "cpu", "4.0 / 8.0 / 4.0"]
    assert row[3].split(" / ")[0] == f"{macs / 100e9 / data:.2f}" == "0.20"
    assert row[4].split(" / ")[0] == "0.80"             # four times the rate from the cache
    big = bench.memory_row("L", "cpu", bench.LAYERS["vgg-small 256ch 16x16"], 64, record, 2)
    assert big[3] == big[4] == "1.00 / 1.00 / 1.00 / 1.00"
    assert bench.memory_row("L", "cpu", layer, 64, dict(rows=ceilings), 2)[3] == "- / - / - / -"


RATES = r"""
import json, sys
sys.argv = ["bench_train_step.py"]
import bench_train_step as b
print(json.dumps(b.ceiling_rates(2, sys.argv_results)))
"""


@pytest.mark.skipif(not X86, reason="the AVX2 code is x86's")
def test_the_step_ceiling_of_the_avx2_code_reads_this_cpus_avx2_rows(tmp_path):
    """bench_train_step.py compiled for Haswell on a wider CPU (no ceiling-haswell.json):
    the "avx2" rows of this CPU's ceiling file, at the asked threads; another CPU's file
    is not read."""
    def write(name, cpu, scale):
        rows = [dict(mix=m, width=w, threads=t, bits=256 if w == "avx2" else 512,
                     gterms=scale * g * t * (0.25 if w == "avx2" else 1.0))
                for m, g in (("min+add", 80.0), ("clamp+fma", 40.0), ("fma", 120.0), ("select+add", 30.0))
                for w in ("native", "avx2") for t in (1, 2)]
        (tmp_path / name).write_text(json.dumps(dict(cpu=cpu, rows=rows)))
    env = _env()
    env["NUMBA_CPU_NAME"] = "haswell"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "benchmarks"), env["PYTHONPATH"]])
    script = RATES.replace("sys.argv_results", repr(str(tmp_path)))
    cpu = subprocess.run([sys.executable, "-c", "from minadder.kernels.target import cpu_model; print(cpu_model())"],
                         env=env, capture_output=True, text=True, timeout=300).stdout.strip()
    write("ceiling-elsewhere.json", cpu + " (another machine)", 10.0)
    run = lambda: subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
    write("ceiling-wider.json", cpu, 1.0)
    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {      # avx2, 2 threads: a half
        "min+add": 40.0, "clamp+fma": 20.0, "fma": 60.0, "select+add": 15.0}
