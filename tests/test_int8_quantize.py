"""Int8 AdderNets (minadder.int8): one adder layer against -s * SAD and its rounding bound,
batch norm folded, whole networks tracking their float model, and the int8.npz file."""
import json

import numpy as np
import pytest

import minadder as ma
from minadder import architectures, backend, int8, models, nn
from minadder import functional as F
from minadder.int8 import files, layers
from minadder.tensor import Tensor, no_grad


@pytest.fixture(autouse=True)
def numpy_backend():
    with backend.use_backend("numpy"):
        yield


def grid_values(quantizer, shape, rng, low=0, high=256):
    """Float values lying exactly on the quantizer's grid: s * (q - z) for codes q in [low, high)."""
    return quantizer.values(rng.integers(low, high, shape).astype(np.uint8))


def float_adder(layer, x):
    with no_grad():
        if isinstance(layer, nn.AdderLinear):
            return F.adder_linear(Tensor(x), layer.weight).data
        return F.adder2d(Tensor(x), layer.weight, layer.stride, layer.padding).data


# ============================================================================ one layer
def test_quantizer_holds_zero_and_spans_its_range():
    q = int8.quantizer_for(-0.5, 2.0)
    assert q.scale == pytest.approx(2.5 / 255) and q.offset == round(0.5 / q.scale)
    assert q.codes(np.zeros(3))[0] == q.offset and q.values(np.array([q.offset], np.uint8))[0] == 0
    low, high = q.limits()
    assert abs(low + 0.5) <= q.scale / 2 and abs(high - 2.0) <= q.scale / 2
    assert int8.quantizer_for(0.5, 3.0).offset == 0          # widened down to hold 0
    assert int8.quantizer_for(-4.0, -1.0).offset == 255      # and up


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1)])
def test_an_adder_layer_on_the_grid_is_exactly_minus_s_times_sad(stride, padding):
    """Inputs and filters on the grid of s: Y = -s * SAD exactly (to float32 rounding), also
    for filters beyond the range (the distance clipped off is folded into the bias)."""
    rng = np.random.default_rng(0)
    layer = nn.Adder2d(3, 4, 3, stride, padding)
    q = int8.quantizer_for(-1.0, 2.0)
    x = grid_values(q, (2, 3, 7, 7), rng)
    w = grid_values(q, (4, 3, 3, 3), rng)
    w[0, 0, 0, 0], w[1, 2, 1, 1] = 5 * q.limits()[1], 7 * q.limits()[0]    # far beyond the range
    layer.weight.data[...] = w
    y = layers.AdderLayer.from_float(layer, None, q)(x)
    np.testing.assert_allclose(y, float_adder(layer, x), rtol=1e-5, atol=1e-4)


def test_fewer_bits_give_fewer_codes_and_a_coarser_step():
    """bits=4: codes 0..15, s = range / 15; the same range in 8 bits has 17 times finer a step."""
    q4, q8 = int8.quantizer_for(-0.5, 2.0, bits=4), int8.quantizer_for(-0.5, 2.0)
    assert q4.bits == 4 and q4.top == 15 and q8.bits == 8 and q8.top == 255
    assert q4.scale == pytest.approx(2.5 / 15) and q4.scale == pytest.approx(17 * q8.scale)
    codes = q4.codes(np.linspace(-10, 10, 101))
    assert codes.dtype == np.uint8 and codes.min() == 0 and codes.max() == 15
    assert int8.quantizer_for(-4.0, -1.0, bits=2).offset == 3      # widened up to hold 0: the top code
    for bad in (1, 9, 8.0, True, "8"):
        with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
            int8.quantizer_for(-1.0, 1.0, bits=bad)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("make", [lambda: nn.Adder2d(5, 6, 3, 1, 1), lambda: nn.AdderLinear(40, 7)])
