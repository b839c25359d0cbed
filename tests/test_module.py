"""The Module protocol: registration, traversal, state_dict, grad mode, dtype casts, containers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinynn
from tests.helpers import check_grad, outcome, random_array, random_grad
from tinynn import nn
from tinynn.testing.compare import assert_close
from tinynn.testing.tolerances import TORCH_F64_RTOL


class Scale(nn.Module):
    """y = x * w (w per feature): the smallest module with a parameter and a hand-written backward."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.arange(1, features + 1, dtype=np.float32))

    def forward(self, input: np.ndarray) -> np.ndarray:
        self.save_for_backward(input)
        return input * self.weight.data

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        self.weight.accumulate_grad((grad_output * input).sum(0))
        return grad_output * self.weight.data if needs_input_grad else None


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = Scale(3)
        self.body = nn.Sequential(Scale(3), nn.Sequential(Scale(3)))
        self.bias = nn.Parameter(np.zeros(3, dtype=np.float32))


def test_parameters_are_registered_in_order_with_torch_dotted_names():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["bias", "scale.weight", "body.0.weight", "body.1.0.weight"]
    assert list(net.state_dict()) == names
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Scale", "Sequential", "Scale", "Sequential", "Scale"]
    assert [name for name, _ in net.named_children()] == ["scale", "body"]


def test_state_dict_keys_match_torch_for_the_same_structure():
    torch_model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)))
    model = nn.Sequential(Scale(2), nn.Sequential(Scale(2)))
    assert [k.rsplit(".", 1)[0] for k in model.state_dict()] == [
        k.rsplit(".", 1)[0] for k in torch_model.state_dict() if k.endswith("weight")
    ]


def test_shared_parameter_is_listed_once():
    net = Net()
    net.body[0].weight = net.scale.weight
    assert sum(p is net.scale.weight for p in net.parameters()) == 1


def test_assigning_a_non_parameter_over_a_parameter_is_a_type_error():
    net = Net()
    with pytest.raises(TypeError, match="cannot assign 'ndarray' as parameter 'bias'"):
        net.bias = np.zeros(3)
    net.bias = None
    assert "bias" not in dict(net.named_parameters())


def test_load_state_dict_copies_values_into_existing_arrays_keeping_dtype():
    net = Net()
    before = net.scale.weight.data
    state = {k: np.full(v.shape, 7.0, dtype=np.float64) for k, v in net.state_dict().items()}
    result = net.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert net.scale.weight.data is before
    assert net.scale.weight.dtype == np.float32
    assert np.all(net.scale.weight.data == 7.0)


def test_load_state_dict_accepts_torch_tensors():
    net = Net()
    state = {k: torch.full(v.shape, 3.0) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(np.all(p.data == 3.0) for p in net.parameters())


def test_load_state_dict_names_missing_and_unexpected_keys_and_changes_nothing():
    net = Net()
    snapshot = {k: v.copy() for k, v in net.state_dict().items()}
    state = {k: v + 1 for k, v in net.state_dict().items() if k != "bias"}
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra.weight"') as info:
        net.load_state_dict(state)
    assert 'Missing key(s) in state_dict: "bias"' in str(info.value)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, snapshot[key])
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra.weight"]


def test_load_state_dict_shape_mismatch_is_an_error_even_when_not_strict():
    net = Net()
    state = dict(net.state_dict())
    state["scale.weight"] = np.zeros(4)
    with pytest.raises(RuntimeError, match=r"size mismatch for scale.weight: copying a param with shape \(4,\)"):
        net.load_state_dict(state, strict=False)


def test_backward_adds_into_grad_and_zero_grad_clears_it():
    model = Scale(3)
    x = np.array([[1.0, -2.0, 0.0]], dtype=np.float32)
    grad_output = np.array([[0.5, 1.5, -1.0]], dtype=np.float32)
    model(x)
    model.backward(grad_output)
    first = model.weight.grad.copy()
    model(x)
    model.backward(grad_output)
    np.testing.assert_array_equal(model.weight.grad, 2 * first)
    model.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(model.weight.grad, np.zeros(3, dtype=np.float32))
    model.zero_grad()
    assert model.weight.grad is None


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"Scale.backward\(\) was called with nothing saved: run a forward"):
        Scale(3).backward(np.ones((1, 3), dtype=np.float32))


