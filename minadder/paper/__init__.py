"""The paper's claims as small functions that proofs/ proves, tests/test_proofs_*.py checks and the notebooks plot.

- ``propositions``: Propositions 1 and 2 (appendix A), sign vs full-precision gradient descent.
- ``variance``: Eq. 8 and 9 (output variances), Eq. 11 (batch norm's gradient scale).
- ``l2_adder``: Eq. 27 and 28 (the l2-AdderNet through a convolution).
- ``measure``: measurements on a network for Table 1, Eq. 10-11 and Fig. 4.

``minadder.analysis`` gathers their functions, and the notebook helpers of
``minadder.experiments``, in one namespace for the notebooks.
"""
from . import l2_adder, measure, propositions, variance

__all__ = ["propositions", "variance", "l2_adder", "measure"]
