"""Synthetic digits: an MNIST-like data set that minadder makes itself, with no download.

Recipe (all NumPy; matplotlib only supplies fonts and the FreeType rasteriser):
1. Render each digit 0-9 once per font (DejaVu Sans/Serif/Mono, STIX, Computer Modern;
   regular, bold, italic/oblique; plus a round O and a plain l as 0 and 1 in a few sans
   fonts) at high resolution with matplotlib's ``FT2Font``.
2. Make stroke-width variants of every glyph: estimate its stroke width (2 area /
   perimeter), then grey-level dilate it (max over a growing octagon) until the strokes
   have each target width in output pixels (heavy fonts are eroded a little); blur
   slightly so that sampling at 28x28 does not alias.
3. Per sample draw a random affine map (rotation, aspect, shear = slant, translation),
   scale it so that the transformed digit's longer side spans 17.5-20.5 pixels (MNIST
   fitted every digit into a 20x20 box centred in a 28x28 field), add a smooth random
   displacement field (cheap "elastic" jitter), and sample the glyph through it with
   bilinear interpolation.
4. Random contrast, Gaussian noise, clip, round to uint8: white digits on black.

Everything random comes from one NumPy generator seeded by ``seed``, so a seed gives
the same images everywhere the fonts render the same (the cache key includes the
matplotlib and FreeType versions for that reason).
"""
import contextlib
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..bounded import load_npz
from .dataset import Dataset

__all__ = ["synthetic_digits", "render_templates", "SYNTHETIC_NAME", "SYNTHETIC_VERSION",
           "DEFAULT_SIZES"]

SYNTHETIC_NAME = "synthetic-digits"
SYNTHETIC_VERSION = 3
DEFAULT_SIZES = (20000, 4000)

# Fonts bundled with matplotlib (mpl-data/fonts/ttf); several styles and weights each.
FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)
# Glyph sets: (font, the characters drawn for the digits 0-9). Besides the digits
# themselves, a few sets borrow shapes that handwriting favours and fonts do not: a
# round letter O for 0 and a plain bar (sans-serif l) for 1.
GLYPH_SETS = tuple((font, "0123456789") for font in FONTS) + (
    ("DejaVuSans.ttf", "Ol23456789"), ("DejaVuSans-Oblique.ttf", "Ol23456789"),
    ("DejaVuSans-Bold.ttf", "Ol23456789"), ("cmss10.ttf", "Ol23456789"),
)
CANVAS = 96          # template side, in template pixels
GLYPH_PX = 64        # font size (em) at which glyphs are rendered, template pixels
BOX = 20.0           # the digit's longer side in output pixels (MNIST's 20x20 box)
BOX_RANGE = (17.5, 20.5)  # per-sample longer side, output pixels
DIRECTIONS = 64      # directions at which each template's ink extent is tabulated
SIZE = 28            # output side
STROKES = (1.2, 1.7, 2.2, 2.8)       # target stroke widths, output pixels (MNIST: 1.5-2.7)
STROKE_P = (0.2, 0.35, 0.3, 0.15)    # how often each stroke variant is drawn


# ============================================================================ templates
def _font_path(name):
    import matplotlib
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


def _render(font_file, char, px):
    """One character as a float32 coverage image (0..1), cropped to its ink."""
    from matplotlib.ft2font import FT2Font
    font = FT2Font(_font_path(font_file))
    font.set_size(px, 72)  # at 72 dpi one point is one pixel
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(image.max(1) > 0.05), np.flatnonzero(image.max(0) > 0.05)
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _place(glyph):
    """Put a glyph into a CANVAS x CANVAS array with its centre of mass at the centre."""
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    h, w = glyph.shape
    ys, xs = np.mgrid[0:h, 0:w]
    total = glyph.sum()
    cy, cx = (ys * glyph).sum() / total, (xs * glyph).sum() / total
    top, left = int(round(CANVAS / 2 - cy)), int(round(CANVAS / 2 - cx))
    top, left = min(max(top, 0), CANVAS - h), min(max(left, 0), CANVAS - w)
    canvas[top:top + h, left:left + w] = glyph
    return canvas


def _stroke_width(glyph):
    """Mean stroke width in pixels: a stroke of length L and width w has area L*w and
    perimeter about 2L, so w = 2 * area / perimeter (perimeter = total variation)."""
    perimeter = np.abs(np.diff(glyph, axis=0)).sum() + np.abs(np.diff(glyph, axis=1)).sum()
    return 2.0 * glyph.sum() / max(perimeter, 1e-6)