def test_second_backward_of_one_forward_is_an_error_like_torch():
    model = Scale(3)
    model(np.ones((1, 3), dtype=np.float32))
    model.backward(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="nothing saved"):
        model.backward(np.ones((1, 3), dtype=np.float32))


def test_backward_after_no_grad_forward_is_a_clear_error():
    model = Scale(3)
    with tinynn.no_grad():
        assert not tinynn.is_grad_enabled()
        model(np.ones((1, 3), dtype=np.float32))
    assert tinynn.is_grad_enabled()
    with pytest.raises(RuntimeError, match=r"after a forward under tinynn.no_grad\(\)"):
        model.backward(np.ones((1, 3), dtype=np.float32))


def test_no_grad_works_as_decorator_and_restores_on_exception():
    @tinynn.no_grad()
    def inside() -> bool:
        return tinynn.is_grad_enabled()

    assert inside() is False and tinynn.is_grad_enabled()
    with pytest.raises(ValueError), tinynn.no_grad():
        raise ValueError
    assert tinynn.is_grad_enabled()
    with tinynn.no_grad(), tinynn.enable_grad():
        assert tinynn.is_grad_enabled()


def test_train_and_eval_set_every_submodule():
    net = Net()
    assert net.training
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_double_float_and_to_cast_parameters_and_grads():
    model = Scale(3)
    model.weight.grad = np.ones(3, dtype=np.float32)
    param = model.weight
    assert model.double() is model
    assert param.dtype == np.float64 and param.grad.dtype == np.float64
    assert model.weight is param  # the optimizer's reference stays valid
    model.float()
    assert param.dtype == np.float32
    model.to(tinynn.float64)
    assert param.dtype == np.float64
    model.to("float32")
    assert param.dtype == np.float32
    with pytest.raises(TypeError, match="expected a floating dtype"):
        model.to(np.int64)


def test_parameter_rejects_integer_data_and_reports_shape_and_dtype():
    p = nn.Parameter(np.zeros((2, 3), dtype=np.float32))
    assert p.shape == (2, 3) and p.dtype == np.float32 and p.grad is None and p.numel() == 6
    with pytest.raises(TypeError, match="only floating-point arrays can require gradients, got int64"):
        nn.Parameter(np.zeros(3, dtype=np.int64))


def test_sequential_indexing_len_and_backward_chain_match_finite_differences():
    rng = np.random.default_rng(0)
    model = nn.Sequential(Scale(4), nn.Flatten(0), nn.Lambda(lambda x: x.reshape(2, 4)), Scale(4)).double()
    model[0].weight.data[:] = rng.standard_normal(4)
    model[3].weight.data[:] = rng.standard_normal(4)
    assert len(model) == 4 and isinstance(model[-1], Scale) and len(model[1:]) == 3
    assert list(dict(model[1:].named_children())) == ["1", "2", "3"]
    x = random_array(rng, (2, 4))
    grad_output = random_grad(rng, (2, 4))
    model(x)
    grad_input = model.backward(grad_output)
    check_grad(lambda v: model(v), x, grad_output, grad_input)


def test_sequential_passes_needs_input_grad_to_its_first_child_only():
    model = nn.Sequential(Scale(3), Scale(3))
    model(np.ones((2, 3), dtype=np.float32))
    assert model.backward(np.ones((2, 3), dtype=np.float32), needs_input_grad=False) is None
    assert model[0].weight.grad is not None


def test_lambda_reshape_gets_a_reshape_backward():
    view = nn.Lambda(lambda x: x.reshape(-1, 1, 2, 2))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert view(x).shape == (2, 1, 2, 2)
    grad = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2) * 2
    np.testing.assert_array_equal(view.backward(grad), grad.reshape(2, 4))


