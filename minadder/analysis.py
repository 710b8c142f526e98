"""The paper's analysis as small functions: the proofs in ``proofs/`` and the notebooks use them.

- Proposition 1 and 2 (appendix A): gradient descent on |x - f| with the sign gradient
  and with the full-precision gradient, and what the propositions predict for it.
- Eq. 8 and 9: the output variance of a convolution and of an adder layer.
- Eq. 11: how batch normalisation's backward scales a gradient by gamma / sigma_B.
- Eq. 27 and 28: the l2-AdderNet output, computed directly and as 2 Y_CNN - |X|^2 - |F|^2.
- Helpers for the notebooks: which digits to use (real MNIST when found), the inputs
  each batch norm sees, the filter-gradient norms of Table 1, a short training loop with
  evaluation, a narrow LeNet++ (Fig. 1), and Gaussian / Laplace fits (Fig. 4).

Every iteration function works on Python numbers, ``fractions.Fraction`` (exact arithmetic,
which the tests use to check "exactly") and NumPy arrays (coordinate by coordinate).
"""
import math
from pathlib import Path

import numpy as np

from .kernels.reference import im2col, output_size
from .tensor import Tensor, no_grad


# =========================================================== Propositions 1 and 2
def sgn(z):
    """sgn(z) in {-1, 0, +1}, elementwise for arrays; exact for Fractions."""
    if isinstance(z, (np.ndarray, np.generic)):
        return np.sign(z)
    return (z > 0) - (z < 0)


def sign_step(f, x, alpha):
    """One step of gradient descent on |x - f| with the sign gradient (Eq. 15):
    f <- f - alpha * sgn(f - x)."""
    return f - alpha * sgn(f - x)


def full_step(f, x, alpha):
    """One step with the full-precision gradient (Eq. 16, 24): f <- f - alpha * (f - x)."""
    return f - alpha * (f - x)


def iterate(step, f0, x, alpha, steps):
    """[f_0, f_1, ..., f_steps] for f_{j+1} = step(f_j, x, alpha)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    path = [f0]
    for _ in range(steps):
        path.append(step(path[-1], x, alpha))
    return path


def sign_descent(f0, x, alpha, steps):
    """The sign-gradient iterates f_0..f_steps (Proposition 1); arrays give an array (steps+1, ...)."""
    path = iterate(sign_step, f0, x, alpha, steps)
    return np.stack(path) if isinstance(f0, np.ndarray) else path


def full_descent(f0, x, alpha, steps):
    """The full-precision iterates f_0..f_steps (Proposition 2)."""
    path = iterate(full_step, f0, x, alpha, steps)
    return np.stack(path) if isinstance(f0, np.ndarray) else path


def sign_limit(f0, x, alpha):
    """What Proposition 1 predicts for f <- f - alpha sgn(f - x), for scalars (use Fractions
    for exact answers): (t, low, high).

    With r = (x - f0) / alpha, the iterates walk along the lattice f0 + alpha * Z towards x,
    one lattice point per step, and reach the set {low, high} at step t = floor(|r|):

        low  = f0 + alpha * floor(r) = x - alpha * {r}
        high = f0 + alpha * ceil(r)  = x + alpha * (1 - {r})        ({r} = r - floor(r))

    If r is an integer, low == high == x and f_j = x for every j >= t. Otherwise f
    alternates between low and high for ever, from step t on.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    r = (x - f0) / alpha
    return math.floor(abs(r)), f0 + alpha * math.floor(r), f0 + alpha * math.ceil(r)


def full_closed_form(f0, x, alpha, j):
    """Proposition 2: f_j = x + (1 - alpha)^j (f0 - x)."""
    return x + (1 - alpha) ** j * (f0 - x)


def full_regime(alpha):
    """The behaviour Proposition 2 predicts for f0 != x, from |1 - alpha| and the sign of 1 - alpha."""
    if alpha <= 0:
        return "diverges" if alpha < 0 else "stays"
    if alpha < 1:
        return "monotone"
    if alpha == 1:
        return "one step"
    if alpha < 2:
        return "alternating"
    return "oscillates" if alpha == 2 else "diverges"


# ================================================================ Eq. 8 and 9
def conv_output_variance(d, c_in, var_x, var_f):
    """Eq. 8: Var[Y_CNN] = d^2 c_in Var[X] Var[F] (independent, zero-mean X and F)."""
    return d * d * c_in * var_x * var_f


