"""TF 'same' padding, exact against tf.nn.conv2d for many sizes, kernels, strides, dilations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models_pt.padding import Conv2dSame, same_padding


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(256, 3, 2) == (0, 1)   # TF: 0 before, 1 after on even inputs
    assert same_padding(255, 3, 2) == (1, 1)
    assert same_padding(8, 1, 2) == (0, 0)
    assert same_padding(5, 4, 1) == (1, 2)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2)])
def test_conv2d_same_matches_tensorflow(stride, dilation):
    import tensorflow as tf

    rng = np.random.default_rng(stride * 10 + dilation)
    for size, k in itertools.product([1, 2, 5, 7, 8, 16, 17], [1, 2, 3, 4, 5]):
        if dilation > 1 and stride > 1:
            continue  # TF's conv2d refuses stride > 1 with dilation > 1
        x = rng.normal(size=(2, size, size + 1, 3))
        w = rng.normal(size=(k, k, 3, 4))
        ref = tf.nn.conv2d(x, w, strides=stride, padding="SAME", dilations=dilation).numpy()
        conv = Conv2dSame(3, 4, k, stride=stride, dilation=dilation, bias=False).double()
        conv.weight.data = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
        with torch.no_grad():
            got = conv(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        assert got.shape == ref.shape, (size, k, stride, dilation)
        assert np.abs(got - ref).max() < 1e-12, (size, k, stride, dilation)
