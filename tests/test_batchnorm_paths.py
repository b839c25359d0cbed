"""BatchNorm's two paths, engine and textbook, against each other, torch and the staged chain rule,
on the benchmark's shape and on the memory layouts a layer may receive; and textbook mode's promise
that no engine module is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
from tinynn.nn import naive
from tinynn.testing import assert_close, assert_matches_torch
from tinynn.testing.strategies import relayout
from tinynn.testing.tolerances import TORCH_F64_RTOL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("layout", ["C", "F", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_and_textbook_match_torch_on_the_benchmark_shape(layout, dtype):
    rng = np.random.default_rng(0)
    x = relayout((rng.standard_normal((64, 16, 14, 14)) * 3 + 1).astype(dtype), layout)
    grad = rng.standard_normal(x.shape).astype(dtype)
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    for textbook in (False, True):
        module, reference = nn.BatchNorm2d(16, dtype=dtype), torch.nn.BatchNorm2d(16, dtype=torch_dtype)
        with tinynn.textbook(textbook):
            assert_matches_torch(module, reference, x, grad_output=grad)  # train
            module.eval(), reference.eval()
            assert_matches_torch(module, reference, x, grad_output=grad)  # eval, on the running stats


def test_both_paths_agree_with_the_staged_chain_rule():
    rng = np.random.default_rng(1)
    x, grad, weight = rng.standard_normal((8, 4, 3, 5)), rng.standard_normal((8, 4, 3, 5)), rng.standard_normal(4)
    staged = naive.batch_norm_backward(grad, x, weight)
    for textbook in (False, True):
        module = nn.BatchNorm2d(4, dtype=np.float64)
        module.weight.data[...] = weight
        with tinynn.textbook(textbook):
            module(x)
            grad_input = module.backward(grad)
        assert_close(grad_input, staged[0], rtol=TORCH_F64_RTOL)
        assert_close(module.weight.grad, staged[1], rtol=TORCH_F64_RTOL)
        assert_close(module.bias.grad, staged[2], rtol=TORCH_F64_RTOL)


@pytest.mark.parametrize("forward_textbook", [True, False], ids=["textbook forward", "engine forward"])
def test_a_backward_follows_its_forwards_path(forward_textbook, monkeypatch):
    rng = np.random.default_rng(2)
    x, grad = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    module = nn.BatchNorm2d(3, dtype=np.float64)
    with tinynn.textbook(forward_textbook):  # the reference: forward and backward in one mode
        module(x)
        expected = module.backward(grad)
        module(x)
    path_not_taken = ("tinynn._engine.normalization.batch_norm_backward" if forward_textbook
                      else "tinynn.nn.batchnorm.batch_norm_backward_from_xhat")

    def refused(*args, **kwargs):
        raise AssertionError(f"{path_not_taken} ran, but the forward took the other path")

    monkeypatch.setattr(path_not_taken, refused)  # imports the module named, the engine's too
    with tinynn.textbook(not forward_textbook):  # the mode flips between forward and backward
        np.testing.assert_array_equal(module.backward(grad), expected)


def test_textbook_mode_imports_no_engine_module():
    script = (
        "import json, sys, numpy as np, tinynn, tinynn.nn as nn\n"
        "m = nn.BatchNorm2d(3)\n"
        "x = np.ones((2, 3, 2, 2), np.float32); m(x); m.backward(x); m.eval(); m(x); m.backward(x)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('tinynn._engine'))))\n"
    )
    env = dict(os.environ, TINYNN_TEXTBOOK="1")
    output = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True).stdout
    assert "tinynn._engine.normalization" not in json.loads(output.strip().splitlines()[-1])
