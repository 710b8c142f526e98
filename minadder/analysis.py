"""Everything the notebooks use, in one namespace: ``minadder.paper`` (the paper's claims) and ``minadder.experiments``.

``from minadder import analysis as A`` gives ``A.sign_descent`` (Proposition 1),
``A.adder_output_variance`` (Eq. 9), ``A.l2_adder2d`` (Eq. 27), ``A.filter_grad_norms``
(Table 1), ``A.train_steps`` (a short training run) and the rest; the code lives in
``minadder/paper/`` and ``minadder/experiments.py``, which say what each function is.
"""
from .experiments import (dataset_arrays, evaluate, halve_images, notebook_digits, refresh_batchnorm,
                          small_lenet_pp, train_steps)
from .paper.l2_adder import filter_sq_norms, l2_adder2d, l2_adder_from_conv, patch_sq_norms
from .paper.measure import batchnorm_inputs, channel_std, filter_grad_norms, fit_gaussian, fit_laplace
from .paper.propositions import (full_closed_form, full_descent, full_regime, full_step, iterate, sgn,
                                 sign_descent, sign_limit, sign_step)
from .paper.variance import (adder_output_variance, adder_output_variance_as_printed,
                             adder_output_variance_fixed_filter, batch_norm_grad, conv_output_variance,
                             folded_normal_moments)

__all__ = [
    "sgn", "sign_step", "full_step", "iterate", "sign_descent", "full_descent",
    "sign_limit", "full_closed_form", "full_regime",
    "conv_output_variance", "adder_output_variance", "adder_output_variance_as_printed",
    "folded_normal_moments", "adder_output_variance_fixed_filter", "batch_norm_grad",
    "l2_adder2d", "patch_sq_norms", "filter_sq_norms", "l2_adder_from_conv",
    "batchnorm_inputs", "channel_std", "filter_grad_norms", "fit_gaussian", "fit_laplace",
    "notebook_digits", "dataset_arrays", "evaluate", "refresh_batchnorm", "train_steps",
    "small_lenet_pp", "halve_images",
]