@pytest.mark.parametrize("func", [lambda x: x.T, lambda x: x * 2, lambda x: x[:, ::-1]])
def test_lambda_that_is_not_a_reshape_refuses_backward_without_an_explicit_one(func):
    layer = nn.Lambda(func)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = layer(x)
    with pytest.raises(RuntimeError, match=r"not a pure reshape of its input of shape \(2, 3\).*pass backward="):
        layer.backward(np.ones_like(out))


def test_lambda_with_explicit_backward_uses_it():
    layer = nn.Lambda(lambda x: x * 3, backward=lambda grad_output, input: grad_output * 3)
    layer(np.ones(2))
    np.testing.assert_array_equal(layer.backward(np.array([1.0, 2.0])), [3.0, 6.0])


@pytest.mark.parametrize("start_dim,end_dim", [(1, -1), (0, -1), (1, 2), (-3, -2), (2, 3)])
def test_flatten_matches_torch(start_dim, end_dim):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    layer = nn.Flatten(start_dim, end_dim)
    expected = torch.nn.Flatten(start_dim, end_dim)(torch.tensor(x))
    assert_close(layer(x), expected, rtol=TORCH_F64_RTOL, name="flatten")
    assert layer.backward(np.ones(tuple(expected.shape))).shape == x.shape


@pytest.mark.parametrize("shape,start_dim,end_dim", [((0, 3), 1, -1), ((0, 0), 0, 0), ((2, 0, 3), 1, 2),
                                                     ((0, 2, 3), 1, -1)])
def test_flatten_keeps_zero_length_sides_like_torch(shape, start_dim, end_dim):
    # Found by the property tests: reshape(..., -1, ...) cannot infer a side when another is 0.
    x = np.zeros(shape)
    expected = torch.flatten(torch.zeros(shape), start_dim, end_dim)
    layer = nn.Flatten(start_dim, end_dim)
    assert layer(x).shape == tuple(expected.shape)
    assert layer.backward(np.zeros(tuple(expected.shape))).shape == shape


def test_flatten_rejects_start_after_end():
    with pytest.raises(RuntimeError, match="start_dim cannot come after end_dim"):
        nn.Flatten(2, 1)(np.zeros((2, 3, 4)))


def test_repr_nests_like_torch():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Flatten(0, 1)))
    expected = repr(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Sequential(torch.nn.Flatten(0, 1))))
    assert repr(model) == expected


def test_manual_seed_makes_init_reproducible():
    tinynn.manual_seed(3)
    a = nn.init.uniform_(np.empty(5, dtype=np.float32), -1.0, 1.0)
    tinynn.manual_seed(3)
    b = nn.init.uniform_(np.empty(5, dtype=np.float32), -1.0, 1.0)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)


def test_kaiming_uniform_bound_is_one_over_sqrt_fan_in_for_torch_default_a():
    weight = np.empty((200, 50, 3, 3), dtype=np.float32)
    nn.init.kaiming_uniform_(weight, a=np.sqrt(5.0))
    bound = 1 / np.sqrt(50 * 9)
    assert np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.99 * bound


@pytest.mark.parametrize("target", ["", "0", "1", "1.0", "1.1", "2", "0.weight", "1.1.weight", "0.in_features"])
def test_get_submodule_and_get_parameter_find_and_refuse_what_torch_does(target):
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    tnn = torch.nn
    torch_model = tnn.Sequential(tnn.Linear(2, 3), tnn.Sequential(tnn.ReLU(), tnn.Linear(3, 1)))
    for lookup in ("get_submodule", "get_parameter"):  # compared by the found object's class name, or the refusal
        ours = outcome(lambda lookup=lookup: type(getattr(model, lookup)(target)).__name__)
        assert ours == outcome(lambda lookup=lookup: type(getattr(torch_model, lookup)(target)).__name__), lookup
    if target == "1.1.weight":
        assert model.get_parameter(target) is model[1][1].weight


