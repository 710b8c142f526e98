"""minadder: a small autograd engine in NumPy for AdderNets (Chen et al., CVPR 2020)."""
from . import functional, models, nn, optim
from .backend import available_backends, configure, get_backend, set_backend, use_backend
from .rng import manual_seed
from .tensor import Function, Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "no_grad", "is_grad_enabled", "manual_seed",
    "set_backend", "get_backend", "use_backend", "available_backends", "configure",
    "functional", "nn", "optim", "models",
]


def __getattr__(name):
    """``minadder.viz`` is imported on first use: it needs matplotlib, which ``import minadder`` avoids."""
    if name == "viz":
        import importlib
        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module 'minadder' has no attribute {name!r}")
