"""The random generator that initialises layers: ``minadder.manual_seed(s)`` makes runs repeatable."""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the generator used for weight initialisation."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator():
    return _generator