def test_requires_grad_false_freezes_parameters_so_backward_and_sgd_leave_them():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    before = {name: value.copy() for name, value in model.state_dict().items()}
    assert model[0].requires_grad_(False) is model[0]
    optimizer = tinynn.optim.SGD(model.parameters(), lr=0.1)
    x = random_array(np.random.default_rng(0), (4, 3), dtype=np.float32)
    model.backward(random_grad(np.random.default_rng(1), model(x).shape, dtype=np.float32))
    optimizer.step()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[1].weight.grad is not None
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    np.testing.assert_array_equal(after["0.bias"], before["0.bias"])
    assert not np.array_equal(after["1.weight"], before["1.weight"])
    assert model.requires_grad_() is model and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("value", [1, 0, None, "yes"])
def test_requires_grad_refuses_a_non_bool_like_torch_and_changes_nothing(value):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError) as ours:
        model.requires_grad_(value)
    with pytest.raises(TypeError) as theirs:
        torch.nn.Linear(2, 2).requires_grad_(value)
    assert str(ours.value) == str(theirs.value)
    assert all(p.requires_grad for p in model.parameters())


def _children(model) -> list[tuple[str, str]]:
    return [(name, type(child).__name__) for name, child in model.named_children()]


@pytest.mark.parametrize("edit", [
    lambda lib, s: s.__setitem__(1, lib.Flatten()),
    lambda lib, s: s.__setitem__(-1, lib.Flatten()),
    lambda lib, s: s.__setitem__(3, lib.Flatten()),
    lambda lib, s: s.__setitem__(0, 5),
    lambda lib, s: s.__setitem__(1.0, lib.Flatten()),
    lambda lib, s: s.__delitem__(0),
    lambda lib, s: s.__delitem__(slice(0, 2)),
    lambda lib, s: s.__delitem__(-4),
    lambda lib, s: s.insert(1, lib.Flatten()),
    lambda lib, s: s.insert(-1, lib.Flatten()),
    lambda lib, s: s.insert(3, lib.Flatten()),
    lambda lib, s: s.insert(4, lib.Flatten()),
    lambda lib, s: s.extend([lib.Flatten(), lib.ReLU()]),
    lambda lib, s: s.pop(1),
    lambda lib, s: s.pop(slice(1, None)),
    lambda lib, s: s.__iadd__(lib.Sequential(lib.Flatten())),
    lambda lib, s: s.__iadd__([lib.Flatten()]),
])
def test_sequential_edits_name_children_and_refuse_like_torch(edit):
    ours = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    outcomes = [outcome(lambda lib=lib, model=model: type(edit(lib, model)).__name__)
                for lib, model in ((nn, ours), (torch.nn, theirs))]
    assert outcomes[0][0] == outcomes[1][0]
    if outcomes[0][0] == "ok":
        assert _children(ours) == _children(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
    elif outcomes[0][0] != "AssertionError":  # torch's insert names its own Module class
        assert outcomes[0][1] == outcomes[1][1].replace("torch.nn", "tinynn.nn")


def test_sequential_plus_sequential_is_a_new_chain_that_still_backpropagates():
    first, second = nn.Sequential(nn.Linear(2, 3)), nn.Sequential(nn.ReLU(), nn.Linear(3, 1))
    model = first + second
    assert _children(model) == [("0", "Linear"), ("1", "ReLU"), ("2", "Linear")] and len(first) == 1
    assert model[0] is first[0] and model[2] is second[1]
    with pytest.raises(ValueError, match="add operator supports only objects of Sequential class"):
        first + nn.ReLU()
    model.double()
    rng = np.random.default_rng(0)
    x, grad_output = random_array(rng, (4, 2)), random_grad(rng, (4, 1))
    model(x)
    check_grad(lambda value: model(value), x, grad_output, model.backward(grad_output))


def _tied(lib):
    """A module shared by two places of a Sequential, and a weight tied between two Linears."""
    shared, first, second = lib.Linear(2, 2), lib.Linear(2, 2), lib.Linear(2, 2)
    second.weight = first.weight
    return lib.Sequential(shared, lib.ReLU(), shared, first, second)


def test_shared_modules_and_tied_weights_are_named_and_saved_as_torch_does():
    ours, theirs = _tied(nn), _tied(torch.nn)
    for remove_duplicate in (True, False):
        assert ([name for name, _ in ours.named_modules(remove_duplicate=remove_duplicate)]
                == [name for name, _ in theirs.named_modules(remove_duplicate=remove_duplicate)])
        assert ([name for name, _ in ours.named_parameters(remove_duplicate=remove_duplicate)]
                == [name for name, _ in theirs.named_parameters(remove_duplicate=remove_duplicate)])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 5


def test_a_tied_model_loads_torchs_state_dict_and_names_a_missing_tied_key_as_torch_does():
    ours, theirs = _tied(nn), _tied(torch.nn)
    ours.load_state_dict(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[name], value.numpy(), err_msg=name)
    partial = {k: v for k, v in theirs.state_dict().items() if k != "4.weight"}
    ours_result = ours.load_state_dict(partial, strict=False)
    assert ours_result.missing_keys == theirs.load_state_dict(partial, strict=False).missing_keys == ["4.weight"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "4.weight"'):
        ours.load_state_dict(partial)


def test_a_module_used_twice_refuses_backward_and_tied_twins_give_torchs_gradients():
    rng = np.random.default_rng(3)
    x, grad_output = random_array(rng, (4, 3)), random_grad(rng, (4, 3))
    shared = nn.Linear(3, 3).double()
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model(x)
    with pytest.raises(RuntimeError, match="child 2 is child 0 again"):
        model.backward(grad_output)
    torch_shared = torch.nn.Linear(3, 3).double()
    x_t = torch.tensor(x, requires_grad=True)
    torch.nn.Sequential(torch_shared, torch.nn.ReLU(), torch_shared)(x_t).backward(torch.tensor(grad_output))
    first, second = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    first.load_state_dict(torch_shared.state_dict())
    second.weight, second.bias = first.weight, first.bias
    twins = nn.Sequential(first, nn.ReLU(), second)
    twins(x)
    assert_close(twins.backward(grad_output), x_t.grad, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(first.weight.grad, torch_shared.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(first.bias.grad, torch_shared.bias.grad, rtol=TORCH_F64_RTOL, name="bias.grad")


@pytest.mark.parametrize("args, kwargs", [
    (("cpu",), {}), ((torch.device("cpu"),), {}), (("cpu", torch.float64), {}),
    ((), {"device": "cpu", "dtype": torch.float64}), ((torch.float64,), {}), ((), {}),
])
def test_to_takes_torchs_device_and_dtype_forms_for_the_cpu(args, kwargs):
    model, torch_model = nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert model.to(*args, **kwargs) is model and model.cpu() is model
    torch_model.to(*args, **kwargs)
    assert model.weight.dtype == model.bias.dtype == np.dtype(str(torch_model.weight.dtype).replace("torch.", ""))


@pytest.mark.parametrize("call", [
    lambda m: m.to("cuda"), lambda m: m.to(torch.device("cuda", 0)), lambda m: m.to("cuda:1", torch.float64),
    lambda m: m.to(device="mps", dtype=np.float64), lambda m: m.cuda(),
])
def test_to_another_device_says_tinynn_runs_on_the_cpu_and_changes_nothing(call):
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="tinynn runs on the CPU only"):
        call(model)
    assert model.weight.dtype == np.float32


def test_a_module_called_twice_in_a_custom_forward_names_the_cause_at_backward():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = Scale(3)

        def forward(self, input: np.ndarray) -> np.ndarray:
            return self.scale(self.scale(input))

        def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
            return self.scale.backward(self.scale.backward(grad_output))

    model = Twice()
    model(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="called twice in one forward keeps only its last call's values"):
        model.backward(np.ones((2, 3), np.float32))
