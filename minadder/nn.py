"""Layers as Modules that own their Parameters, in the style of ``torch.nn``.

A Module registers every Parameter, sub-Module and buffer assigned to it as an
attribute, so ``parameters()`` and ``state_dict()`` find them by walking the tree.
"""
import math
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np

from . import bounded, checks
from . import functional as F
from .rng import generator
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module learns. ``is_adder`` marks adder filters, which the
    optimizer scales with the adaptive learning rate of Eq. 13."""

    def __init__(self, data, is_adder=False):
        super().__init__(data, requires_grad=True)
        self.is_adder = is_adder

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{', adder' if self.is_adder else ''})"


class Module:
    """Base class: subclasses assign Parameters / Modules in __init__ and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for registry in (self._parameters, self._modules):
            registry.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self._buffers.pop(name, None)
            (self._parameters if isinstance(value, Parameter) else self._modules)[name] = value
        elif name in self._buffers:
            self._buffers[name] = value   # a buffer given a new array stays a buffer (and in state_dict)
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A non-learned array saved in the state_dict (batch norm's running statistics)."""
        self._buffers[name] = array
        setattr(self, name, array)

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            output = output if result is None else result
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward, PyTorch's convention:
        ``inputs`` is the tuple of positional arguments, and a result other than None
        replaces the output. Returns a handle whose ``remove()`` takes the hook off."""
        key = object()
        self._forward_hooks[key] = hook
        return SimpleNamespace(remove=lambda: self._forward_hooks.pop(key, None))

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # --- walking the tree ------------------------------------------------------------
    def named_modules(self, prefix="", _seen=None):
        """(name, module) for this module ("") and every one inside it ("layer1.0.conv1"),
        each once: one used twice (Sequential(lin, lin)) under its first name, as in PyTorch."""
        _seen = set() if _seen is None else _seen
        if id(self) not in _seen:
            _seen.add(id(self))
            yield prefix, self
            for name, module in self._modules.items():
                yield from module.named_modules(_join(prefix, name), _seen)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self):
        """Each parameter once, a shared one under its first name (else SGD steps it twice)."""
        found = {}
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                found.setdefault(id(p), (_join(prefix, name), p))
        return iter(found.values())

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name in module._buffers:
                yield _join(prefix, name), getattr(module, name)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # --- saving and loading ------------------------------------------------------------
    def state_dict(self):
        """Name -> copy of the array, for every parameter and buffer."""
        state = OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())
        state.update((name, np.array(b, copy=True)) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and buffers, all or nothing, as PyTorch does: every
        entry is checked first (names, shapes, dtypes), so a bad state_dict changes nothing.
        ``strict=False`` skips missing and unexpected entries. Returns their names, as
        ``missing_keys`` and ``unexpected_keys``."""
        targets = OrderedDict((name, p.data) for name, p in self.named_parameters())
        targets.update(self.named_buffers())
        state = {k: _array(v) for k, v in state.items()}     # Tensors (named_parameters()) too
        missing, unexpected = [k for k in targets if k not in state], [k for k in state if k not in targets]
        check_state({name: target.shape for name, target in targets.items()},
                    state if strict else {k: v for k, v in state.items() if k in targets}, "load_state_dict",
                    optional=() if strict else missing, dtypes={name: t.dtype for name, t in targets.items()})
        for name in targets.keys() & state.keys():
            targets[name][...] = state[name]
        return SimpleNamespace(missing_keys=missing, unexpected_keys=unexpected)

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            lines.append("  (" + name + "): " + repr(module).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _array(value):
    """A state entry as an array: a Tensor's (or Parameter's) data, anything else as NumPy reads it."""
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def check_state(shapes, state, what, optional=(), dtypes=None):
    """Refuse ``state`` (name -> array) for a model whose entries have ``shapes`` (name ->
    shape): one ValueError names every missing (unless ``optional``), unexpected,
    mis-shaped or mis-typed entry: a value must be real floating, or of its entry's own
    dtype in ``dtypes`` (complex, text and objects never). Also ``minadder.torch``'s check."""
    missing = [k for k in shapes if k not in state and k not in optional]
    problems = [f"missing entries: {', '.join(missing)}"] if missing else []
    if any(k not in shapes for k in state):
        problems.append(f"unexpected entries: {', '.join(k for k in state if k not in shapes)}")
    problems += [f"{k} has shape {tuple(np.shape(v))}, expected {tuple(shapes[k])}"
                 for k, v in state.items() if k in shapes and tuple(np.shape(v)) != tuple(shapes[k])]
    kinds = {k: np.asarray(v).dtype for k, v in state.items() if k in shapes}
    problems += [f"{k} has dtype {d}, expected a real floating one" for k, d in kinds.items()
                 if d.kind != "f" and d != (dtypes or {}).get(k)]
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


def save(state, path, compress=False):
    """Write a state_dict (or any name -> array or Tensor mapping) with np.savez: no pickled
    objects (an entry NumPy would pickle is refused). ``compress=True`` uses
    np.savez_compressed (zlib; worth it for text, hardly for floats)."""
    arrays = {k: _array(v) for k, v in state.items()}
    if any(a.dtype.hasobject for a in arrays.values()):
        raise TypeError(f"save: entries {', '.join(k for k, a in arrays.items() if a.dtype.hasobject)} are not "
                        "numeric arrays (NumPy would pickle them, and load refuses pickled data)")
    write = np.savez_compressed if compress else np.savez
    write(path, **arrays)


def load(path):
    """Read a file written by ``save``, its sizes checked before anything is decompressed
    and no pickled objects (``bounded.load_npz``): loading can neither run code nor fill
    the memory. A damaged or hostile file raises ``bounded.FileRejected`` naming it."""
    return OrderedDict(bounded.load_npz(path))


# ======================================================================== containers
class Sequential(Module):
    """Apply modules one after another."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):    # else a plain attribute, which forward would skip
                raise TypeError(f"Sequential: entry {i} is a {type(m).__name__}, not a Module (F.relu: nn.ReLU())")
            setattr(self, str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


# ======================================================================== layers
def _uniform(shape, bound, dtype):
    return generator().uniform(-bound, bound, size=shape).astype(dtype)


class Adder2d(Module):
    """Adder layer (Eq. 2) with filters (out, in, k, k) initialised N(0, 1), as the
    reference code does. ``grad_mode`` is "full" (Eq. 5, 6) or "sign" (Eq. 4); ``distance``
    "l1" (Eq. 2) or "l2" (Appendix B, exact gradients: grad_mode "full")."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=False, grad_mode="full", dtype=np.float32, distance="l1"):
        super().__init__()
        self.distance = checks.check_distance("Adder2d", distance, grad_mode)
        in_channels, out_channels, kernel_size, stride, padding = checks.check_conv_layer(
            "Adder2d", in_channels, out_channels, kernel_size, stride, padding)
        self.stride, self.padding, self.grad_mode = stride, padding, grad_mode
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = Parameter(generator().standard_normal(shape).astype(dtype), is_adder=True)
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None

    def forward(self, x):
        y = F.adder2d(x, self.weight, self.stride, self.padding, self.grad_mode, self.distance)
        return y if self.bias is None else y + F.reshape(self.bias, 1, -1, 1, 1)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, grad_mode={self.grad_mode!r}, distance={self.distance!r}"


class AdderLinear(Module):
    """Fully connected adder layer: y[n, t] = -sum_k |x[n, k] - W[t, k]| (or (x - W)^2 for
    distance="l2"), W ~ N(0, 1)."""

    def __init__(self, in_features, out_features, bias=False, grad_mode="full", dtype=np.float32, distance="l1"):
        super().__init__()
        self.distance = checks.check_distance("AdderLinear", distance, grad_mode)
        in_features, out_features = checks.check_sizes("AdderLinear", in_features=in_features,
                                                       out_features=out_features)
        self.grad_mode = grad_mode
        self.weight = Parameter(generator().standard_normal((out_features, in_features)).astype(dtype), is_adder=True)
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x):
        y = F.adder_linear(x, self.weight, self.grad_mode, self.distance)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, grad_mode={self.grad_mode!r}, distance={self.distance!r}"


class Conv2d(Module):
    """Ordinary convolution; weights uniform in +-1/sqrt(fan_in), PyTorch's default."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, dtype=np.float32):
        super().__init__()
        in_channels, out_channels, kernel_size, stride, padding = checks.check_conv_layer(
            "Conv2d", in_channels, out_channels, kernel_size, stride, padding)
        self.stride, self.padding = stride, padding
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = Parameter(_uniform((out_channels, in_channels, kernel_size, kernel_size), bound, dtype))
        self.bias = Parameter(_uniform((out_channels,), bound, dtype)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


class Linear(Module):
    """y = x @ W.T + b; weights uniform in +-1/sqrt(in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        in_features, out_features = checks.check_sizes("Linear", in_features=in_features, out_features=out_features)
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"


class _BatchNorm(Module):
    ndim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        num_features, eps, momentum = checks.check_batch_norm_layer(type(self).__name__, num_features, eps, momentum)
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))

    def forward(self, x, relu=False, residual=None):
        """relu=True: relu(self(x)) in one fused layer (F.batch_norm's relu); residual:
        self(x) + residual before that ReLU, in the same layer."""
        if x.ndim != self.ndim:
            raise ValueError(f"{type(self).__name__}: expected a {self.ndim}-D input, got shape {x.shape}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps, relu, residual)

    def extra_repr(self):
        return f"{self.running_mean.shape[0]}"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) inputs."""
    ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs, per channel."""
    ndim = 4


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class _Pool2d(Module):
    """What both pooling layers hold: a k x k window, its stride (k by default) and padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = checks.check_pool_layer(type(self).__name__, kernel_size,
                                                                             stride, padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}"


class MaxPool2d(_Pool2d):
    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x, 1)
