"""tinynn.optim: Optimizer bookkeeping and SGD's update rule, checked against torch.optim.SGD."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.helpers import assert_close, random_array, random_grad
from tinynn.nn.parameter import Parameter
from tinynn.optim import SGD, Optimizer
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_ATOL, TORCH_F64_RTOL

SHAPES = [(4, 3), (3,), (2, 1, 3, 3)]


def make_pair(rng: np.random.Generator, dtype: type = np.float64) -> tuple[list[Parameter], list[torch.nn.Parameter]]:
    """The same starting values as tinynn Parameters and as torch Parameters (separate memory)."""
    arrays = [random_array(rng, shape, dtype=dtype) for shape in SHAPES]
    ours = [Parameter(array.copy()) for array in arrays]
    theirs = [torch.nn.Parameter(torch.tensor(array)) for array in arrays]
    return ours, theirs


def set_grads(rng: np.random.Generator, ours: list[Parameter], theirs: list[torch.nn.Parameter],
              skip: tuple[int, ...] = ()) -> None:
    """Give both sides identical fresh gradients (``None`` for the positions in ``skip``)."""
    for position, (param, torch_param) in enumerate(zip(ours, theirs)):
        if position in skip:
            param.grad, torch_param.grad = None, None
            continue
        grad = random_grad(rng, param.shape, dtype=param.dtype)
        param.grad = grad.copy()
        torch_param.grad = torch.tensor(grad)


def assert_params_match(ours: list[Parameter], theirs: list[torch.nn.Parameter], rtol: float = TORCH_F64_RTOL,
                        atol: float = TORCH_F64_ATOL) -> None:
    for position, (param, torch_param) in enumerate(zip(ours, theirs)):
        assert_close(param.data, torch_param, rtol=rtol, atol=atol, name=f"param {position}")


def assert_buffers_match(optimizer: SGD, torch_optimizer: torch.optim.SGD, ours: list[Parameter],
                         theirs: list[torch.nn.Parameter]) -> None:
    for position, (param, torch_param) in enumerate(zip(ours, theirs)):
        assert_close(optimizer.state[param]["momentum_buffer"], torch_optimizer.state[torch_param]["momentum_buffer"],
                     rtol=TORCH_F64_RTOL, name=f"momentum_buffer {position}")


SGD_VARIANTS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.01},
    {"lr": 0.1, "maximize": True},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.05, "momentum": 0.7, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    {"lr": 0.02, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.2},
]


@pytest.mark.parametrize("hyper", SGD_VARIANTS, ids=lambda hyper: ",".join(f"{k}={v}" for k, v in hyper.items()))
def test_sgd_matches_torch_over_several_steps_float64(hyper: dict) -> None:
    rng = np.random.default_rng(0)
    ours, theirs = make_pair(rng)
    optimizer, torch_optimizer = SGD(ours, **hyper), torch.optim.SGD(theirs, **hyper)
    for _ in range(5):
        set_grads(rng, ours, theirs)
        optimizer.step()
        torch_optimizer.step()
        assert_params_match(ours, theirs)
    if hyper.get("momentum", 0):
        assert_buffers_match(optimizer, torch_optimizer, ours, theirs)
    else:
        assert len(optimizer.state) == 0 and len(torch_optimizer.state) == 0


def test_sgd_skips_params_whose_grad_is_none_like_torch() -> None:
    rng = np.random.default_rng(1)
    ours, theirs = make_pair(rng)
    before = ours[1].data.copy()
    optimizer = SGD(ours, lr=0.1, momentum=0.9, weight_decay=0.1)
    torch_optimizer = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.1)
    for skip in [(1,), (1,), (0, 1), ()]:
        set_grads(rng, ours, theirs, skip=skip)
        optimizer.step()
        torch_optimizer.step()
        assert_params_match(ours, theirs)
        if skip == (1,):
            np.testing.assert_array_equal(ours[1].data, before)  # not even weight decay touches it
            assert ours[1] not in optimizer.state
    assert_buffers_match(optimizer, torch_optimizer, ours, theirs)


def test_sgd_with_several_param_groups_matches_torch() -> None:
    rng = np.random.default_rng(2)
    ours, theirs = make_pair(rng)

    def groups(params: list) -> list[dict]:
        return [{"params": params[:1]},
                {"params": params[1:2], "lr": 0.3, "momentum": 0.5, "nesterov": True},
                {"params": params[2:], "weight_decay": 0.1, "maximize": True}]

    optimizer = SGD(groups(ours), lr=0.05, momentum=0.9)
    torch_optimizer = torch.optim.SGD(groups(theirs), lr=0.05, momentum=0.9)
    assert [group["lr"] for group in optimizer.param_groups] == [0.05, 0.3, 0.05]
    for _ in range(4):
        set_grads(rng, ours, theirs)
        optimizer.step()
        torch_optimizer.step()
        assert_params_match(ours, theirs)


def test_sgd_keeps_float32_in_place_and_matches_torch_float32() -> None:
    rng = np.random.default_rng(3)
    ours, theirs = make_pair(rng, dtype=np.float32)
    arrays = [param.data for param in ours]
    # np.float64 hyper-parameters would upcast float32 arrays under NumPy 2 if used as they are.
    optimizer = SGD(ours, lr=np.float64(0.1), momentum=np.float64(0.9), weight_decay=np.float64(0.01), nesterov=True)
    torch_optimizer = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    for _ in range(3):
        set_grads(rng, ours, theirs)
        optimizer.step()
        torch_optimizer.step()
        assert_params_match(ours, theirs, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    for param, array in zip(ours, arrays):
        assert param.data is array  # updated in place: a model holding the array sees the step
        assert param.data.dtype == np.float32
        assert optimizer.state[param]["momentum_buffer"].dtype == np.float32


def test_sgd_does_not_write_into_grad() -> None:
    rng = np.random.default_rng(4)
    ours, _ = make_pair(rng)
    grads = [random_grad(rng, param.shape) for param in ours]
    for param, grad in zip(ours, grads):
        param.grad = grad.copy()
    optimizer = SGD(ours, lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True)
    optimizer.step()
    optimizer.step()
    for param, grad in zip(ours, grads):
        np.testing.assert_array_equal(param.grad, grad)
        assert optimizer.state[param]["momentum_buffer"] is not param.grad


def test_step_evaluates_closure_once_and_returns_its_loss() -> None:
    param = Parameter(np.ones(3))
    calls = []

    def closure() -> float:
        calls.append(1)
        param.grad = np.full(3, 2.0)
        return 1.5

    assert SGD([param], lr=0.5).step(closure) == 1.5
    assert len(calls) == 1
    np.testing.assert_array_equal(param.data, np.zeros(3))  # 1 - 0.5 * 2


def test_zero_grad_sets_none_by_default_and_zeros_in_place_otherwise() -> None:
    params = [Parameter(np.ones(2)), Parameter(np.ones(3))]
    optimizer = SGD(params, lr=0.1)
    params[0].grad = np.array([1.0, -2.0])
    grad = params[0].grad
    optimizer.zero_grad(set_to_none=False)
    assert params[0].grad is grad
    np.testing.assert_array_equal(grad, [0.0, 0.0])
    assert params[1].grad is None
    optimizer.zero_grad()
    assert params[0].grad is None


def test_state_dict_has_torchs_layout() -> None:
    rng = np.random.default_rng(5)
    ours, theirs = make_pair(rng)
    optimizer = SGD([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.2}], lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.2}], lr=0.1, momentum=0.9)
    set_grads(rng, ours, theirs, skip=(1,))
    optimizer.step()
    torch_optimizer.step()
    state, torch_state = optimizer.state_dict(), torch_optimizer.state_dict()
    assert sorted(state) == ["param_groups", "state"]
    assert sorted(state["state"]) == sorted(torch_state["state"]) == [0, 2]
    for index in (0, 2):
        buffer = state["state"][index]["momentum_buffer"]
        assert isinstance(buffer, np.ndarray)
        assert_close(buffer, torch_state["state"][index]["momentum_buffer"], rtol=TORCH_F64_RTOL)
    for group, torch_group in zip(state["param_groups"], torch_state["param_groups"]):
        assert group["params"] == torch_group["params"]
        assert {key: torch_group[key] for key in group} == group


def test_state_dict_round_trip_continues_identically_and_copies_buffers() -> None:
    rng = np.random.default_rng(6)
    ours, _ = make_pair(rng)
    twins = [Parameter(param.data.copy()) for param in ours]
    optimizer, twin_optimizer = SGD(ours, lr=0.1, momentum=0.9), SGD(twins, lr=0.5, momentum=0.1)
    for param in ours:
        param.grad = random_grad(rng, param.shape)
    optimizer.step()
    for param, twin in zip(ours, twins):
        twin.data[...] = param.data
    twin_optimizer.load_state_dict(optimizer.state_dict())
    assert twin_optimizer.param_groups[0]["lr"] == 0.1 and twin_optimizer.param_groups[0]["momentum"] == 0.9
    assert twin_optimizer.param_groups[0]["params"] == twins
    for param, twin in zip(ours, twins):
        assert twin_optimizer.state[twin]["momentum_buffer"] is not optimizer.state[param]["momentum_buffer"]
    for _ in range(3):
        for param, twin in zip(ours, twins):
            param.grad = random_grad(rng, param.shape)
            twin.grad = param.grad.copy()
        optimizer.step()
        twin_optimizer.step()
    for param, twin in zip(ours, twins):
        np.testing.assert_array_equal(twin.data, param.data)


def test_load_torch_sgd_state_dict_casts_to_param_dtype_and_continues_like_torch() -> None:
    rng = np.random.default_rng(7)
    ours, theirs = make_pair(rng, dtype=np.float32)
    torch_optimizer = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(2):
        set_grads(rng, ours, theirs)
        torch_optimizer.step()
    torch_state = copy.deepcopy(torch_optimizer.state_dict())
    torch_state["state"][0]["momentum_buffer"] = torch_state["state"][0]["momentum_buffer"].double()
    torch_state["param_groups"][0]["lr"] = torch.tensor(0.05)
    for param, torch_param in zip(ours, theirs):
        param.data[...] = torch_param.detach().numpy()
    optimizer = SGD(ours, lr=1.0)
    optimizer.load_state_dict(torch_state)
    assert isinstance(optimizer.param_groups[0]["lr"], float)
    for index, param in enumerate(ours):
        buffer = optimizer.state[param]["momentum_buffer"]
        assert isinstance(buffer, np.ndarray) and buffer.dtype == np.float32
        assert_close(buffer, torch_optimizer.state[theirs[index]]["momentum_buffer"], rtol=TORCH_F32_RTOL,
                     atol=TORCH_F32_ATOL)
    for _ in range(2):
        set_grads(rng, ours, theirs)
        optimizer.step()
        torch_optimizer.step()
        assert_params_match(ours, theirs, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    assert all(param.data.dtype == np.float32 for param in ours)


def test_named_params_are_recorded_like_torch() -> None:
    weight, bias = Parameter(np.ones(2)), Parameter(np.ones(1))
    optimizer = SGD([("weight", weight), ("bias", bias)], lr=0.1)
    assert optimizer.param_groups[0]["params"] == [weight, bias]
    assert optimizer.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    with pytest.raises(ValueError, match="with/without names"):
        SGD([("weight", weight), bias])
    with pytest.raises(ValueError, match="cannot add param group without names"):
        optimizer.add_param_group({"params": [Parameter(np.ones(1))]})


def test_add_param_group_fills_defaults_and_keeps_overrides() -> None:
    first, second = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = SGD([first], lr=0.1, momentum=0.9)
    optimizer.add_param_group({"params": second, "lr": 0.01})
    group = optimizer.param_groups[1]
    assert group["params"] == [second]
    assert (group["lr"], group["momentum"], group["dampening"], group["nesterov"]) == (0.01, 0.9, 0, False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": -0.1}, "Invalid learning rate: -0.1"),
    ({"momentum": -0.5}, "Invalid momentum value: -0.5"),
    ({"weight_decay": -1e-4}, "Invalid weight_decay value: -0.0001"),
    ({"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov momentum requires a momentum and zero dampening"),
])
def test_sgd_rejects_bad_hyper_parameters_like_torch(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], **kwargs)
    with pytest.raises(ValueError, match=message):
        SGD([Parameter(np.ones(1))], **kwargs)


def test_optimizer_rejects_bad_params() -> None:
    param = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([])
    with pytest.raises(TypeError, match="iterable of Parameters or dicts, but got Parameter"):
        SGD(param)
    with pytest.raises(TypeError, match="iterable of Parameters or dicts, but got ndarray"):
        SGD(np.ones(2))
    with pytest.raises(TypeError, match="can only optimize Parameters, but one of the params is ndarray"):
        SGD([param, np.ones(2)])
    with pytest.raises(TypeError, match="ordered collections"):
        torch.optim.SGD([{"params": {torch.nn.Parameter(torch.ones(1))}}])
    with pytest.raises(TypeError, match="ordered collections"):
        SGD([{"params": {param}}])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        SGD([{"params": [param]}, {"params": [param]}])
    with pytest.warns(UserWarning, match="duplicate parameters"):
        SGD([param, param])
    optimizer = SGD([param])
    with pytest.raises(TypeError, match="param_group must be a dict, but got list"):
        optimizer.add_param_group([Parameter(np.ones(1))])
    with pytest.raises(NotImplementedError):
        Optimizer([param], {}).step()


def test_step_rejects_a_gradient_of_the_wrong_shape_before_updating_anything() -> None:
    first, second = Parameter(np.ones(2)), Parameter(np.ones(3))
    first.grad, second.grad = np.ones(2), np.ones(1)  # (1,) would silently broadcast
    with pytest.raises(RuntimeError, match=r"gradient of shape \(1,\) was found for a parameter of shape \(3,\)"):
        SGD([first, second], lr=0.1).step()
    np.testing.assert_array_equal(first.data, np.ones(2))


def test_failed_add_param_group_changes_nothing() -> None:
    first, second = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = SGD([first])
    group = {"params": [second, first]}
    with pytest.raises(ValueError, match="more than one parameter group"):
        optimizer.add_param_group(group)
    assert group == {"params": [second, first]} and len(optimizer.param_groups) == 1


def test_load_state_dict_rejects_mismatches_before_changing_anything() -> None:
    params = [Parameter(np.ones(2)), Parameter(np.ones(3))]
    optimizer = SGD(params, lr=0.1, momentum=0.9)
    for param in params:
        param.grad = np.ones(param.shape)
    optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    other = SGD([{"params": params[:1]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        SGD(params[:1]).load_state_dict(saved)
    wrong_shape = copy.deepcopy(saved)
    wrong_shape["state"][1]["momentum_buffer"] = np.ones(4)
    wrong_shape["param_groups"][0]["lr"] = 5.0
    with pytest.raises(ValueError, match=r"'momentum_buffer' has shape \(4,\) but its parameter has shape \(3,\)"):
        optimizer.load_state_dict(wrong_shape)
    assert optimizer.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(optimizer.state[params[1]]["momentum_buffer"], np.ones(3))
    with pytest.raises(KeyError, match="no 'param_groups' entry"):
        optimizer.load_state_dict({"state": {}})
