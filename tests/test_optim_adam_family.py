"""tinynn.optim's Adam, AdamW, RMSprop and Adagrad: torch's arguments, refusals, defaults, repr,
state layout and dtypes. (Their arithmetic is held to torch's in tests/test_properties_optim.py.)"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch

from tests.helpers import assert_close, outcome, random_array, random_grad
from tinynn.nn.parameter import Parameter
from tinynn.optim import Adagrad, Adam, AdamW, RMSprop
from tinynn.testing.tolerances import OPTIM_F32_RTOL, OPTIM_F64_RTOL, TORCH_F32_ATOL

FAMILY = {"Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop, "Adagrad": Adagrad}
SHAPES = [(4, 3), (5,), ()]


def make_pair(rng: np.random.Generator, dtype: type = np.float64) -> tuple[list[Parameter], list[torch.nn.Parameter]]:
    arrays = [random_array(rng, shape, dtype=dtype) for shape in SHAPES]
    return [Parameter(array.copy()) for array in arrays], [torch.nn.Parameter(torch.tensor(array)) for array in arrays]


def set_grads(rng: np.random.Generator, ours: list[Parameter], theirs: list[torch.nn.Parameter]) -> None:
    for param, torch_param in zip(ours, theirs):
        grad = random_grad(rng, param.shape, dtype=param.dtype)
        param.grad, torch_param.grad = grad.copy(), torch.tensor(grad)


def both(name: str, **kwargs) -> tuple:
    """What building the optimizer gives in each library: ("ok", optimizer) or (error type, message)."""
    return (outcome(lambda: FAMILY[name]([Parameter(np.ones(2))], **kwargs)),
            outcome(lambda: getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], **kwargs)))


# ---------------------------------------------------------------------------------------- refusals
REFUSED = [
    ("Adam", {"lr": -1.0}), ("Adam", {"lr": float("nan")}), ("Adam", {"eps": -1e-8}),
    ("Adam", {"betas": (1.0, 0.999)}), ("Adam", {"betas": (-0.1, 0.999)}), ("Adam", {"betas": (0.9, 1.0)}),
    ("Adam", {"betas": (0.9, -0.5)}), ("Adam", {"weight_decay": -0.1}), ("Adam", {"betas": (0, 0.999)}),
    ("Adam", {"betas": (torch.tensor(0.9), 0.999)}), ("Adam", {"lr": torch.tensor([0.1, 0.2])}),
    ("Adam", {"lr": torch.tensor(0.1), "foreach": True}),
    ("Adam", {"betas": (torch.tensor(0.9), torch.tensor(0.99)), "foreach": True}),
    ("Adam", {"betas": (torch.tensor([0.9]), torch.tensor([0.8, 0.7]))}),
    ("Adam", {"fused": True, "differentiable": True}), ("Adam", {"fused": True, "foreach": True}),
    ("Adam", {"lr": -1.0, "eps": -1.0}),  # the first check wins
    ("AdamW", {"lr": -1e-3}), ("AdamW", {"weight_decay": -1e-2}), ("AdamW", {"betas": (0.9, 1.5)}),
    ("AdamW", {"eps": -1.0}), ("AdamW", {"fused": True, "differentiable": True}),
    ("RMSprop", {"lr": -0.01}), ("RMSprop", {"eps": -1e-8}), ("RMSprop", {"momentum": -0.9}),
    ("RMSprop", {"weight_decay": -1.0}), ("RMSprop", {"alpha": -0.99}), ("RMSprop", {"lr": torch.tensor([1.0, 2.0])}),
    ("Adagrad", {"lr": -0.01}), ("Adagrad", {"lr_decay": -0.1}), ("Adagrad", {"weight_decay": -0.1}),
    ("Adagrad", {"initial_accumulator_value": -1.0}), ("Adagrad", {"eps": -1e-10}),
    ("Adagrad", {"fused": True, "differentiable": True}), ("Adagrad", {"fused": True, "foreach": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), REFUSED, ids=lambda value: str(value))
def test_bad_hyper_parameters_are_refused_exactly_as_torch_refuses_them(name: str, kwargs: dict) -> None:
    ours, theirs = both(name, **kwargs)
    assert theirs[0] != "ok", f"torch accepted {kwargs}"
    assert ours == theirs


@pytest.mark.parametrize("name", FAMILY)
def test_bad_params_are_refused_like_torch_after_the_hyper_parameters(name: str) -> None:
    assert outcome(lambda: FAMILY[name]([])) == outcome(lambda: getattr(torch.optim, name)([]))
    assert outcome(lambda: FAMILY[name]([], lr=-1.0)) == outcome(lambda: getattr(torch.optim, name)([], lr=-1.0))


@pytest.mark.parametrize("name", FAMILY)
def test_a_parameter_in_two_groups_is_refused_with_torchs_error(name: str) -> None:
    ours, theirs = [Parameter(np.ones(2)), Parameter(np.ones(3))], [torch.nn.Parameter(torch.ones(n)) for n in (2, 3)]
    expected = outcome(lambda: getattr(torch.optim, name)([{"params": theirs[:1]}, {"params": theirs[::-1]}]))
    assert expected[0] == "ValueError"  # torch's own refusal, message and all, is what tinynn must give
    assert outcome(lambda: FAMILY[name]([{"params": ours[:1]}, {"params": ours[::-1]}])) == expected
    # Added later: the same error, and the optimizer keeps only the group it had.
    optimizer, torch_optimizer = FAMILY[name]([ours[0]]), getattr(torch.optim, name)([theirs[0]])
    expected = outcome(lambda: torch_optimizer.add_param_group({"params": theirs[::-1]}))
    assert expected[0] == "ValueError"
    assert outcome(lambda: optimizer.add_param_group({"params": ours[::-1]})) == expected
    assert len(optimizer.param_groups) == len(torch_optimizer.param_groups) == 1


@pytest.mark.parametrize(("name", "flag"), [(name, flag) for name in FAMILY for flag in
                                            ("foreach", "capturable", "differentiable", "fused")
                                            if flag in inspect.signature(FAMILY[name]).parameters])
def test_torchs_other_implementations_are_refused_when_asked_for(name: str, flag: str) -> None:
    ours, theirs = both(name, **{flag: True})
    assert theirs[0] == "ok"  # torch builds it; tinynn has only the single-tensor loop
    assert ours[0] == "NotImplementedError" and f"{flag}=True" in ours[1]
    ours, theirs = both(name, **{flag: False})
    assert ours[0] == theirs[0] == "ok"


def test_a_loaded_state_dict_that_asks_for_foreach_is_refused_at_step() -> None:
    param = Parameter(np.ones(3))
    optimizer = Adam([param])
    state = copy.deepcopy(optimizer.state_dict())
    state["param_groups"][0]["foreach"] = True
    optimizer.load_state_dict(state)
    param.grad = np.ones(3)
    with pytest.raises(NotImplementedError, match="foreach=True"):
        optimizer.step()
    np.testing.assert_array_equal(param.data, np.ones(3))


# ---------------------------------------------------------------------------------------- defaults
@pytest.mark.parametrize("name", FAMILY)
def test_signature_and_defaults_are_torchs(name: str) -> None:
    ours = inspect.signature(FAMILY[name]).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    assert list(ours) == list(theirs) or sorted(ours) == sorted(theirs)
    positional = [key for key, value in theirs.items() if value.kind != inspect.Parameter.KEYWORD_ONLY]
    assert [key for key, value in ours.items() if value.kind != inspect.Parameter.KEYWORD_ONLY] == positional
    assert {key: (value.kind, value.default) for key, value in ours.items()} == \
           {key: (value.kind, value.default) for key, value in theirs.items()}
    optimizer = FAMILY[name]([Parameter(np.ones(2))])
    torch_optimizer = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))])
    assert optimizer.defaults == torch_optimizer.defaults
    assert optimizer.state_dict()["param_groups"] == torch_optimizer.state_dict()["param_groups"]


@pytest.mark.parametrize(("name", "kwargs"), [
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True, "maximize": True, "decoupled_weight_decay": True}),
    ("AdamW", {"weight_decay": 0.1, "eps": 1e-6}),
    ("RMSprop", {"alpha": 0.9, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
])
def test_repr_and_groups_equal_torchs(name: str, kwargs: dict) -> None:
    def groups(params: list) -> list[dict]:
        return [{"params": params[:1]}, {"params": params[1:], "lr": 0.5, "weight_decay": 0.2}]

    rng = np.random.default_rng(0)
    ours, theirs = make_pair(rng)
    optimizer, torch_optimizer = FAMILY[name](groups(ours), **kwargs), getattr(torch.optim, name)(groups(theirs),
                                                                                                 **kwargs)
    assert repr(optimizer) == repr(torch_optimizer)
    assert optimizer.state_dict()["param_groups"] == torch_optimizer.state_dict()["param_groups"]


# ---------------------------------------------------------------------------------------- state
@pytest.mark.parametrize(("name", "kwargs", "keys"), [
    ("Adam", {}, ["exp_avg", "exp_avg_sq", "step"]),
    ("Adam", {"amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]),
    ("AdamW", {"amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]),
    ("RMSprop", {}, ["square_avg", "step"]),
    ("RMSprop", {"momentum": 0.9, "centered": True}, ["grad_avg", "momentum_buffer", "square_avg", "step"]),
    ("Adagrad", {}, ["step", "sum"]),
])
def test_state_keys_and_step_are_torchs_and_params_without_grad_are_skipped(name: str, kwargs: dict,
                                                                             keys: list[str]) -> None:
    rng = np.random.default_rng(1)
    ours, theirs = make_pair(rng)
    optimizer, torch_optimizer = FAMILY[name](ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(3):
        set_grads(rng, ours, theirs)
        ours[2].grad, theirs[2].grad = None, None
        optimizer.step()
        torch_optimizer.step()
    for param, torch_param in zip(ours[:2], theirs[:2]):
        assert sorted(optimizer.state[param]) == sorted(torch_optimizer.state[torch_param]) == keys
        step = optimizer.state[param]["step"]
        assert isinstance(step, np.ndarray) and step.shape == () and step.dtype == np.float32 and float(step) == 3.0
    before = ours[2].data.copy()
    if name == "Adagrad":  # created with the optimizer, as in torch; never stepped
        assert float(optimizer.state[ours[2]]["step"]) == float(torch_optimizer.state[theirs[2]]["step"]) == 0.0
    else:
        assert ours[2] not in optimizer.state and theirs[2] not in torch_optimizer.state
    np.testing.assert_array_equal(ours[2].data, before)


def test_adagrad_creates_its_state_with_the_optimizer_from_the_constructors_accumulator_value() -> None:
    # torch fills every group's sum with the constructor's initial_accumulator_value, also for a
    # group that sets its own, and a group added later gets the defaults' value at its first step.
    ours, theirs = [Parameter(np.ones((2, 2), np.float32)), Parameter(np.ones(3, np.float32))], \
                   [torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(3))]
    optimizer = Adagrad([{"params": ours[:1]}, {"params": ours[1:], "initial_accumulator_value": 7.0}],
                        initial_accumulator_value=0.3)
    torch_optimizer = torch.optim.Adagrad([{"params": theirs[:1]}, {"params": theirs[1:],
                                                                    "initial_accumulator_value": 7.0}],
                                          initial_accumulator_value=0.3)
    extra, torch_extra = Parameter(np.ones(2, np.float32)), torch.nn.Parameter(torch.ones(2))
    optimizer.add_param_group({"params": [extra], "initial_accumulator_value": 9.0})
    torch_optimizer.add_param_group({"params": [torch_extra], "initial_accumulator_value": 9.0})
    assert extra not in optimizer.state and torch_extra not in torch_optimizer.state
    extra.grad, torch_extra.grad = np.full(2, 0.5, np.float32), torch.full((2,), 0.5)
    optimizer.step()
    torch_optimizer.step()
    for param, torch_param in zip([*ours, extra], [*theirs, torch_extra]):
        state, torch_state = optimizer.state[param], torch_optimizer.state[torch_param]
        assert state["sum"].dtype == np.float32
        np.testing.assert_array_equal(state["sum"], torch_state["sum"].numpy())
        assert float(state["step"]) == float(torch_state["step"])
        np.testing.assert_array_equal(param.data, torch_param.detach().numpy())


def test_state_dicts_round_trip_torch_to_tinynn_to_torch_with_the_step_as_torch_keeps_it() -> None:
    rng = np.random.default_rng(2)
    ours, theirs = make_pair(rng, dtype=np.float32)
    torch_optimizer = torch.optim.Adam(theirs, lr=0.05, amsgrad=True)
    for _ in range(2):
        set_grads(rng, ours, theirs)
        torch_optimizer.step()
    for param, torch_param in zip(ours, theirs):
        param.data[...] = torch_param.detach().numpy()
    optimizer = Adam(ours, lr=1.0, betas=(0.1, 0.2))
    optimizer.load_state_dict(torch_optimizer.state_dict())
    for param, torch_param in zip(ours, theirs):
        for key, value in torch_optimizer.state[torch_param].items():
            mine = optimizer.state[param][key]
            assert isinstance(mine, np.ndarray) and mine.dtype == value.numpy().dtype and mine.shape == value.shape
            np.testing.assert_array_equal(mine, value.numpy())
            assert not np.shares_memory(mine, value.numpy())
    # ... and back: a fresh torch Adam takes tinynn's state (arrays as tensors) and goes on alike.
    fresh = [torch.nn.Parameter(torch.tensor(param.data)) for param in ours]
    fresh_optimizer = torch.optim.Adam(fresh, lr=1.0)
    state = optimizer.state_dict()
    fresh_optimizer.load_state_dict({
        "state": {index: {key: torch.tensor(value) for key, value in entry.items()}
                  for index, entry in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"])})
    assert fresh_optimizer.state_dict()["param_groups"] == torch_optimizer.state_dict()["param_groups"]
    for _ in range(2):
        set_grads(rng, ours, theirs)
        for torch_param, twin in zip(theirs, fresh):
            twin.grad = torch_param.grad.clone()
        optimizer.step()
        torch_optimizer.step()
        fresh_optimizer.step()
    for param, torch_param, twin in zip(ours, theirs, fresh):
        np.testing.assert_array_equal(twin.detach().numpy(), torch_param.detach().numpy())
        assert_close(param.data, torch_param, rtol=OPTIM_F32_RTOL, atol=TORCH_F32_ATOL)


def test_a_step_saved_as_a_plain_number_is_counted_like_torch() -> None:
    # torch's __setstate__ turns a number step into a float32 tensor; tinynn does the same at step().
    param, torch_param = Parameter(np.array([1.0, -2.0])), torch.nn.Parameter(torch.tensor([1.0, -2.0],
                                                                                           dtype=torch.float64))
    saved = {"state": {0: {"step": 3.0, "exp_avg": np.array([0.1, 0.2]), "exp_avg_sq": np.array([0.01, 0.5])}},
             "param_groups": copy.deepcopy(Adam([param]).state_dict()["param_groups"])}
    optimizer, torch_optimizer = Adam([param]), torch.optim.Adam([torch_param])
    optimizer.load_state_dict(saved)
    torch_optimizer.load_state_dict({"state": {0: {key: value if key == "step" else torch.tensor(value)
                                                   for key, value in saved["state"][0].items()}},
                                     "param_groups": saved["param_groups"]})
    param.grad, torch_param.grad = np.array([0.5, -1.5]), torch.tensor([0.5, -1.5], dtype=torch.float64)
    optimizer.step()
    torch_optimizer.step()
    step = optimizer.state[param]["step"]
    assert isinstance(step, np.ndarray) and step.dtype == np.float32 and float(step) == 4.0
    assert float(torch_optimizer.state[torch_param]["step"]) == 4.0
    assert_close(param.data, torch_param, rtol=OPTIM_F64_RTOL)


def test_adamw_keeps_decoupled_weight_decay_when_loading_an_adam_state_dict_like_torch() -> None:
    param, torch_param = Parameter(np.ones(2)), torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    adam_state = Adam([Parameter(np.ones(2))], weight_decay=0.1).state_dict()
    torch_adam_state = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], weight_decay=0.1).state_dict()
    optimizer, torch_optimizer = AdamW([param]), torch.optim.AdamW([torch_param])
    optimizer.load_state_dict(adam_state)
    torch_optimizer.load_state_dict(torch_adam_state)
    assert optimizer.param_groups[0]["decoupled_weight_decay"] is True
    assert torch_optimizer.param_groups[0]["decoupled_weight_decay"] is True
    assert optimizer.param_groups[0]["weight_decay"] == torch_optimizer.param_groups[0]["weight_decay"] == 0.1


# ---------------------------------------------------------------------------------------- dtypes and steps
@pytest.mark.parametrize(("name", "kwargs"), [
    ("Adam", {"lr": np.float64(0.01), "betas": (np.float64(0.8), np.float64(0.99)), "eps": np.float64(1e-6),
              "weight_decay": np.float64(0.1), "amsgrad": True}),
    ("AdamW", {"lr": np.float64(0.01), "weight_decay": np.float64(0.1), "maximize": True}),
    ("RMSprop", {"lr": np.float64(0.01), "alpha": np.float64(0.9), "momentum": np.float64(0.5),
                 "weight_decay": np.float64(0.1), "centered": True}),
    ("Adagrad", {"lr": np.float64(0.1), "lr_decay": np.float64(0.01), "weight_decay": np.float64(0.1),
                 "initial_accumulator_value": np.float64(0.2)}),
])
def test_float32_params_and_state_stay_float32_and_match_torch(name: str, kwargs: dict) -> None:
    # np.float64 hyper-parameters would upcast float32 arrays under NumPy 2 if used as they are.
    rng = np.random.default_rng(3)
    ours, theirs = make_pair(rng, dtype=np.float32)
    arrays = [param.data for param in ours]
    optimizer = FAMILY[name](ours, **kwargs)
    torch_optimizer = getattr(torch.optim, name)(theirs, **{key: value.item() if isinstance(value, np.generic)
                                                            else value for key, value in kwargs.items()})
    for _ in range(3):
        set_grads(rng, ours, theirs)
        optimizer.step()
        torch_optimizer.step()
    for param, torch_param, array in zip(ours, theirs, arrays):
        assert param.data is array and param.data.dtype == np.float32  # in place: the model sees the step
        assert_close(param.data, torch_param, rtol=OPTIM_F32_RTOL, atol=TORCH_F32_ATOL)
        for key, value in optimizer.state[param].items():
            assert isinstance(value, np.ndarray) and value.dtype == np.float32, key
            assert_close(value, torch_optimizer.state[torch_param][key], rtol=OPTIM_F32_RTOL, atol=TORCH_F32_ATOL)


@pytest.mark.parametrize("name", FAMILY)
def test_step_leaves_grad_alone_evaluates_the_closure_once_and_refuses_a_wrong_grad_shape(name: str) -> None:
    kwargs = {"weight_decay": 0.1, "maximize": True}
    if name == "RMSprop":
        kwargs.update(momentum=0.9, centered=True)
    rng = np.random.default_rng(4)
    ours, _ = make_pair(rng)
    optimizer = FAMILY[name](ours, **kwargs)
    grads = [random_grad(rng, param.shape) for param in ours]
    calls = []

    def closure() -> float:
        calls.append(1)
        for param, grad in zip(ours, grads):
            param.grad = grad.copy()
        return 2.5

    assert optimizer.step(closure) == 2.5 and len(calls) == 1
    optimizer.step()
    for param, grad in zip(ours, grads):
        np.testing.assert_array_equal(param.grad, grad)
    before = [param.data.copy() for param in ours]
    ours[1].grad = np.ones(1)  # (1,) would silently broadcast into (5,)
    with pytest.raises(RuntimeError, match=rf"{name}.step: a gradient of shape \(1,\) was found for a parameter "
                                           r"of shape \(5,\)"):
        optimizer.step()
    for param, value in zip(ours, before):
        np.testing.assert_array_equal(param.data, value)


@pytest.mark.parametrize("options", [
    {"weight_decay": 0.1, "maximize": True},
    {"weight_decay": 0.0, "maximize": False},
    {"weight_decay": 0.1, "maximize": False, "betas": (0.3, 0.9)},  # lerp weight 0.7: lerp's other form
])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_the_engines_adam_step_in_blocks_and_threads_equals_the_textbook_bit_for_bit(monkeypatch, name, amsgrad,
                                                                                     options):
    import tinynn
    from tinynn._engine import optim as engine_optim
    from tinynn._engine import parallel

    # Small arrays split into 3 parts and blocks of 4 here, as large ones are (one part per
    # PART_ELEMENTS, blocks of BLOCK_ELEMENTS); (3,) stays whole, a transposed (9, 5) is not contiguous.
    monkeypatch.setattr(engine_optim, "PART_ELEMENTS", 7)
    monkeypatch.setattr(engine_optim, "BLOCK_ELEMENTS", 4)
    monkeypatch.setattr(parallel, "_num_threads", 3)
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in [(5, 9), (40,), (3,)]]
    start.append(rng.standard_normal((5, 9)).astype(np.float32).T)
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in start] for _ in range(4)]
    results = {}
    for textbook in (False, True):
        params = [tinynn.nn.Parameter(w.copy(order="K")) for w in start]
        opt = getattr(tinynn.optim, name)(params, lr=0.01, amsgrad=amsgrad, **options)
        with tinynn.textbook(textbook):
            for step_grads in grads:
                for param, grad in zip(params, step_grads):
                    param.grad = grad.copy()
                opt.step()
        results[textbook] = ([p.data for p in params], [dict(opt.state[p]) for p in params])
    for engine_param, textbook_param in zip(results[False][0], results[True][0]):
        np.testing.assert_array_equal(engine_param, textbook_param, strict=True)
    for engine_state, textbook_state in zip(results[False][1], results[True][1]):
        for key in textbook_state:
            np.testing.assert_array_equal(engine_state[key], textbook_state[key], strict=True)
