"""Draw the graph behind a tensor with matplotlib (no graphviz needed).

    from minadder.viz import draw_graph
    fig = draw_graph(loss, names={x: "x", w: "w"})

Every tensor that leads to the root is a box: a leaf says "leaf", a result names the
Function that made it (``tensor.node.function``), and every box gives the shape. Colours
tell which tensors require grad. An arrow runs from each input to the result computed
from it. Boxes are placed by topological depth: each result one column right of its
deepest input, each leaf just left of its first user, so arrows always point right, the
way the forward pass runs (backward walks them right to left).

matplotlib is imported here only, so ``import minadder`` stays fast.
"""
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from .tensor import Tensor

COLOURS = {"leaf, requires grad": "#f4b183", "result": "#9dc3e6", "no grad": "#d9d9d9"}


def graph_tensors(root):
    """Every Tensor that leads to root (those without grad included), inputs before results."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
        elif id(t) not in seen:
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((inp, False) for inp in tensor_inputs(t) if id(inp) not in seen)
    return order


def tensor_inputs(t):
    """The Tensors t was computed from (none for a leaf, or once backward freed its node)."""
    return [] if t.node is None else [inp for inp in t.node.inputs if isinstance(inp, Tensor)]


def depths(tensors):
    """The column of each tensor: a result sits one right of its deepest input (its
    topological depth); a leaf sits just left of the first result that uses it."""
    depth = {}
    for t in tensors:                      # inputs come first, so their depths are known
        depth[id(t)] = 1 + max((depth[id(i)] for i in tensor_inputs(t)), default=-1)
    first_use = {}
    for t in tensors:
        for i in tensor_inputs(t):
            first_use[id(i)] = min(first_use.get(id(i), depth[id(t)]), depth[id(t)])
    for t in tensors:
        if t.node is None and id(t) in first_use:
            depth[id(t)] = first_use[id(t)] - 1
    return depth


def label(t, names=None):
    """What a box says: the tensor's name if given, what made it, its shape."""
    if t.node is None:
        made_by = "leaf"
    else:
        made_by = t.node.function.__name__ + (" (freed)" if t.node.freed else "")
    name = (names or {}).get(t)
    return "\n".join(([name] if name else []) + [made_by, str(tuple(t.shape))])


def kind(t):
    if not t.requires_grad:
        return "no grad"
    return "leaf, requires grad" if t.node is None else "result"


def draw_graph(tensor, names=None, figsize=None):
    """A matplotlib Figure of the graph behind ``tensor``; ``names`` maps tensors to labels."""
    tensors = graph_tensors(tensor)
    depth = depths(tensors)
    columns = {}                           # depth -> the tensors in that column, top to bottom
    for t in tensors:
        columns.setdefault(depth[id(t)], []).append(t)
    position = {id(t): (d, -row) for d, column in columns.items() for row, t in enumerate(column)}

    n_cols, n_rows = len(columns), max(len(c) for c in columns.values())
    fig = Figure(figsize=figsize or (min(2.2 * n_cols + 1, 16), min(1.1 * n_rows + 1, 12)))
    ax = fig.add_subplot()
    for t in tensors:                      # arrows first, so the boxes sit on top of them
        for inp in {id(i): i for i in tensor_inputs(t)}.values():
            (x0, y0), (x1, y1) = position[id(inp)], position[id(t)]
            bend = 0.0 if x1 - x0 == 1 or y0 != y1 else -0.3   # around the boxes between
            ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="->", mutation_scale=12,
                                         connectionstyle=f"arc3,rad={bend}", color="#595959",
                                         shrinkA=28, shrinkB=28))
    for t in tensors:
        x, y = position[id(t)]
        ax.text(x, y, label(t, names), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", facecolor=COLOURS[kind(t)], edgecolor="#404040"))
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(-n_rows + 0.4, 0.6)
    ax.axis("off")
    for name, colour in COLOURS.items():   # an empty plot per colour, for the legend
        ax.plot([], [], "s", color=colour, markersize=10, label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8, frameon=False)
    ax.set_title(f"{len(tensors)} tensors; forward runs left to right", fontsize=9)
    fig.tight_layout()
    return fig