def _morph(glyph, radius):
    """Grey-level dilation (radius > 0) or erosion (radius < 0) by ``|radius|`` pixels:
    repeated 3x3 max/min filters, alternating a cross and a square (an octagon ~ a disk)."""
    reduce = np.maximum if radius > 0 else np.minimum
    out = glyph
    for step in range(abs(radius)):
        pad = np.pad(out, 1)
        n = glyph.shape[0]
        shifts = ((0, 1), (1, 0), (1, 2), (2, 1)) if step % 2 == 0 else \
            ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
        new = out.copy()
        for dy, dx in shifts:
            reduce(new, pad[dy:dy + n, dx:dx + n], out=new)
        out = new
    return out


def _blur(images, sigma):
    """Separable Gaussian blur of a stack of images (anti-aliasing before downsampling)."""
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    pad = np.pad(images, ((0, 0), (r, r), (r, r)))
    n = images.shape[-1]
    rows = sum(k[i] * pad[:, i:i + n, :] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, :, i:i + n] for i in range(2 * r + 1))


def _support(images, threshold=0.5):
    """Support function of each template's ink: h[k, j] = max over ink pixels p of
    d_j . p, for DIRECTIONS unit vectors d_j, with p relative to the canvas centre.
    The ink's extent along any direction a is then h(a) + h(-a), for any linear map."""
    angles = 2 * np.pi * np.arange(DIRECTIONS) / DIRECTIONS
    d = np.stack([np.cos(angles), np.sin(angles)])            # (2, DIRECTIONS): (x, y)
    centre = CANVAS / 2 - 0.5
    out = np.empty((len(images), DIRECTIONS), np.float32)
    for k, image in enumerate(images):
        ys, xs = np.nonzero(image > threshold)
        out[k] = (np.stack([xs - centre, ys - centre], 1) @ d).max(0)
    return out


@lru_cache(maxsize=1)
def render_templates():
    """All glyph templates: (images float32 (K, CANVAS, CANVAS), digit (K,), stroke (K,),
    support (K, DIRECTIONS)); ordered by stroke variant, then font, then digit.
    ``support`` (see ``_support``) lets each sample be scaled so that its transformed
    digit's longer side spans the wanted box, as MNIST normalised every digit to 20x20."""
    glyphs, digits, fits = [], [], []
    for font, chars in GLYPH_SETS:
        for d in range(10):
            g = _render(font, chars[d], GLYPH_PX)
            glyphs.append(_place(g))
            digits.append(d)
            fits.append(BOX / max(g.shape))  # template -> output pixels, before jitter
    glyphs = np.stack(glyphs)
    fits = np.asarray(fits)
    widths = np.array([_stroke_width(g) for g in glyphs])
    sigma = 0.45 / np.median(fits)  # about half an output pixel
    images, digit, stroke, support = [], [], [], []
    for i, target in enumerate(STROKES):
        radius = np.rint((target / fits - widths) / 2)  # template pixels per side
        # Erosion wipes out hairlines (serifs, thin crossbars): erode only heavy strokes, little.
        radius = np.maximum(radius, -np.floor(np.maximum(widths - 4, 0) / 2.5)).astype(int)
        varied = np.stack([_morph(g, r) for g, r in zip(glyphs, radius)])
        support.append(_support(varied))
        images.append(_blur(varied, sigma))
        digit.append(digits)
        stroke.append(np.full(len(glyphs), i))
    return (np.concatenate(images).astype(np.float32), np.concatenate(digit),
            np.concatenate(stroke), np.concatenate(support))


