"""Helpers for the tests that run ``python -m minadder`` as a user would: in a subprocess,
on tiny data, with the data folders and the home folder made private to the test."""
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: one epoch of three batches of 16 synthetic digits, 32 test digits, the reference backend
TINY = ["--epochs", "1", "--batch-size", "16", "--limit-train", "48", "--limit-test", "32",
        "--backend", "numpy", "--no-progress"]

REPO = Path(__file__).resolve().parent.parent


def private_places(root):
    """(data, home) under ``root``: a private $MINADDER_DATA holding the synthetic digits'
    cache, and an empty home folder."""
    from minadder.data import synthetic
    data, home = root / "data", root / "home"
    home.mkdir()
    synthetic.synthetic_digits(cache_dir=data / synthetic.SYNTHETIC_NAME)
    return data, home


def private_env(data, home):
    """An environment whose $MINADDER_DATA is ``data`` and whose home folder is ``home``
    (so no dataset of the machine's own cache is found); this checkout's minadder first."""
    env = dict(os.environ, MINADDER_DATA=str(data), HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def cli(env, *args, cwd=None):
    """Run ``python -m minadder ARGS``; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "minadder", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def one_line_error(result, *words, code=2):
    """Assert the run failed with ``code`` and one line on stderr (no traceback) that
    contains every one of ``words``; return that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert str(word) in line, (word, line)
    return line


def write_mnist(folder, n, split="train", seed=0):
    """A tiny MNIST IDX pair (gzipped) with ``n`` random images and labels."""
    rng = np.random.default_rng(seed)
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                      (f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / (name + ".gz")).write_bytes(gzip.compress(header + arr.tobytes()))
    return folder


def write_cifar10_batch(path, n, seed=0):
    """A made-up CIFAR-10 binary batch of ``n`` records (label byte + 3072 pixel bytes)."""
    records = np.random.default_rng(seed).integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(records.tobytes())
    return path


def write_cifar10(folder, per_batch=10, test=20):
    """A made-up cifar-10-batches-bin folder: five training batches and test_batch.bin."""
    for i in range(1, 6):
        write_cifar10_batch(folder / f"data_batch_{i}.bin", per_batch, seed=i)
    write_cifar10_batch(folder / "test_batch.bin", test, seed=9)
    return folder


_SHARED = []


def shared_places(tmp_path_factory):
    """``private_places`` made once per test session (rendering the digits takes seconds);
    give a test that writes into the home folder a home of its own."""
    if not _SHARED:
        _SHARED.append(private_places(tmp_path_factory.mktemp("shared-places")))
    return _SHARED[0]


#: ``python -m minadder ARGS`` with a hook in the training loop: after batch AT (1-based,
#: counted over the whole run) it sends itself the signal SIG (a name; "" for none), or,
#: with a READY file named, creates READY and waits (up to 60 s) until GO exists.
_DRIVER = """
import os, signal, sys, time
from minadder.train import loop
from minadder.__main__ import main
at, sig, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
real_step, calls = loop.train_step, []
def train_step(*args, **kw):
    result = real_step(*args, **kw)
    calls.append(1)
    if len(calls) == at:
        if sig:
            os.kill(os.getpid(), getattr(signal, sig))
        if ready:
            open(ready, "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.02)
    return result
loop.train_step = train_step
sys.exit(main(sys.argv[5:]))
"""


def cli_hooked(env, at, *args, signal="", ready="", go="", wait=True):
    """Run the driver above: ``python -m minadder ARGS`` stopped after batch ``at``; a
    CompletedProcess (``wait``) or the running Popen."""
    command = [sys.executable, "-c", _DRIVER, str(at), signal, str(ready), str(go), *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def wait_for(path, process, seconds=120):
    """Wait until ``path`` exists (the hooked run reached its batch); fail if the process ended first."""
    import time
    deadline = time.monotonic() + seconds
    while not Path(path).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