def test_rounding_moves_an_adder_output_by_at_most_k_times_s(make, bits):
    """Any input in the range and any filter: |Y - Y_int8| <= K * s, K the terms summed
    (each input and each clipped filter value moves by at most s/2), s the step of the
    quantizer's own width: 17 times larger in 4 bits than in 8."""
    ma.manual_seed(1)
    rng = np.random.default_rng(1)
    layer = make()
    layer.weight.data *= 2.0                                    # many filters beyond [-1, 1.5]
    shape = (8, 5, 6, 6) if isinstance(layer, nn.Adder2d) else (8, 40)
    x = rng.uniform(-1.0, 1.5, shape).astype(np.float32)
    q = int8.quantizer_for(-1.0, 1.5, bits)
    exact, quantized = float_adder(layer, x), layers.AdderLayer.from_float(layer, None, q)(x)
    k = layer.weight.data[0].size
    error = np.abs(quantized - exact)
    assert error.max() <= k * q.scale * (1 + 1e-4)
    assert error.mean() < 0.25 * k * q.scale                    # rounding errors mostly cancel


def test_batch_norm_folded_into_the_rescale_and_bias():
    """rescale * SAD + bias equals the float batch norm (eval mode) of -s * SAD - c."""
    rng = np.random.default_rng(2)
    layer, bn = nn.Adder2d(3, 5, 3, 1, 1), nn.BatchNorm2d(5)
    bn.weight.data[...] = rng.uniform(-2, 2, 5)
    bn.bias.data[...] = rng.normal(size=5)
    bn.running_mean[...], bn.running_var[...] = rng.normal(-30, 5, 5), rng.uniform(5, 50, 5)
    bn.eval()
    q = int8.quantizer_for(-1.0, 1.0)
    x = rng.uniform(-1, 1, (2, 3, 6, 6)).astype(np.float32)
    plain = layers.AdderLayer.from_float(layer, None, q)                 # -s * SAD - c
    folded = layers.AdderLayer.from_float(layer, bn, q)
    with no_grad():
        expected = bn(Tensor(plain(x))).data
    np.testing.assert_allclose(folded(x), expected, rtol=1e-5, atol=1e-4)
    assert np.array_equal(folded.sad(x), plain.sad(x)) and folded.sad(x).dtype == np.int32


@pytest.mark.parametrize("name", [b for b in ("numpy", "cpu") if b in backend.available_backends()])
def test_the_integer_kernel_of_each_backend_matches_the_reference_bit_for_bit(name):
    """``int8.kernel`` runs the NumPy reference under the numpy backend and the compiled
    kernel (where it imports) under the others: the same int32 sums either way."""
    from minadder.int8 import kernel
    from minadder.kernels import int8_reference
    rng = np.random.default_rng(6)
    x, w = rng.integers(0, 256, (2, 5, 9, 9), dtype=np.uint8), rng.integers(0, 256, (7, 5, 3, 3), dtype=np.uint8)
    xl, wl = rng.integers(0, 256, (3, 40), dtype=np.uint8), rng.integers(0, 256, (6, 40), dtype=np.uint8)
    with backend.use_backend(name):
        compiled = name != "numpy" and kernel._compiled("sad") is not None
        assert kernel.name() == ("cpu" if compiled else "numpy")
        for stride, padding in ((1, 1), (2, 0)):
            assert np.array_equal(kernel.sad2d(x, w, stride, padding, 9),
                                  int8_reference.sad2d(x, w, stride, padding, 9))
        assert np.array_equal(kernel.sad_linear(xl, wl), int8_reference.sad_linear(xl, wl))