def adder_output_variance(d, c_in, var_x, var_f):
    """Eq. 9 with the right constant: Var[Y_adder] = (1 - 2/pi) d^2 c_in (Var[X] + Var[F])
    for independent zero-mean normal X and F (Var|Z| = (1 - 2/pi) s^2 for Z ~ N(0, s^2))."""
    return (1 - 2 / math.pi) * d * d * c_in * (var_x + var_f)


def adder_output_variance_as_printed(d, c_in, var_x, var_f):
    """Eq. 9 as the paper prints it, with sqrt(pi/2) where (1 - 2/pi) belongs."""
    return math.sqrt(math.pi / 2) * d * d * c_in * (var_x + var_f)


def folded_normal_moments(mu, var):
    """E|Z| and Var|Z| for Z ~ N(mu, var): the moments of one adder term |X - f| with a
    fixed filter value f (mu = -f). Vectorised over mu."""
    mu = np.asarray(mu, dtype=np.float64)
    s = math.sqrt(var)
    erf = np.vectorize(math.erf)
    mean = s * math.sqrt(2 / math.pi) * np.exp(-mu ** 2 / (2 * var)) + mu * erf(mu / (s * math.sqrt(2)))
    return mean, mu ** 2 + var - mean ** 2


def adder_output_variance_fixed_filter(weight, var_x):
    """Var over inputs X ~ N(0, var_x) of one adder output -sum_k |X_k - w_k| for fixed
    filter values w: the sum of the folded-normal variances. This is what batch norm sees
    per channel (the filter does not change within a batch); averaged over w ~ N(0, var_f)
    it is smaller than Eq. 9 by Var_w[E|X - w|] per term (the law of total variance)."""
    return float(folded_normal_moments(-np.ravel(weight), var_x)[1].sum())


# ===================================================================== Eq. 11
def batch_norm_grad(x, grad_y, gamma=1.0, eps=1e-5):
    """The gradient of batch norm (Eq. 10) with respect to x for one channel, written as

        dL/dx = gamma / sigma_B * P(dL/dy),   P g = g - mean(g) - xhat * mean(g * xhat)

    P is the orthogonal projection that removes the components of g along the constant
    vector and along xhat (they are orthogonal, and |xhat|^2 = m), so |dL/dx| <= gamma |g| / sigma_B.
    x, grad_y: 1-D arrays of the m values of one channel over the batch (and positions).
    """
    x, g = np.asarray(x, dtype=np.float64), np.asarray(grad_y, dtype=np.float64)
    sigma = math.sqrt(x.var() + eps)
    xhat = (x - x.mean()) / sigma
    return gamma / sigma * (g - g.mean() - xhat * (g * xhat).mean())


# =========================================================== Eq. 27 and 28
def _cols_and_filters(x, weight, stride, padding):
    c_out = weight.shape[0]
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    return im2col(x, kh, kw, stride, padding), weight.reshape(c_out, -1), (c_out, n, ho, wo)


def _to_nchw(y_col, shape):
    c_out, n, ho, wo = shape
    return y_col.reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)


def l2_adder2d(x, weight, stride=1, padding=0):
    """Eq. 27, directly: Y[n, t, u, v] = -sum_k (Xp_patch[k] - F[t, k])^2. Plain NumPy."""
    cols, w2, shape = _cols_and_filters(np.asarray(x), np.asarray(weight), stride, padding)
    y = -((cols[None, :, :] - w2[:, :, None]) ** 2).sum(axis=1)
    return _to_nchw(y, shape)


def patch_sq_norms(x, kh, kw, stride=1, padding=0):
    """sum_k Xp_patch[k]^2 for every (kh, kw) patch: shape (N, 1, H_out, W_out)."""
    n, _, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = im2col(np.asarray(x), kh, kw, stride, padding)
    return (cols ** 2).sum(axis=0).reshape(n, ho, wo)[:, None]


def filter_sq_norms(weight):
    """sum_k F[t, k]^2 per filter, shaped (1, C_out, 1, 1) to broadcast against an output."""
    weight = np.asarray(weight)
    return (weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1).reshape(1, -1, 1, 1)


def l2_adder_from_conv(y_cnn, x, weight, stride=1, padding=0):
    """Eq. 28: Y_l2 = 2 Y_CNN - sum X^2 - sum F^2, given Y_CNN = conv2d(x, weight)."""
    kh, kw = np.shape(weight)[2:]
    return 2 * np.asarray(y_cnn) - patch_sq_norms(np.asarray(x), kh, kw, stride, padding) - filter_sq_norms(weight)


