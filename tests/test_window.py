"""``add_windows`` (col2im) against a loop that adds every tap, on its two ways of adding blocks."""

from __future__ import annotations

import numpy as np
import pytest

from tinynn._engine.window import Workspace, add_windows


def _add_windows_loop(grad_offsets: np.ndarray, in_size: tuple[int, int], stride: tuple[int, int],
                      dilation: tuple[int, int], pads: tuple[int, int, int, int]) -> np.ndarray:
    """One tap at a time: the definition, with taps on the padding dropped."""
    kernel_h, kernel_w, batch, out_h, out_w = grad_offsets.shape[:5]
    grad_input = np.zeros((batch, *in_size, *grad_offsets.shape[5:]), dtype=grad_offsets.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            for oh in range(out_h):
                for ow in range(out_w):
                    h = oh * stride[0] + i * dilation[0] - pads[0]
                    w = ow * stride[1] + j * dilation[1] - pads[2]
                    if 0 <= h < in_size[0] and 0 <= w < in_size[1]:
                        grad_input[:, h, w] += grad_offsets[i, j, :, oh, ow]
    return grad_input


# (kernel, dilation, pads): stride 1 and an output as large as the input ("same" padding).
SAME_SIZE = [((3, 3), (1, 1), (1, 1, 1, 1)), ((2, 4), (2, 1), (0, 1, 1, 2)), ((5, 1), (1, 1), (2, 2, 0, 0)),
             ((3, 3), (2, 3), (2, 2, 3, 3))]


@pytest.mark.parametrize("kernel, dilation, pads", SAME_SIZE)
def test_add_windows_adding_whole_shifted_blocks_matches_the_tap_by_tap_sum(kernel, dilation, pads):
    rng = np.random.default_rng(3)
    in_size = (5, 6)
    grad_offsets = rng.standard_normal((*kernel, 3, *in_size, 2, 4))
    # Taps that fall on the padding must be dropped, whatever they hold: make them all non-finite.
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = np.arange(in_size[0]) + i * dilation[0] - pads[0]
            cols = np.arange(in_size[1]) + j * dilation[1] - pads[2]
            outside = ~((rows >= 0) & (rows < in_size[0]))[:, None] | ~((cols >= 0) & (cols < in_size[1]))[None, :]
            grad_offsets[i, j][:, outside] = np.inf
    expected = _add_windows_loop(grad_offsets, in_size, (1, 1), dilation, pads)
    kept = add_windows(grad_offsets.copy(), in_size, (1, 1), dilation, pads)
    shifted = add_windows(grad_offsets.copy(), in_size, (1, 1), dilation, pads, overwrite=True)
    np.testing.assert_allclose(kept, expected, rtol=1e-12)
    np.testing.assert_array_equal(shifted, kept)  # the same adds in the same order: bit for bit


@pytest.mark.parametrize("in_size", [(14, 14), (7, 8)])
def test_add_windows_of_a_stride_2_layer_adds_blocks_as_large_as_their_phase_whole(in_size):
    # The tutorial's stride-2 layers: on a 14x14 input every phase is 7x7, as large as the blocks;
    # on 7x8 only some are, and the others take the sub-rectangle adds.
    rng = np.random.default_rng(5)
    out_size = ((in_size[0] + 1) // 2, (in_size[1] + 1) // 2)
    grad_offsets = rng.standard_normal((3, 3, 2, *out_size, 1, 3))
    kept = add_windows(grad_offsets.copy(), in_size, (2, 2), (1, 1), (1, 1, 1, 1))
    shifted = add_windows(grad_offsets.copy(), in_size, (2, 2), (1, 1), (1, 1, 1, 1), overwrite=True)
    np.testing.assert_array_equal(shifted, kept)
    expected = _add_windows_loop(grad_offsets, in_size, (2, 2), (1, 1), (1, 1, 1, 1))
    np.testing.assert_allclose(kept, expected, rtol=1e-12)


def test_add_windows_leaves_its_blocks_alone_unless_told_it_may_overwrite_them():
    grad_offsets = np.random.default_rng(4).standard_normal((3, 3, 2, 4, 4, 1, 3))
    before = grad_offsets.copy()
    add_windows(grad_offsets, (4, 4), (1, 1), (1, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(grad_offsets, before)


def test_workspace_reports_a_padded_border_ready_only_for_the_same_memory_shape_and_pads():
    workspace = Workspace()
    pads = (1, 1, 1, 1)
    assert workspace.get_padded((2, 5, 5, 3), np.float32, pads)[1] is False  # first call: nothing written yet
    assert workspace.get_padded((2, 5, 5, 3), np.float32, pads)[1] is True
    assert workspace.get_padded((2, 5, 5, 3), np.float32, (1, 1, 0, 2))[1] is False  # other pads
    assert workspace.get_padded((1, 5, 5, 3), np.float32, (1, 1, 0, 2))[1] is False  # other shape, same memory
    assert workspace.get_padded((1, 5, 5, 3), np.float64, (1, 1, 0, 2))[1] is False  # new memory (dtype)
    assert workspace.get_padded((1, 5, 5, 3), np.float64, (1, 1, 0, 2))[1] is True
