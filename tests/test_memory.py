"""minadder.memory.keep_freed_memory: large temporaries reuse pages instead of faulting."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")

# ten "steps", each holding four 8 MB arrays at once and then freeing them (as a training
# step does with its activations); print the page faults that took
PROGRAM = """
import resource, sys
import numpy as np
from minadder.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    arrays = [np.ones(2**21, dtype=np.float32) for _ in range(4)]
    del arrays
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


def test_freed_blocks_are_reused_without_page_faults():
    kept, with_keep = _faults("keep")
    _, default = _faults("default")
    if kept != "True":
        pytest.skip("this C library is not glibc")
    assert default > 10 * 1000            # glibc trims the freed 32 MB: the next step faults it in
    assert with_keep < default / 20