# ============================================================================ warping
def _extent(support, rows):
    """Extent of each sample's ink along the rows ``rows`` (n, 2) of its linear map:
    |a| (h(a/|a|) + h(-a/|a|)), reading h at the nearest tabulated direction."""
    k = np.rint(np.arctan2(rows[:, 1], rows[:, 0]) / (2 * np.pi / DIRECTIONS)).astype(int) % DIRECTIONS
    i = np.arange(len(rows))
    return np.hypot(rows[:, 0], rows[:, 1]) * (support[i, k] + support[i, (k + DIRECTIONS // 2) % DIRECTIONS])


def _affine_inverse(rng, support):
    """Per-sample inverse maps (n, 2, 2) from output to template pixels, and translations
    (n, 2) in output pixels. The forward map is box * rotation @ shear @ aspect / extent:
    after slanting and turning, the digit's longer side spans ``box`` output pixels."""
    n = len(support)
    angle = np.deg2rad(np.clip(rng.normal(0, 10, n), -25, 25))
    box = rng.uniform(*BOX_RANGE, n)
    aspect = np.exp(np.clip(rng.normal(0, 0.12, n), -0.3, 0.3))
    shear = np.clip(rng.normal(0.05, 0.18, n), -0.4, 0.45)  # slant, as in handwriting
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    shr = np.zeros((n, 2, 2))
    shr[:, 0, 0] = shr[:, 1, 1] = 1.0
    shr[:, 0, 1] = -shear  # x' = x - k*y: with y pointing down, tops lean right for k > 0
    scl = np.zeros((n, 2, 2))
    scl[:, 0, 0], scl[:, 1, 1] = aspect, 1 / aspect
    forward = rot @ shr @ scl
    longest = np.maximum(_extent(support, forward[:, 0]), _extent(support, forward[:, 1]))
    forward *= (box / longest)[:, None, None]
    shift = np.clip(rng.normal(0, 0.7, (n, 2)), -2.0, 2.0)
    return np.linalg.inv(forward), shift


def _smooth_field(rng, n, grid=4, amplitude=0.9):
    """A smooth random displacement field (n, 2, SIZE, SIZE): random vectors on a coarse
    grid, bilinearly upsampled (a cheap stand-in for elastic distortion)."""
    coarse = rng.normal(0, amplitude, (n, 2, grid, grid))
    pos = np.linspace(0, grid - 1, SIZE)
    i0 = np.minimum(pos.astype(int), grid - 2)
    w = pos - i0
    up = np.zeros((SIZE, grid))
    up[np.arange(SIZE), i0] = 1 - w
    up[np.arange(SIZE), i0 + 1] = w
    return np.einsum("yi,ncij,xj->ncyx", up, coarse, up)


def _bilinear(templates, index, ty, tx):
    """Sample templates[index] at float coordinates (ty, tx); zero outside the canvas."""
    n = templates.shape[-1]
    y0, x0 = np.floor(ty), np.floor(tx)
    wy, wx = (ty - y0).astype(np.float32), (tx - x0).astype(np.float32)
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    inside = (y0 >= 0) & (x0 >= 0) & (y0 < n - 1) & (x0 < n - 1)
    y0, x0 = np.clip(y0, 0, n - 2), np.clip(x0, 0, n - 2)
    flat = templates.reshape(-1)
    base = index.reshape(-1, 1, 1) * (n * n) + y0 * n + x0
    top = flat[base] * (1 - wx) + flat[base + 1] * wx
    bottom = flat[base + n] * (1 - wx) + flat[base + n + 1] * wx
    return np.where(inside, top * (1 - wy) + bottom * wy, 0.0)


def _generate(rng, n, chunk=4096):
    """n images (n, 1, 28, 28) uint8 and balanced labels (n,) int64."""
    templates, t_digit, t_stroke, t_support = render_templates()
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    n_fonts = len(GLYPH_SETS)
    font = rng.integers(0, n_fonts, n)
    stroke = rng.choice(len(STROKES), size=n, p=STROKE_P)
    index = (stroke * n_fonts + font) * 10 + labels  # templates are ordered stroke, font, digit
    inverse, shift = _affine_inverse(rng, t_support[index])
    field = _smooth_field(rng, n)
    gain = rng.uniform(1.0, 1.6, n).astype(np.float32)
    noise_sigma = (rng.uniform(0.0, 0.05, n) * (rng.random(n) < 0.3)).astype(np.float32)
    noise_seed = rng.integers(0, 2**63, dtype=np.int64)
    noise_rng = np.random.default_rng(noise_seed)

    grid = np.arange(SIZE) - (SIZE - 1) / 2.0
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((n, 1, SIZE, SIZE), np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        # output pixel (u, v) -> template pixel: p = A^{-1}(u - t - e(u)) + centre
        u = gx[None] - shift[sl, 0, None, None] - field[sl, 0]
        v = gy[None] - shift[sl, 1, None, None] - field[sl, 1]
        inv = inverse[sl]
        tx = inv[:, 0, 0, None, None] * u + inv[:, 0, 1, None, None] * v + CANVAS / 2 - 0.5
        ty = inv[:, 1, 0, None, None] * u + inv[:, 1, 1, None, None] * v + CANVAS / 2 - 0.5
        x = _bilinear(templates, index[sl], ty, tx).astype(np.float32)
        x *= gain[sl, None, None]
        x += noise_sigma[sl, None, None] * noise_rng.standard_normal(x.shape, dtype=np.float32)
        images[sl, 0] = np.rint(np.clip(x, 0.0, 1.0) * 255.0)
    assert np.array_equal(t_digit[index], labels)
    return images, labels


# ============================================================================ public API
def _cache_file(cache_dir, n_train, n_test, seed):
    import matplotlib
    from matplotlib import ft2font
    tag = f"{matplotlib.__version__}-ft{getattr(ft2font, '__freetype_version__', 'x')}"
    return Path(cache_dir) / f"v{SYNTHETIC_VERSION}-train{n_train}-test{n_test}-seed{seed}-mpl{tag}.npz"


def _datasets(x_train, y_train, x_test, y_test, source):
    scaled = x_train.astype(np.float32) / 255.0
    mean, std = (float(scaled.mean()),), (float(scaled.std()),)
    digits = tuple(str(d) for d in range(10))
    return (Dataset(x_train, y_train, 10, mean, std, SYNTHETIC_NAME, source, digits),
            Dataset(x_test, y_test, 10, mean, std, SYNTHETIC_NAME, source, digits))


def _read_cache(path, n_train, n_test):
    """The cached (train, test) datasets at ``path``, or None if there is none or it is
    damaged (a damaged file is then regenerated and replaced by the caller). Read with
    ``load_npz``: every size is checked before anything is allocated."""
    if not path.is_file():
        return None
    try:
        z = load_npz(path)
        arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        if len(arrays[0]) != n_train or len(arrays[2]) != n_test:
            return None
        return _datasets(*arrays, "generated")
    except (OSError, KeyError, ValueError):  # unreadable, an entry missing, damaged or mis-shaped
        return None


def _write_cache(path, arrays):
    """Store ``arrays`` at ``path`` atomically: into a temporary file beside it, renamed once
    complete. A write that fails (a full disk, a read-only folder) removes the temporary
    file and leaves the cache as it was; returns whether the cache was written."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{time.time_ns()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic: readers never see a half-written cache file
        return True
    except BaseException as exc:  # also Ctrl-C mid-write: no temporary file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(exc, OSError):
            raise
        return False


def synthetic_digits(n_train=None, n_test=None, seed=0, cache=True, cache_dir=None):
    """Generate (train, test) ``Dataset``s of 1x28x28 uint8 synthetic digits.

    ``n_train``/``n_test`` default to ``DEFAULT_SIZES`` (20,000 / 4,000: an AdderNet
    LeNet-5-BN reached 98.0 % test accuracy in two epochs with the default training
    settings). Deterministic for a given ``seed``; train and test come from independent
    random streams, so the test set does not change with ``n_train``. With ``cache=True`` the
    arrays are stored as an .npz in ``cache_dir`` (default ``$MINADDER_DATA`` or
    ``~/.cache/minadder``, subfolder ``synthetic-digits``) and reused; ``source`` is
    ``"generated"`` either way. Mean/std are the training set's.
    """
    n_train = DEFAULT_SIZES[0] if n_train is None else n_train
    n_test = DEFAULT_SIZES[1] if n_test is None else n_test
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if int(value) != value or value < 0:
            raise ValueError(f"{arg} must be a non-negative integer, got {value!r}")
    n_train, n_test, seed = int(n_train), int(n_test), int(seed)
    if cache:
        from .locate import default_root
        folder = Path(cache_dir) if cache_dir is not None else default_root() / SYNTHETIC_NAME
        path = _cache_file(folder, n_train, n_test, seed)
        cached = _read_cache(path, n_train, n_test)
        if cached is not None:
            return cached
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train = _generate(np.random.default_rng(train_seq), n_train)
    x_test, y_test = _generate(np.random.default_rng(test_seq), n_test)
    if cache:  # a cache that cannot be written (full disk, read-only home) costs regeneration next time
        _write_cache(path, dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))
    return _datasets(x_train, y_train, x_test, y_test, "generated")
