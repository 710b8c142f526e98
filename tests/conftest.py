import pytest

import minadder

# the process-wide settings the command line makes (Numba's threading layer, the CPU
# features it compiles for), before any test compiles a kernel: tests run as the CLI does
minadder.configure()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (real-data training)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
