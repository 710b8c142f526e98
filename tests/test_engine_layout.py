"""How the engine is laid out: primitives in ops.py, layers in layers.py, and
``minadder.functional`` still the one namespace that offers them all."""
import re
from pathlib import Path

import pytest

import minadder as ma
from minadder import functional as F
from minadder import layers, ops

# every public name functional.py had before it was split into ops.py and layers.py
FUNCTIONAL_NAMES_BEFORE_THE_SPLIT = [
    "Add", "Adder2d", "AvgPool2d", "BatchNorm", "Conv2d", "CrossEntropy", "Div", "Exp", "HardTanh",
    "Log", "LogSoftmax", "MatMul", "Max", "MaxPool2d", "Mul", "Neg", "Power", "ReLU", "Reshape", "Sub",
    "Sum", "Transpose", "add", "adder2d", "adder_linear", "avg_pool2d", "batch_norm", "conv2d",
    "cross_entropy", "div", "exp", "flatten", "hardtanh", "linear", "log", "log_softmax", "matmul",
    "max", "max_pool2d", "mean", "mul", "neg", "power", "relu", "reshape", "sub", "sum", "transpose"]


def test_functional_keeps_every_public_name():
    missing = [name for name in FUNCTIONAL_NAMES_BEFORE_THE_SPLIT if not hasattr(F, name)]
    assert not missing


def test_functional_offers_the_very_objects_of_ops_and_layers():
    for module in (ops, layers):
        for name in module.__all__:
            assert getattr(F, name) is getattr(module, name), name
    assert sorted(F.__all__) == sorted(ops.__all__ + layers.__all__)


def test_primitives_and_layers_are_apart():
    assert "adder2d" in layers.__all__ and "batch_norm" in layers.__all__ and "conv2d" in layers.__all__
    assert "add" in ops.__all__ and "unbroadcast" in ops.__all__
    assert not set(ops.__all__) & set(layers.__all__)
    assert ma.functional is F


# ------------------------------------------------------------------ citations
REPO = Path(__file__).resolve().parent.parent
ENGINE_FILES = ["minadder/tensor.py", "minadder/ops.py", "minadder/layers.py", "minadder/functional.py",
                "minadder/nn.py", "minadder/models.py", "minadder/gradcheck.py", "minadder/viz.py",
                "minadder/__init__.py", "proofs/mathematics.md"]


@pytest.mark.parametrize("path", ENGINE_FILES)
def test_the_engine_cites_only_the_repository_and_the_paper(path):
    text = (REPO / path).read_text()
    for outside in ("SPEC", "DESIGN.md", "../shared"):
        assert outside not in text, f"{path} cites {outside}, which a clone of the repository does not have"


def test_the_mathematics_page_covers_the_equations_the_code_cites():
    page = (REPO / "proofs" / "mathematics.md").read_text()
    for eq in ("Eq. 2", "Eq. 4", "Eq. 5", "Eq. 6", "Eq. 7", "Eq. 10", "Eq. 12", "Eq. 13"):
        assert eq in page, eq
    cited = {m for path in ENGINE_FILES[:-1] for m in re.findall(r"Eqs?\. (\d+)", (REPO / path).read_text())}
    on_page = set(re.findall(r"Eqs?\. (\d+)", page)) | set(re.findall(r"Eqs\. \d+-(\d+)", page))
    assert cited <= on_page, f"equations cited by the code but not on the page: {sorted(cited - on_page)}"


# ------------------------------------------------------------------ size
CORE = ["minadder/tensor.py", "minadder/functional.py", "minadder/ops.py", "minadder/layers.py",
        "minadder/nn.py", "minadder/optim.py"]
CORE_LIMIT = 1500


def test_the_core_stays_small_enough_to_read_in_an_afternoon():
    lines = {path: len((REPO / path).read_text().splitlines()) for path in CORE}
    assert sum(lines.values()) < CORE_LIMIT, f"the core has {sum(lines.values())} lines (limit {CORE_LIMIT}): {lines}"


def test_the_core_is_every_engine_module_that_functional_is_made_of():
    from minadder import functional
    parts = {"minadder/" + Path(m.__file__).name for m in (functional, layers, ops)}
    assert parts <= set(CORE)
