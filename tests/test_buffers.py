"""Buffers: register_buffer, named_buffers, state_dict and load_state_dict, .to(dtype), side by side
with torch.nn.Module doing the same things."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
from tinynn.testing import gradcheck


def _outcome(action):
    """("ok", value) or (exception class name, message) for one call."""
    try:
        return "ok", action()
    except Exception as error:  # the type and text are what the test compares
        return type(error).__name__, str(error)


def _stats_layer(lib, array):
    """A module with a parameter, a persistent, a non-persistent and a None buffer, and a child."""

    class Stats(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = lib.Parameter(array([1.0, 2.0]))
            self.register_buffer("mean", array([0.5, -0.5]))
            self.register_buffer("count", array(3))
            self.register_buffer("scratch", array([9.0]), persistent=False)
            self.register_buffer("missing", None)
            self.child = lib.Linear(2, 1)

    return Stats()


def _torch_array(values):
    return torch.tensor(values, dtype=torch.int64 if isinstance(values, int) else torch.float32)


def _numpy_array(values):
    return np.array(values, dtype=np.int64 if isinstance(values, int) else np.float32)


def test_state_dict_lists_parameters_then_persistent_buffers_then_children_as_torch():
    ours, theirs = _stats_layer(nn, _numpy_array), _stats_layer(torch.nn, _torch_array)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.state_dict()) == ["scale", "mean", "count", "child.weight", "child.bias"]
    assert [name for name, _ in ours.named_buffers()] == [name for name, _ in theirs.named_buffers()]
    assert [name for name, _ in ours.named_buffers()] == ["mean", "count", "scratch"]


def test_buffer_is_an_attribute_shared_by_state_dict_and_replaced_by_assignment():
    layer = _stats_layer(nn, _numpy_array)
    assert layer.state_dict()["mean"] is layer.mean
    fresh = np.array([7.0, 8.0], dtype=np.float32)
    layer.mean = fresh
    assert layer.get_buffer("mean") is fresh and layer._buffers["mean"] is fresh
    layer.missing = np.zeros(1)
    assert "missing" in layer.state_dict()
    del layer.scratch
    assert "scratch" not in dict(layer.named_buffers())
    with pytest.raises(AttributeError):
        layer.scratch  # noqa: B018 - the lookup is the test


def test_load_state_dict_fills_buffers_in_place_and_keeps_their_dtype():
    ours, theirs = _stats_layer(nn, _numpy_array), _stats_layer(torch.nn, _torch_array)
    with torch.no_grad():
        theirs.mean.copy_(torch.tensor([3.0, 4.0]))
        theirs.count.fill_(11)
    mean_before = ours.mean
    result = ours.load_state_dict(theirs.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert ours.mean is mean_before and ours.mean.tolist() == [3.0, 4.0]
    assert ours.count.dtype == np.int64 and int(ours.count) == 11
    assert ours.scratch.tolist() == [9.0]  # not persistent: not loaded


@pytest.mark.parametrize("edit", ["drop", "extra", "shape"])
def test_load_state_dict_errors_name_buffers_as_torch_and_write_nothing(edit):
    ours, theirs = _stats_layer(nn, _numpy_array), _stats_layer(torch.nn, _torch_array)
    source = {key: value.clone() for key, value in theirs.state_dict().items()}
    source["scale"].fill_(5.0)
    if edit == "drop":
        del source["count"]
    elif edit == "extra":
        source["scratch"] = torch.zeros(1)
    else:
        source["mean"] = torch.zeros(3)
    before = {key: value.copy() for key, value in ours.state_dict().items()}
    expected = _outcome(lambda: theirs.load_state_dict(source))
    actual = _outcome(lambda: ours.load_state_dict({key: value.numpy() for key, value in source.items()}))
    assert actual[0] == expected[0] == "RuntimeError"
    assert _same_error(actual[1], expected[1])
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def _same_error(ours: str, torchs: str) -> bool:
    """Same lines but for how the two libraries print a shape (``(3,)`` vs ``torch.Size([3])``)."""
    def normal(text: str) -> str:
        return text.replace("torch.Size([", "(").replace("])", ")").replace("(3)", "(3,)").replace("(2)", "(2,)")
    return normal(ours) == normal(torchs)


@pytest.mark.parametrize("case", [
    ("name with a dot", lambda lib, m, a: m.register_buffer("a.b", a)),
    ("empty name", lambda lib, m, a: m.register_buffer("", a)),
    ("not a string", lambda lib, m, a: m.register_buffer(3, a)),
    ("existing attribute", lambda lib, m, a: m.register_buffer("training", a)),
    ("existing parameter", lambda lib, m, a: m.register_buffer("scale", a)),
    ("not an array", lambda lib, m, a: m.register_buffer("x", [1.0])),
])
def test_register_buffer_refuses_what_torch_refuses(case):
    _, register = case
    ours, theirs = _stats_layer(nn, _numpy_array), _stats_layer(torch.nn, _torch_array)
    actual = _outcome(lambda: register(nn, ours, np.zeros(1)))
    expected = _outcome(lambda: register(torch.nn, theirs, torch.zeros(1)))
    assert actual[0] == expected[0] != "ok"
    assert actual[1].replace("np.ndarray", "torch Tensor") == expected[1]


def test_register_buffer_before_init_and_assigning_a_non_array_are_refused():
    class Early(nn.Module):
        def __init__(self) -> None:
            self.register_buffer("x", np.zeros(1))

    with pytest.raises(AttributeError, match=r"cannot assign buffer before Module\.__init__"):
        Early()
    layer = _stats_layer(nn, _numpy_array)
    with pytest.raises(TypeError, match="cannot assign 'list' as buffer 'mean'"):
        layer.mean = [1.0, 2.0]
    assert layer.mean.tolist() == [0.5, -0.5]


def test_assigning_a_parameter_or_module_over_a_buffer_replaces_it_as_torch():
    ours, theirs = _stats_layer(nn, _numpy_array), _stats_layer(torch.nn, _torch_array)
    ours.mean = nn.Parameter(np.zeros(2, dtype=np.float32))
    theirs.mean = torch.nn.Parameter(torch.zeros(2))
    ours.count = nn.ReLU()
    theirs.count = torch.nn.ReLU()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [name for name, _ in ours.named_buffers()] == [name for name, _ in theirs.named_buffers()]


@pytest.mark.parametrize("cast", ["double", "float", "to"])
def test_casting_converts_floating_buffers_only(cast):
    layer = _stats_layer(nn, _numpy_array)
    {"double": layer.double, "float": lambda: layer.double().float(),
     "to": lambda: layer.to(tinynn.float64)}[cast]()
    target = np.float32 if cast == "float" else np.float64
    assert layer.mean.dtype == target and layer.scratch.dtype == target
    assert layer.count.dtype == np.int64
    assert layer.missing is None


def test_named_buffers_lists_a_shared_buffer_once_unless_asked():
    shared = _stats_layer(nn, _numpy_array)
    outer = nn.Sequential(shared, shared)
    assert [name for name, _ in outer.named_buffers()] == ["0.mean", "0.count", "0.scratch"]
    assert len(list(outer.named_buffers(remove_duplicate=False))) == 6
    assert list(outer.buffers(recurse=False)) == []
    assert [name for name in outer.state_dict()].count("1.mean") == 1  # state_dict names every path, as torch


@pytest.mark.parametrize("loss", ["NLLLoss", "CrossEntropyLoss"])
def test_weighted_classification_losses_keep_weight_as_a_buffer_and_load_torchs(loss):
    weight = np.array([0.2, 1.0, 3.0])
    theirs = getattr(torch.nn, loss)(weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    ours = getattr(nn, loss)(weight=weight.copy())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    ours.load_state_dict(theirs.state_dict())
    assert ours.weight.tolist() == [1.0, 2.0, 0.5]
    x = np.random.default_rng(0).normal(size=(4, 3))
    target = np.array([0, 1, 2, 2])
    expected = getattr(torch.nn.functional, "nll_loss" if loss == "NLLLoss" else "cross_entropy")(
        torch.tensor(x), torch.tensor(target), weight=theirs.weight)
    np.testing.assert_allclose(ours(x, target), expected.item(), rtol=1e-14)
    assert list(getattr(nn, loss)().state_dict()) == list(getattr(torch.nn, loss)().state_dict()) == []


def test_gradcheck_leaves_buffers_as_they_were():
    class RunningMean(nn.Module):
        """y = x * scale; keeps a running mean of its inputs, as a BatchNorm does."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(np.array([2.0, -1.0]))
            self.register_buffer("seen", np.zeros(2, dtype=np.float32))

        def forward(self, x):
            self.seen += x.mean(axis=0)
            self.save_for_backward(x)
            return x * self.scale.data

        def backward(self, grad_output, needs_input_grad=True):
            (x,) = self.saved_tensors()
            grad = (grad_output * x).sum(axis=0)
            self.scale.grad = grad if self.scale.grad is None else self.scale.grad + grad
            return grad_output * self.scale.data

    layer = RunningMean()
    seen = layer.seen
    assert gradcheck(layer, np.array([[0.5, 1.5], [2.0, -3.0]]))
    assert layer.seen is seen and seen.dtype == np.float32 and seen.tolist() == [0.0, 0.0]
