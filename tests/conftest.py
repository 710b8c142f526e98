import os

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


@pytest.fixture(scope="module")
def private_data_folder(tmp_path_factory):
    """$MINADDER_DATA pointed at a folder of this test module's own (the synthetic digits are
    generated there once), restored afterwards."""
    old = os.environ.get("MINADDER_DATA")
    os.environ["MINADDER_DATA"] = str(tmp_path_factory.mktemp("minadder-data"))
    yield
    if old is None:
        os.environ.pop("MINADDER_DATA", None)
    else:
        os.environ["MINADDER_DATA"] = old
