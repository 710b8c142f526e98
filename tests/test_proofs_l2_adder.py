"""proofs/l2_adder.md: -sum (X - F)^2 = 2 Y_CNN - sum X^2 - sum F^2 (Eq. 28)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F
from minadder.paper import l2_adder as l2

SETTINGS = settings(deadline=None, max_examples=40)


def l2_by_loops(x, w, stride, padding):
    """Eq. 27 straight from the definition, one output at a time."""
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, c_out, ho, wo))
    for b in range(n):
        for t in range(c_out):
            for u in range(ho):
                for v in range(wo):
                    patch = xp[b, :, stride * u:stride * u + kh, stride * v:stride * v + kw]
                    y[b, t, u, v] = -((patch - w[t]) ** 2).sum()
    return y


geometry = st.tuples(
    st.integers(1, 3),            # N
    st.integers(1, 3),            # C_in
    st.integers(1, 4),            # C_out
    st.integers(3, 7),            # H = W
    st.integers(1, 3),            # kernel
    st.integers(1, 2),            # stride
    st.integers(0, 1),            # padding
)


@SETTINGS
@given(geometry, st.floats(0.1, 10.0), st.integers(0, 2**31 - 1))
def test_eq28_with_the_engine_conv2d(geom, scale, seed):
    n, c_in, c_out, hw, k, stride, padding = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, hw, hw)) * scale
    w = rng.standard_normal((c_out, c_in, k, k))
    direct = l2.l2_adder2d(x, w, stride, padding)
    np.testing.assert_allclose(direct, l2_by_loops(x, w, stride, padding), rtol=1e-12, atol=1e-12)

    y_cnn = F.conv2d(ma.Tensor(x), ma.Tensor(w), stride=stride, padding=padding).data
    via_conv = l2.l2_adder_from_conv(y_cnn, x, w, stride, padding)
    np.testing.assert_allclose(via_conv, direct, rtol=1e-10, atol=1e-9 * scale ** 2)


@SETTINGS
@given(geometry, st.integers(0, 2**31 - 1))
def test_the_two_norm_terms_depend_on_position_only_and_on_channel_only(geom, seed):
    """sum X^2 is the same for every output channel; sum F^2 the same at every position:
    so the l2 outputs of two filters differ by 2 (Y_CNN_t - Y_CNN_t') minus a constant."""
    n, c_in, c_out, hw, k, stride, padding = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, hw, hw))
    w = rng.standard_normal((c_out, c_in, k, k))
    y_l2 = l2.l2_adder2d(x, w, stride, padding)
    y_cnn = F.conv2d(ma.Tensor(x), ma.Tensor(w), stride=stride, padding=padding).data
    diff = (y_l2 - 2 * y_cnn)                       # = -|P|^2 - |W_t|^2
    across_channels = diff - diff[:, :1]            # removes |P|^2: leaves |W_0|^2 - |W_t|^2
    np.testing.assert_allclose(across_channels, np.broadcast_to(across_channels[:1, :, :1, :1], diff.shape),
                               rtol=1e-10, atol=1e-10)