# ============================================================================ networks
def fitted(model, x):
    """``model`` with batch-norm statistics of the batch ``x`` (so that a random network's
    activations are normalised as a trained one's are), in eval mode."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.momentum = 1.0
    with no_grad():
        model(Tensor(x))
    return model.eval()


@pytest.mark.parametrize("build, float_layers", [
    (lambda: models.lenet5_bn(), []),                                          # every layer an adder layer
    (lambda: models.Network(architectures.resnet(8, input_size=16)), ["conv1", "fc"]),
])
def test_an_int8_network_tracks_its_float_model(build, float_layers):
    """Calibrated on 64 images, tested on 64 others: logits correlated above 0.99, off by
    under 10 % of their spread on average, the same class for at least 75 % of the images
    (a random network's logits are close together, so a few near ties flip)."""
    ma.manual_seed(3)
    model = build()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((128,) + model.input_shape()).astype(np.float32)
    fitted(model, x[:64])
    network = int8.quantize(model, [x[:32], (x[32:64], None)])
    assert network.float_names == float_layers
    assert len(network.adder_names) == {"lenet5_bn": 5, "resnet8": 8}[model.name]
    assert network.calibration["images"] == 64 and network.calibration["method"] == int8.DEFAULT_METHOD
    with no_grad():
        expected = model(Tensor(x[64:])).data
    got = network(x[64:])
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99
    assert np.abs(got - expected).mean() < 0.1 * expected.std()
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.75


def test_a_4_bit_network_keeps_its_codes_below_16():
    """quantize(bits=4): every adder layer's filters and inputs in codes 0..15, the step
    about 17 times the 8-bit one, and the logits further from the float model's."""
    ma.manual_seed(3)
    model = models.lenet5_bn()
    x = np.random.default_rng(3).standard_normal((64, 1, 32, 32)).astype(np.float32)
    fitted(model, x[:32])
    net4, net8 = int8.quantize(model, [x[:32]], bits=4), int8.quantize(model, [x[:32]])
    assert net4.bits == 4 and net4.calibration["bits"] == 4 and "in 4 bits" in repr(net4) and net8.bits == 8
    for name in net4.adder_names:
        layer = net4.layers[name]
        assert layer.quantizer.bits == 4 and layer.codes.max() <= 15
        assert layer.quantizer.codes(x * 100).max() == 15        # inputs far out clip to the top code
        assert layer.quantizer.scale == pytest.approx(17 * net8.layers[name].quantizer.scale, rel=1e-5)
    with no_grad():
        expected = model(Tensor(x[32:])).data
    error4, error8 = (np.abs(net(x[32:]) - expected).mean() for net in (net4, net8))
    assert error4 > 5 * error8
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8; got 9"):
        int8.quantize(model, [x[:32]], bits=9)


def test_max_and_percentile_calibration_both_work_and_differ():
    ma.manual_seed(4)
    model = models.lenet5_bn()
    x = np.random.default_rng(4).standard_normal((32, 1, 32, 32)).astype(np.float32)
    fitted(model, x)
    by_max, by_percentile = (int8.quantize(model, [x], method) for method in ("max", "percentile"))
    scales = [(by_max.layers[n].quantizer.scale, by_percentile.layers[n].quantizer.scale) for n in by_max.adder_names]
    assert all(pct < top for top, pct in scales)                # the percentile clips the extremes
    with pytest.raises(ValueError, match="--method must be one of max, percentile"):
        int8.quantize(model, [x], "mean")


def test_what_cannot_be_quantized_is_refused():
    model = models.lenet5_bn(kind="cnn")
    with pytest.raises(ValueError, match="for l1 AdderNets"):
        int8.quantize(model, [np.zeros((2, 1, 32, 32), np.float32)])
    with pytest.raises(ValueError, match="at least one batch"):
        int8.quantize(models.lenet5_bn(), [])
    with pytest.raises(ValueError, match="the inputs of conv1 are not finite"):
        int8.quantize(models.lenet5_bn(), [np.full((2, 1, 32, 32), np.nan, np.float32)])
    with pytest.raises(ValueError, match="distance 'l2'"):          # only |x - f| is a SAD of bytes
        int8.quantize(models.lenet5_bn(distance="l2"), [np.zeros((2, 1, 32, 32), np.float32)])


# ============================================================================ the file
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(an int8 ResNet-8 with float layers, its file, a batch of inputs)."""
    with backend.use_backend("numpy"):
        ma.manual_seed(5)
        model = models.Network(architectures.resnet(8, input_size=8, num_classes=3))
        x = np.random.default_rng(5).standard_normal((16, 3, 8, 8)).astype(np.float32)
        network = int8.quantize(fitted(model, x), [x])
    return network, files.save(network, tmp_path_factory.mktemp("int8") / "int8.npz"), x


def test_the_file_round_trip_gives_the_same_network(saved):
    network, path, x = saved
    again = int8.load(path)
    assert again.architecture == network.architecture and again.calibration == network.calibration
    assert list(again.layers) == list(network.layers)
    np.testing.assert_array_equal(again(x), network(x))
    with np.load(path, allow_pickle=False) as arrays:
        assert arrays["layer1.0.conv1.codes"].dtype == np.uint8 and arrays["conv1.weight"].dtype == np.float32


def test_the_file_keeps_the_bits_and_an_8_bit_file_has_no_bits_entry(saved, tmp_path):
    """A 4-bit network comes back 4-bit with the same outputs; an 8-bit file has no ``bits``
    entry (the file as before bits existed), and a file without one reads as 8-bit."""
    network, path, x = saved
    with np.load(path, allow_pickle=False) as arrays:
        assert "bits" not in arrays
    assert int8.load(path).bits == 8
    with backend.use_backend("numpy"):
        ma.manual_seed(5)
        model = models.Network(architectures.resnet(8, input_size=8, num_classes=3))
        narrow = int8.quantize(fitted(model, x), [x], bits=4)
    path4 = files.save(narrow, tmp_path / "int4.npz")
    again = int8.load(path4)
    assert again.bits == 4 and all(again.layers[n].quantizer.bits == 4 for n in again.adder_names)
    assert again.calibration == narrow.calibration
    np.testing.assert_array_equal(again(x), narrow(x))
    with np.load(path4, allow_pickle=False) as arrays:
        assert arrays["bits"] == 4 and arrays["layer1.0.conv1.codes"].max() <= 15


def rewrite(path, target, change):
    """A copy of the int8 file ``path`` at ``target`` with its arrays passed through ``change``."""
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    change(arrays)
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize("change, words", [
    (lambda a: a.update({"layer1.0.conv1.codes": a["layer1.0.conv1.codes"].astype(np.int16)}),
     ["layer1.0.conv1.codes", "must be uint8", "int16"]),
    (lambda a: a.pop("layer2.0.downsample.0.offset"), ["missing entries", "layer2.0.downsample.0.offset"]),
    (lambda a: a.update({"extra": np.zeros(2)}), ["unexpected entries: extra"]),
    (lambda a: a.update({"fc.bias": np.full(3, np.nan, np.float32)}), ["fc.bias", "not finite"]),
    (lambda a: a.update({"layer1.0.conv2.scale": np.float32(-1)}), ["layer1.0.conv2.scale", "positive"]),
    (lambda a: a.update({"format_version": np.int64(99)}), ["not a minadder int8 model file of format 1"]),
    (lambda a: a.update({"bits": np.uint8(9)}), ["entry bits", "from 2 to 8", "9"]),
    (lambda a: a.update({"bits": np.uint8(2)}), ["above 3, the largest of 2 bits"]),
    (lambda a: a.update({"meta.architecture": np.frombuffer(b"{not json", np.uint8)}),
     ["meta.architecture", "not UTF-8 JSON"]),
    (lambda a: a.update({"meta.architecture": np.frombuffer(json.dumps(
        {"name": "resnet8", "kind": "cnn"}).encode(), np.uint8)}), ["must name an AdderNet", "'cnn'"]),
    (lambda a: a.update({"meta.architecture": np.frombuffer(json.dumps(
        {"name": "resnet8", "kind": "adder", "num_classes": 1}).encode(), np.uint8)}),
     ["does not describe a network", "num_classes"]),
])
def test_a_wrong_or_damaged_file_is_refused_in_one_line(saved, tmp_path, change, words):
    path = rewrite(saved[1], tmp_path / "bad.npz", change)
    with pytest.raises(int8.Int8FileError) as caught:
        int8.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    for word in words:
        assert word in message


def test_an_object_array_or_a_non_zip_file_is_refused(saved, tmp_path):
    hostile = rewrite(saved[1], tmp_path / "objects.npz",
                      lambda a: a.update({"fc.bias": np.array([object()] * 3, dtype=object)}))
    with pytest.raises(int8.Int8FileError, match="Python objects"):
        int8.load(hostile)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(int8.Int8FileError, match="not an int8 model file"):
        int8.load(junk)
