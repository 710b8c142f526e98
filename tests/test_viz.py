"""draw_graph: a Figure with one box per tensor of the graph, labelled with ops and shapes."""
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import minadder as ma
from minadder import functional as F
from minadder.viz import depths, draw_graph, graph_tensors

matplotlib.use("Agg")


def boxes(fig):
    """The label of every box drawn on the figure's axes."""
    return [t.get_text() for t in fig.axes[0].texts]


def small_graph():
    x = ma.Tensor(np.ones((2, 3)))                          # an input: no grad
    w = ma.Tensor(np.ones((4, 3)), requires_grad=True)
    b = ma.Tensor(np.zeros(4), requires_grad=True)
    y = F.relu(F.linear(x, w, b))                            # transpose, matmul, add, relu
    loss = F.sum(y * y)
    return x, w, b, loss


def test_one_box_per_tensor_of_the_graph():
    x, w, b, loss = small_graph()
    # x, w, b; w.T, x @ w.T, + b, relu, y * y, sum
    assert len(graph_tensors(loss)) == 9
    fig = draw_graph(loss)
    assert isinstance(fig, Figure)
    assert len(boxes(fig)) == 9


def test_labels_name_the_operations_and_shapes():
    x, w, b, loss = small_graph()
    labels = boxes(draw_graph(loss, names={w: "w", x: "x"}))
    for op in ("Transpose", "MatMul", "Add", "FusedReLU", "Mul", "Sum"):     # F.relu: layers.FusedReLU
        assert sum(op in text.split("\n") for text in labels) == 1, op
    assert "w\nleaf\n(4, 3)" in labels and "x\nleaf\n(2, 3)" in labels
    assert "Sum\n()" in labels and "MatMul\n(2, 4)" in labels


def test_colours_tell_which_tensors_require_grad():
    x, w, b, loss = small_graph()
    fig = draw_graph(loss, names={x: "x", w: "w"})
    colour = {t.get_text().split("\n")[0]: t.get_bbox_patch().get_facecolor() for t in fig.axes[0].texts}
    assert colour["x"] != colour["w"]                    # x needs no gradient, w does
    assert colour["w"] != colour["Sum"]                  # a leaf is not a result


def test_layout_is_by_topological_depth():
    a = ma.Tensor(np.ones(2), requires_grad=True)
    b = a * 2
    c = b + a                                            # depth 2: one more than b
    d = depths(graph_tensors(c))
    assert (d[id(a)], d[id(b)], d[id(c)]) == (0, 1, 2)
    fig = draw_graph(c, names={a: "a", b: "b", c: "c"})
    x_of = {t.get_text().split("\n")[0]: t.get_position()[0] for t in fig.axes[0].texts}
    assert x_of["a"] < x_of["b"] < x_of["c"]


def test_a_freed_graph_is_drawn_as_freed():
    a = ma.Tensor(np.ones(2), requires_grad=True)
    loss = (a * 3).sum()
    loss.backward()
    assert boxes(draw_graph(loss)) == ["Sum (freed)\n()"]


@pytest.mark.parametrize("depth", [1, 30])
def test_chains_of_any_length(depth):
    t = ma.Tensor(np.ones(1), requires_grad=True)
    for _ in range(depth):
        t = t + 1
    assert len(boxes(draw_graph(t))) == depth + 1


def test_viz_is_reached_from_the_package_without_slowing_its_import():
    code = ("import sys, minadder; assert 'matplotlib' not in sys.modules; "
            "from matplotlib.figure import Figure; t = minadder.Tensor([1.0], requires_grad=True); "
            "assert isinstance(minadder.viz.draw_graph(t * 2), Figure)")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, MPLBACKEND="Agg"))