# ============================================================ notebook helpers
#: the data folder of the workspace that holds this checkout (this file is minadder/analysis.py),
#: used by the notebooks when it exists.
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def notebook_digits(data_dir=None):
    """(train, test) digits for the notebooks: real MNIST if a copy is found (``data_dir``,
    ``$MINADDER_DATA``, the download cache, or ``SHARED_DATA`` beside the checkout),
    otherwise the embedded synthetic digits. ``train.name`` says which one was used."""
    from .data import DatasetNotFoundError, load_dataset
    for where in (data_dir, SHARED_DATA if SHARED_DATA.is_dir() else None):
        try:
            return load_dataset("mnist", "train", where), load_dataset("mnist", "test", where)
        except DatasetNotFoundError:
            continue
    return load_dataset("synthetic-digits", "train"), load_dataset("synthetic-digits", "test")


def batchnorm_inputs(model, x):
    """Run ``model`` on the batch ``x`` (training mode, no graph) and return
    {batch-norm module name: its input array}: the pre-activations whose per-channel
    standard deviation sigma_B divides the gradient (Eq. 11). The running statistics
    are restored afterwards."""
    from . import nn
    seen, patched = {}, []
    saved = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            def forward(t, _name=name.rstrip("."), _orig=module.forward):
                seen[_name] = np.array(t.data, copy=True)
                return _orig(t)
            object.__setattr__(module, "forward", forward)
            patched.append(module)
    try:
        with no_grad():
            model(Tensor(x))
    finally:
        for module in patched:
            del module.__dict__["forward"]
        model.load_state_dict(saved)
    return seen


def channel_std(pre_activation):
    """Per-channel standard deviation over the batch (and positions): sigma_B of Eq. 10."""
    a = np.asarray(pre_activation, dtype=np.float64)
    axes = (0,) if a.ndim == 2 else (0, 2, 3)
    return a.std(axis=axes)


def filter_grad_norms(model, x, y, layers):
    """Table 1: the l2-norm of each named layer's filter gradient after one forward and
    backward pass of the cross-entropy loss on (x, y), before any update."""
    from . import functional as F
    model.train()
    model.zero_grad()
    F.cross_entropy(model(Tensor(x)), y).backward()
    modules = dict((name.rstrip("."), m) for name, m in model.named_modules())
    norms = {name: float(np.linalg.norm(modules[name].weight.grad)) for name in layers}
    model.zero_grad()
    return norms


def dataset_arrays(dataset, n=None, pad_to=32, seed=0):
    """The first ``n`` images of a random order of ``dataset`` as normalised float32
    arrays (x of shape (n, C, pad_to, pad_to), y), e.g. a fixed evaluation set."""
    from .data import DataLoader
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    loader = DataLoader(dataset.subset(order), 1000, shuffle=False, pad_to=pad_to)
    xs, ys = zip(*loader)
    return np.concatenate(xs), np.concatenate(ys)


def evaluate(model, x, y, batch_size=500):
    """(mean cross-entropy, accuracy) of ``model`` in evaluation mode on arrays (x, y):
    the trainer's ``minadder.train.evaluate`` over batches of ``batch_size``."""
    from .train import evaluate as evaluate_batches
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))
    return evaluate_batches(model, batches)


def refresh_batchnorm(model, batches):
    """Re-estimate every batch norm's running statistics as the plain average over
    ``batches`` (arrays of inputs), run in training mode without a graph ("precise BN").

    The running averages (momentum 0.1) lag behind the batch statistics while the
    filters still move fast, which early in training makes evaluation-mode accuracy
    meaningless for an AdderNet, whose outputs have large means and variances. Training
    itself never reads the running statistics, so refreshing them changes nothing in it.
    """
    from . import nn
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    saved = [m.momentum for m in bns]
    model.train()
    try:
        with no_grad():
            for i, x in enumerate(batches):
                for m in bns:
                    m.momentum = 1.0 / (i + 1)      # a cumulative average of the batches
                model(Tensor(x))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum


