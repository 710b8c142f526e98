"""A small AdderNet learns a synthetic image problem, with either gradient."""
import numpy as np
import pytest

import minadder as ma
from minadder import functional as F
from minadder import nn
from minadder.optim import SGD


def bars(n, rng):
    """8x8 images of a horizontal (class 0) or vertical (class 1) bar, at a random place, in noise."""
    labels = rng.integers(0, 2, n)
    images = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    pos = rng.integers(1, 7, n)
    for i in range(n):
        if labels[i] == 0:
            images[i, 0, pos[i], 1:7] += 1.0
        else:
            images[i, 0, 1:7, pos[i]] += 1.0
    return images, labels


@pytest.mark.parametrize("grad_mode", ["full", "sign"])
def test_small_addernet_learns_bars(grad_mode):
    ma.manual_seed(0)
    rng = np.random.default_rng(0)
    net = nn.Sequential(
        nn.Adder2d(1, 8, 3, padding=1, grad_mode=grad_mode), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Adder2d(8, 8, 3, padding=1, grad_mode=grad_mode), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d(4), nn.Flatten(),
        nn.AdderLinear(8, 2, grad_mode=grad_mode), nn.BatchNorm1d(2))
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, eta=0.1)
    steps = 100
    for step in range(steps):
        # decay to zero so the filters settle and BN's running statistics catch up with them
        opt.lr = 0.1 * (1 - step / steps)
        x, y = bars(32, rng)
        loss = F.cross_entropy(net(ma.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = bars(400, np.random.default_rng(123))
    with ma.no_grad():
        accuracy = (net(ma.Tensor(x)).data.argmax(1) == y).mean()
    assert accuracy > 0.95, accuracy
