"""The sum of two arrays: the readable definition of the optional kernel ``add``
(contract.py), which ``cpu/addition.py`` matches.

    out = a + b

The engine (``tensor.py``) adds with it the gradients of a tensor that was used twice:
in a ResNet every block's input, which feeds both the block's body and its shortcut.
"""


def add(a, b):
    """a + b entry by entry, a new array (a and b: one shape, one dtype)."""
    return a + b