def train_steps(model, optimizer, loader, steps, test=None, eval_every=None, transform=None,
                refresh_bn=8):
    """A small training loop for the notebooks: ``steps`` SGD steps on batches of
    ``loader`` (a DataLoader, cycled over epochs), each the trainer's ``train_step``,
    with the learning rate decayed from ``optimizer.lr`` to 0 by ``optim.CosineLR``
    counted in steps instead of epochs. Every ``eval_every`` steps and at the end,
    ``test = (x, y)`` is evaluated in evaluation mode, after ``refresh_batchnorm`` on the
    last ``refresh_bn`` training batches (0: use the running statistics as they are).
    ``transform(x)``, if given, maps each input batch (e.g. a smaller image size).
    Returns a dict of lists: step, loss, accuracy (per batch); eval_step, test_loss, test_accuracy.
    """
    from collections import deque
    from .optim import CosineLR
    from .train import train_step
    base_lr = optimizer.lr
    schedule = CosineLR(optimizer, steps)
    curves = {"step": [], "loss": [], "accuracy": [], "eval_step": [], "test_loss": [], "test_accuracy": []}
    recent = deque(maxlen=max(refresh_bn, 1))

    def record_eval(step):
        if test is not None:
            if refresh_bn:
                refresh_batchnorm(model, list(recent))
            loss, acc = evaluate(model, *test)
            curves["eval_step"].append(step)
            curves["test_loss"].append(loss)
            curves["test_accuracy"].append(acc)

    def batches():
        while True:
            yield from loader

    model.train()
    for step, (x, y) in zip(range(1, steps + 1), batches()):
        x = transform(x) if transform is not None else x
        recent.append(x)
        schedule.set(step - 1)
        loss, correct = train_step(model, optimizer, x, y, check_finite=False)
        curves["step"].append(step)
        curves["loss"].append(loss)
        curves["accuracy"].append(correct / len(y))
        if eval_every and step % eval_every == 0 and step != steps:
            record_eval(step)
    record_eval(steps)
    optimizer.lr = base_lr
    return curves


def small_lenet_pp(kind="adder", widths=(8, 8, 16, 16, 32, 32), input_size=16, grad_mode="full",
                   num_classes=10, feature_dim=3):
    """LeNet++ (``models.LeNetPP``, paper Fig. 1) with narrower layers and smaller images,
    so that the notebooks can train it in seconds: six 5x5 layers of ``widths`` channels
    (padding 2, max pooling after every pair), a ``feature_dim``-D feature layer with
    batch norm, and the classifier, all adder layers when kind="adder". The full model
    has widths (32, 32, 64, 64, 128, 128) on 32x32 images, about 50 times the work."""
    from . import models, nn
    if len(widths) != 6 or input_size % 8:
        raise ValueError(f"small_lenet_pp: need 6 widths and input_size divisible by 8, got {widths}, {input_size}")
    net = models.LeNetPP.__new__(models.LeNetPP)
    models._Net.__init__(net, kind, 1, input_size)
    channels = (1, *widths)
    for i in range(6):
        setattr(net, f"conv{i + 1}", models.conv(kind, channels[i], channels[i + 1], 5, 1, 2, grad_mode))
        setattr(net, f"bn{i + 1}", nn.BatchNorm2d(channels[i + 1]))
    size = input_size // 8
    net.feature = models.linear(kind, channels[-1] * size * size, feature_dim, grad_mode)
    net.bn_feature = nn.BatchNorm1d(feature_dim)
    net.fc, net.bn_fc = models.linear(kind, feature_dim, num_classes, grad_mode), nn.BatchNorm1d(num_classes)
    return net


def halve_images(x):
    """2x2 average pooling of a batch (N, C, H, W) as plain arrays: 32x32 digits -> 16x16."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def fit_gaussian(w):
    """Maximum-likelihood N(mu, sigma^2): (mu, sigma, mean log-density per value)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    mu, sigma = w.mean(), w.std()
    return mu, sigma, float(-0.5 * math.log(2 * math.pi * sigma ** 2) - 0.5)


def fit_laplace(w):
    """Maximum-likelihood Laplace(m, b): m the median, b the mean |w - m|;
    returns (m, b, mean log-density per value)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    m = float(np.median(w))
    b = float(np.abs(w - m).mean())
    return m, b, float(-math.log(2 * b) - 1)


__all__ = [
    "sgn", "sign_step", "full_step", "iterate", "sign_descent", "full_descent",
    "sign_limit", "full_closed_form", "full_regime",
    "conv_output_variance", "adder_output_variance", "adder_output_variance_as_printed",
    "folded_normal_moments", "adder_output_variance_fixed_filter", "batch_norm_grad",
    "l2_adder2d", "patch_sq_norms", "filter_sq_norms", "l2_adder_from_conv",
    "notebook_digits", "batchnorm_inputs", "channel_std", "filter_grad_norms",
    "dataset_arrays", "evaluate", "refresh_batchnorm", "train_steps",
    "small_lenet_pp", "halve_images", "fit_gaussian", "fit_laplace",
]
