"""tinynn.optim.lr_scheduler against torch.optim.lr_scheduler: the same learning rates, bit for bit.

Every property builds a schedule twice from the same drawn hyper-parameters (passed positionally,
so the argument order is checked too): torch's over a torch optimizer and tinynn's over a tinynn
one, each with two parameter groups of different lrs. It then runs 100 rounds of
``optimizer.step(); scheduler.step()`` and after every round holds the two to exact equality
(``float.hex``, so -0.0 and NaN count too): ``get_last_lr()``, every scheduled group entry (lr,
initial_lr, momentum, betas...) and the whole ``state_dict()``, key order included. What a
constructor or a step refuses is compared as (error type, message), and warnings as (category,
message): plain steps in the right call order give none. Nothing here needs a tolerance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as torch_lr_scheduler
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import tinynn.optim as optim
from tests.helpers import outcome
from tests.strategies import one_torch_thread  # noqa: F401 - an autouse fixture
from tinynn.nn import Parameter
from tinynn.optim import lr_scheduler

STEPS = 100
GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "momentum", "betas", "max_momentum", "base_momentum")
Make = Callable[..., Any]  # make(module, optimizer, ...) -> a scheduler from that module


# ---------------------------------------------------------------------------------------- helpers
def optimizers(lrs: list[float], kind: str = "SGD") -> tuple[Any, Any]:
    """(tinynn's, torch's) optimizer, one parameter per group. No gradients: ``step()`` runs (which is
    what the schedulers watch for) and skips every parameter, so an lr that a schedule drives to inf
    or NaN (LinearLR can, in torch too) does not turn 0 * inf into a RuntimeWarning in the update."""
    ours_params = [Parameter(np.zeros(3)) for _ in lrs]
    torch_params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)) for _ in lrs]
    built = []
    for library, params in ((optim, ours_params), (torch.optim, torch_params)):
        groups = [{"params": [param], "lr": lr} for param, lr in zip(params, lrs)]
        built.append(getattr(library, kind)(groups, lr=0.5))
    return built[0], built[1]


def note_event(text: str) -> None:
    """Count it in hypothesis's statistics (``--hypothesis-show-statistics``), inside a property only."""
    if currently_in_test_context():
        event(text)


def assert_exact(ours: Any, theirs: Any, where: str = "value") -> None:
    """Equal in type and value all the way down; floats compared by ``float.hex``; dict key order too.

    Fast path first: for the plain containers, numbers and strings that schedules hold, equal ``repr``s
    mean exactly that (a float's repr is the shortest string that reads back as the same double, and
    tells -0.0, nan, 1 and 1.0, True and 1, lists and tuples apart)."""
    if repr(ours) == repr(theirs):
        return
    _assert_exact(ours, theirs, where)
    raise AssertionError(f"{where}: {ours!r} vs torch's {theirs!r}")


def _assert_exact(ours: Any, theirs: Any, where: str) -> None:
    """assert_exact's slow path, which names the first entry that differs."""
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} vs torch's {type(theirs).__name__}"
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), f"{where}: keys {list(ours)} vs torch's {list(theirs)}"
        for key in theirs:
            _assert_exact(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), f"{where}: length {len(ours)} vs torch's {len(theirs)}"
        for index, (a, b) in enumerate(zip(ours, theirs)):
            _assert_exact(a, b, f"{where}[{index}]")
    elif isinstance(theirs, float):
        assert ours.hex() == theirs.hex(), f"{where}: {ours!r} vs torch's {theirs!r}"
    else:
        assert ours == theirs, f"{where}: {ours!r} vs torch's {theirs!r}"


def watched(call: Callable[[], Any]) -> tuple[tuple[str, Any], list[tuple[str, str]]]:
    """``outcome(call)`` and the warnings it raised, as (category name, message)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = outcome(call)
    return result, [(w.category.__name__, str(w.message)) for w in caught]


def assert_same_outcome(ours: tuple, theirs: tuple) -> None:
    (ours_kind, ours_value), ours_warnings = ours
    (their_kind, their_value), their_warnings = theirs
    assert ours_kind == their_kind, f"tinynn: {ours_kind} {ours_value!r}; torch: {their_kind} {their_value!r}"
    if ours_kind != "ok":
        assert ours_value == their_value
    assert ours_warnings == their_warnings


def assert_same_state(ours: Any, theirs: Any, ours_opt: Any, torch_opt: Any, where: str) -> None:
    assert_exact(ours.get_last_lr(), theirs.get_last_lr(), f"{where}: get_last_lr()")
    for index, (group, torch_group) in enumerate(zip(ours_opt.param_groups, torch_opt.param_groups)):
        for key in GROUP_KEYS:
            assert (key in group) == (key in torch_group), f"{where}: group {index} {key!r} present in one only"
            if key in torch_group:
                assert_exact(group[key], torch_group[key], f"{where}: param_groups[{index}][{key!r}]")
    assert_exact(ours.state_dict(), theirs.state_dict(), f"{where}: state_dict()")


def build(make: Make, ours_opt: Any, torch_opt: Any, *args: Any, quiet: bool = True) -> tuple[Any, Any] | None:
    """Both schedulers, or None when both constructors refused alike (asserted); their warnings equal,
    and with ``quiet`` none."""
    ours = watched(lambda: make(lr_scheduler, ours_opt, *args))
    theirs = watched(lambda: make(torch_lr_scheduler, torch_opt, *args))
    assert_same_outcome(ours, theirs)
    note_event(f"constructor: {theirs[0][0]}")
    if theirs[0][0] != "ok":
        return None
    assert theirs[1] == [] or not quiet, theirs[1]
    assert_same_state(ours[0][1], theirs[0][1], ours_opt, torch_opt, "after construction")
    return ours[0][1], theirs[0][1]


def advance(ours: Any, theirs: Any, ours_opt: Any, torch_opt: Any, steps: int = STEPS,
            step_args: Callable[[int], tuple] = lambda i: ()) -> bool:
    """``optimizer.step(); scheduler.step(*step_args(i))`` on both sides ``steps`` times, compared after
    each; False once both steps failed alike."""
    for i in range(steps):
        ours_opt.step()
        torch_opt.step()
        args = step_args(i)
        result = watched(lambda: ours.step(*args))  # noqa: B023 - called at once
        torch_result = watched(lambda: theirs.step(*args))  # noqa: B023
        assert_same_outcome(result, torch_result)
        if torch_result[0][0] != "ok":
            note_event(f"step refused: {torch_result[0][0]}")
            return False
        assert_same_state(ours, theirs, ours_opt, torch_opt, f"step {i + 1}")
    return True


def run(make: Make, lrs: list[float], kind: str = "SGD", step_args: Callable[[int], tuple] = lambda i: ()) -> None:
    ours_opt, torch_opt = optimizers(lrs, kind)
    pair = build(make, ours_opt, torch_opt)
    if pair is not None:
        advance(*pair, ours_opt, torch_opt, step_args=step_args)


# ---------------------------------------------------------------------------------------- strategies
lrs_pairs = st.lists(st.sampled_from([0.1, 1.0, 0.01]) | st.floats(1e-5, 2.0), min_size=2, max_size=2,
                     unique=True)
gammas = st.sampled_from([0.1, 0.5, 1.0]) | st.floats(0.05, 1.2)


class Warmup:
    """A callable object (not a function), so LambdaLR's state_dict keeps its ``__dict__``; ``calls``
    changes at every step, so the saved state is not a constant."""

    def __init__(self, epochs: int, gamma: float) -> None:
        self.epochs, self.gamma, self.calls = epochs, gamma, 0

    def __call__(self, epoch: int) -> float:
        self.calls += 1
        return (epoch + 1) / self.epochs if epoch < self.epochs else self.gamma ** (epoch - self.epochs)


def lr_lambda(kind: str, value: Any) -> Callable[[int], Any]:
    """A fresh factor function (one per side, so that loading a state_dict touches one side only)."""
    if kind == "power":
        return lambda epoch: value**epoch
    if kind == "floor":  # an int factor, as in torch's own example
        return lambda epoch: epoch // value + 1
    return Warmup(*value)


lambda_specs = st.one_of(st.tuples(st.just("power"), gammas), st.tuples(st.just("floor"), st.integers(1, 40)),
                         st.tuples(st.just("warmup"), st.tuples(st.integers(1, 20), gammas)))


def one_bad(draw: st.DrawFn, names: list[str]) -> str | None:
    """Which argument (if any) to draw from outside its valid range: None 9 times in 10, so that most
    examples run a whole schedule and the refusals still come up (shrinking goes to None)."""
    return draw(st.sampled_from([None] * 9 * len(names) + names))


def pick(draw: st.DrawFn, bad: str | None, name: str, good: st.SearchStrategy, wrong: st.SearchStrategy) -> Any:
    return draw(wrong if bad == name else good)


def wrong_count(values: st.SearchStrategy) -> st.SearchStrategy:
    """A list of 1 or 3 values where each of the 2 param groups needs one."""
    return st.sampled_from([1, 3]).flatmap(lambda n: st.lists(values, min_size=n, max_size=n))


@st.composite
def lambda_lr(draw: st.DrawFn) -> Make:
    # One spec for all groups, or a list or tuple of them (of the wrong length when bad, refused).
    bad = one_bad(draw, ["count"])
    specs = pick(draw, bad, "count", lambda_specs | st.lists(lambda_specs, min_size=2, max_size=2),
                 wrong_count(lambda_specs))
    as_tuple = draw(st.booleans())

    def make(mod: Any, opt: Any, last_epoch: int = -1) -> Any:
        if isinstance(specs, list):
            fns = [lr_lambda(*spec) for spec in specs]
            return mod.LambdaLR(opt, tuple(fns) if as_tuple else fns, last_epoch)
        return mod.LambdaLR(opt, lr_lambda(*specs), last_epoch)
    return make


@st.composite
def step_lr(draw: st.DrawFn) -> Make:
    # step_size 0 is accepted by both and fails at the first step (modulo by zero) in both.
    step_size = pick(draw, one_bad(draw, ["step_size"]), "step_size", st.integers(1, 30), st.just(0))
    gamma = draw(gammas)
    return lambda mod, opt, last_epoch=-1: mod.StepLR(opt, step_size, gamma, last_epoch)


@st.composite
def multi_step_lr(draw: st.DrawFn) -> Make:
    # Unsorted, with repeats (a repeated milestone multiplies by gamma**count), some past the end.
    milestones, gamma = draw(st.lists(st.integers(0, 110), max_size=6)), draw(gammas)
    return lambda mod, opt, last_epoch=-1: mod.MultiStepLR(opt, list(milestones), gamma, last_epoch)


@st.composite
def exponential_lr(draw: st.DrawFn) -> Make:
    gamma = draw(st.sampled_from([0.9, 1.0]) | st.floats(0.5, 1.1))
    return lambda mod, opt, last_epoch=-1: mod.ExponentialLR(opt, gamma, last_epoch)


@st.composite
def cosine_annealing_lr(draw: st.DrawFn) -> Make:
    # T_max below 100 so that the schedule turns and climbs back (the additive branch of torch's
    # recursion); 0 fails in both (modulo by zero), negatives are accepted by both.
    t_max = draw(st.integers(1, 120) | st.sampled_from([0, -3, 1, 2, 49, 50]))
    eta_min = draw(st.sampled_from([0.0, 1e-3]) | st.floats(0.0, 0.05))
    return lambda mod, opt, last_epoch=-1: mod.CosineAnnealingLR(opt, t_max, eta_min, last_epoch)


@st.composite
def linear_lr(draw: st.DrawFn) -> Make:
    bad = one_bad(draw, ["start", "end"])
    start = pick(draw, bad, "start", st.sampled_from([1 / 3, 1.0]) | st.floats(0.0, 1.0, exclude_min=True),
                 st.sampled_from([0.0, -0.1, 1.1]) | st.floats(1.0, 2.0, exclude_min=True))
    end = pick(draw, bad, "end", st.sampled_from([1.0, 0.0, 0.5]) | st.floats(0.0, 1.0),
               st.sampled_from([-0.1, 1.1]) | st.floats(1.0, 2.0, exclude_min=True))
    total_iters = draw(st.integers(0, 120))
    return lambda mod, opt, last_epoch=-1: mod.LinearLR(opt, start, end, total_iters, last_epoch)


SIMPLE = {"LambdaLR": lambda_lr, "StepLR": step_lr, "MultiStepLR": multi_step_lr, "ExponentialLR": exponential_lr,
          "CosineAnnealingLR": cosine_annealing_lr, "LinearLR": linear_lr}
simple_schedulers = st.one_of(*(strategy() for strategy in SIMPLE.values()))


@st.composite
def one_cycle_lr(draw: st.DrawFn) -> Make:
    bad = one_bad(draw, ["max_lr", "total_steps", "epochs", "pct_start", "anneal", "momentum"])
    per_group = st.lists(st.floats(1e-4, 2.0), min_size=2, max_size=2)
    max_lr = pick(draw, bad, "max_lr", st.floats(1e-4, 2.0) | per_group | per_group.map(tuple),
                  wrong_count(st.floats(1e-4, 2.0)))
    # Under 100 total steps about half the time: the schedule reaches its end, and stepping past it
    # is refused by both.
    if draw(st.booleans()):
        steps = {"total_steps": pick(draw, bad, "total_steps", st.integers(100, 200) | st.integers(1, 99),
                                     st.sampled_from([None, 0, -2, 2.5, 100.0]))}
    else:
        steps = {"epochs": pick(draw, bad, "epochs", st.integers(1, 20), st.sampled_from([None, 0, -1, 3.0])),
                 "steps_per_epoch": pick(draw, bad, "epochs", st.integers(10, 20), st.sampled_from([None, 0, 7.0]))}
    pct_start = pick(draw, bad, "pct_start", st.sampled_from([0.3, 0.5, 0.0, 1.0]) | st.floats(0.0, 1.0),
                     st.sampled_from([0, 1, -0.1, 1.5]))
    anneal = pick(draw, bad, "anneal", st.sampled_from(["cos", "linear"]), st.just("exp"))
    cycle = draw(st.booleans())
    momenta = st.floats(0.0, 0.99) | st.lists(st.floats(0.0, 0.99), min_size=2, max_size=2)
    momenta = pick(draw, bad, "momentum", st.tuples(momenta, momenta),
                   st.tuples(momenta, st.lists(st.floats(0.0, 0.99), min_size=3, max_size=3)))
    base_momentum, max_momentum = draw(st.permutations(momenta))
    div_factor = draw(st.sampled_from([25.0]) | st.floats(1.0, 100.0))
    final_div_factor = draw(st.sampled_from([1e4]) | st.floats(1.0, 1e5))
    three_phase = draw(st.booleans())

    def make(mod: Any, opt: Any, last_epoch: int = -1) -> Any:
        return mod.OneCycleLR(opt, max_lr, steps.get("total_steps"), steps.get("epochs"), steps.get("steps_per_epoch"),
                              pct_start, anneal, cycle, base_momentum, max_momentum, div_factor, final_div_factor,
                              three_phase, last_epoch)
    return make


@st.composite
def sequential_lr(draw: st.DrawFn) -> Make:
    children = draw(st.lists(simple_schedulers, min_size=1, max_size=3))
    milestones = draw(st.lists(st.integers(0, 100), min_size=len(children) - 1, max_size=len(children) - 1))
    if draw(st.integers(0, 4)) != 0:  # mostly sorted; unsorted ones are accepted by both too
        milestones = sorted(milestones)
    if one_bad(draw, ["milestones"]):  # the wrong number of milestones, refused
        milestones = [*milestones, 50]

    def make(mod: Any, opt: Any, last_epoch: int = -1) -> Any:
        return mod.SequentialLR(opt, [child(mod, opt) for child in children], list(milestones), last_epoch)
    return make


@st.composite
def plateau(draw: st.DrawFn) -> tuple[Make, list[float]]:
    bad = one_bad(draw, ["mode", "factor", "threshold_mode", "min_lr"])
    mode = pick(draw, bad, "mode", st.sampled_from(["min", "max"]), st.sampled_from(["mean", "Min"]))
    factor = pick(draw, bad, "factor", st.sampled_from([0.1, 0.5, 0.0]) | st.floats(0.0, 1.0, exclude_max=True),
                  st.sampled_from([1.0, 1.5]))
    patience = draw(st.integers(0, 12))
    threshold = draw(st.sampled_from([1e-4, 0.0]) | st.floats(0.0, 0.3))
    threshold_mode = pick(draw, bad, "threshold_mode", st.sampled_from(["rel", "abs"]), st.just("relative"))
    cooldown = draw(st.integers(0, 6))
    min_lrs = st.sampled_from([0, 0.0, 1e-3]) | st.floats(0.0, 0.05)
    min_lr = pick(draw, bad, "min_lr", min_lrs | st.lists(min_lrs, min_size=2, max_size=2),
                  wrong_count(min_lrs))
    eps = draw(st.sampled_from([1e-8, 0.0]) | st.floats(0.0, 1e-2))
    # Metrics that improve, stall and repeat: a random walk over a few step sizes, from a drawn seed
    # (drawing 100 floats one by one took as long as running the two schedules).
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    moves = np.where(rng.random(STEPS) < 0.7, rng.choice([-1.0, -0.01, 0.0, 0.0, 0.001, 1.0], STEPS),
                     rng.uniform(-2.0, 2.0, STEPS))
    metrics = np.cumsum(moves).tolist()

    def make(mod: Any, opt: Any) -> Any:
        return mod.ReduceLROnPlateau(opt, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps)
    return make, metrics


ALL = {**SIMPLE, "OneCycleLR": one_cycle_lr, "SequentialLR": sequential_lr}


# ---------------------------------------------------------------------------------------- schedules
# Half the profile's examples (at most 750) for each of the seven schedulers, as for OneCycleLR
# below: at the full 1500 each took 11-14 s on the 2-core machine, 85 s for the seven.
@pytest.mark.parametrize("name", list(SIMPLE))
@settings(max_examples=min(settings.default.max_examples, 750))
@given(data=st.data(), lrs=lrs_pairs)
def test_schedule_matches_torch_exactly(name, data, lrs):
    run(data.draw(SIMPLE[name]()), lrs)


# Half the profile's examples (at most 750) for each of the four optimizers: that is still 3000
# OneCycleLR schedules in all, and at the full 1500 each of the four took 13-23 s on the 2-core
# machine (over the ~20 s a property may take), the Adam ones most.
@pytest.mark.parametrize("kind", ["SGD", "RMSprop", "Adam", "AdamW"])
@settings(max_examples=min(settings.default.max_examples, 750))
@given(make=one_cycle_lr(), lrs=lrs_pairs)
def test_one_cycle_lr_matches_torch_exactly(kind, make, lrs):
    """cycle_momentum cycles ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam, AdamW, whose betas[1]
    stays); with Adagrad, which has neither, it is refused (test_one_cycle_needs_momentum_or_betas)."""
    run(make, lrs, kind)


@given(make=sequential_lr(), lrs=lrs_pairs)
def test_sequential_lr_matches_torch_exactly_without_warnings(make, lrs):
    # advance() asserts the warnings equal torch's, after every step, and build() that there are
    # none: at a milestone the next scheduler restarts through _update_lr(0), not step(0), which
    # would warn about the deprecated epoch argument.
    run(make, lrs)


@given(case=plateau(), lrs=lrs_pairs)
def test_reduce_lr_on_plateau_matches_torch_exactly(case, lrs):
    make, metrics = case
    run(make, lrs, step_args=lambda i: (metrics[i],))


@given(make=simple_schedulers, lrs=lrs_pairs, initial_lrs=lrs_pairs, last_epoch=st.integers(0, 60))
def test_resuming_with_last_epoch_matches_torch_exactly(make, lrs, initial_lrs, last_epoch):
    """last_epoch >= 0 with each group's initial_lr already set: base_lrs come from initial_lr and the
    constructor's step must not advance the lr (ExponentialLR's and CosineAnnealingLR's _is_initial)."""
    ours_opt, torch_opt = optimizers(lrs)
    for opt in (ours_opt, torch_opt):
        for group, initial_lr in zip(opt.param_groups, initial_lrs):
            group["initial_lr"] = initial_lr
    pair = build(make, ours_opt, torch_opt, last_epoch)
    if pair is not None:
        advance(*pair, ours_opt, torch_opt)


@given(make=st.one_of(*(SIMPLE[name]() for name in SIMPLE)), lrs=lrs_pairs,
       epochs=st.lists(st.integers(0, 120), min_size=1, max_size=20))
def test_step_with_an_epoch_uses_the_closed_form_and_warns_as_torch(make, lrs, epochs):
    # Every step warns (EPOCH_DEPRECATION_WARNING); advance() compares those warnings too.
    ours_opt, torch_opt = optimizers(lrs)
    pair = build(make, ours_opt, torch_opt)
    if pair is not None:
        advance(*pair, ours_opt, torch_opt, steps=len(epochs), step_args=lambda i: (epochs[i],))


# ---------------------------------------------------------------------------------------- state_dict
@given(data=st.data(), name=st.sampled_from(list(ALL)), kind=st.sampled_from(["SGD", "Adam"]), lrs=lrs_pairs,
       split=st.integers(0, STEPS))
def test_torch_state_dict_loads_and_both_continue_identically(data, name, kind, lrs, split):
    """Run both ``split`` steps; then a fresh tinynn optimizer and scheduler load torch's state_dicts
    (optimizer first, as torch documents) and the two go on to step 100 together."""
    make = data.draw(ALL[name]())
    ours_opt, torch_opt = optimizers(lrs, kind)
    pair = build(make, ours_opt, torch_opt)
    if pair is None or not advance(*pair, ours_opt, torch_opt, steps=split):
        return
    theirs = pair[1]
    fresh_opt, _ = optimizers(lrs, kind)
    fresh = make(lr_scheduler, fresh_opt)
    fresh_opt.load_state_dict(torch_opt.state_dict())
    saved = theirs.state_dict()
    fresh.load_state_dict(saved)
    assert list(saved) == list(theirs.state_dict())  # popped entries are put back
    assert_same_state(fresh, theirs, fresh_opt, torch_opt, "after loading")
    advance(fresh, theirs, fresh_opt, torch_opt, steps=STEPS - split)


@given(case=plateau(), lrs=lrs_pairs, split=st.integers(0, STEPS))
def test_reduce_lr_on_plateau_state_dict_round_trip(case, lrs, split):
    make, metrics = case
    ours_opt, torch_opt = optimizers(lrs)
    pair = build(make, ours_opt, torch_opt)
    if pair is None or not advance(*pair, ours_opt, torch_opt, steps=split, step_args=lambda i: (metrics[i],)):
        return
    fresh_opt, _ = optimizers(lrs)
    fresh = make(lr_scheduler, fresh_opt)
    fresh_opt.load_state_dict(torch_opt.state_dict())
    fresh.load_state_dict(pair[1].state_dict())
    advance(fresh, pair[1], fresh_opt, torch_opt, steps=STEPS - split, step_args=lambda i: (metrics[split + i],))


def test_lambda_lr_state_dict_keeps_callable_objects_only():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours = lr_scheduler.LambdaLR(ours_opt, [Warmup(3, 0.5), lambda epoch: 0.9**epoch])
    theirs = torch_lr_scheduler.LambdaLR(torch_opt, [Warmup(3, 0.5), lambda epoch: 0.9**epoch])
    assert ours.state_dict()["lr_lambdas"] == [{"epochs": 3, "gamma": 0.5, "calls": 1}, None]
    assert_exact(ours.state_dict(), theirs.state_dict())
    ours.lr_lambdas[0].calls = 7
    ours.load_state_dict(theirs.state_dict())
    assert ours.lr_lambdas[0].calls == 1


# ---------------------------------------------------------------------------------------- warnings
def warnings_of(call: Callable[[], Any]) -> list[tuple[str, str, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [(w.category.__name__, str(w.message), w.filename) for w in caught]


def test_step_before_optimizer_step_warns_as_torch():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours, theirs = lr_scheduler.StepLR(ours_opt, 2), torch_lr_scheduler.StepLR(torch_opt, 2)
    ours_warnings, their_warnings = warnings_of(ours.step), warnings_of(theirs.step)
    assert len(their_warnings) == 1 and "before `optimizer.step()`" in their_warnings[0][1]
    assert ours_warnings == their_warnings  # the text, and the caller's line (here) as its place
    assert their_warnings[0][2] == __file__
    # Only the first step is checked, as in torch.
    assert warnings_of(ours.step) == warnings_of(theirs.step) == []


def test_right_order_and_a_second_scheduler_do_not_warn():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours = [lr_scheduler.StepLR(ours_opt, 2), lr_scheduler.ExponentialLR(ours_opt, 0.9)]
    theirs = [torch_lr_scheduler.StepLR(torch_opt, 2), torch_lr_scheduler.ExponentialLR(torch_opt, 0.9)]
    wrapped = ours_opt.step
    assert wrapped._wrapped_by_lr_sched and not hasattr(optim.SGD.step, "_wrapped_by_lr_sched")
    for _ in range(3):
        assert warnings_of(ours_opt.step) == warnings_of(torch_opt.step) == []
        for mine, torch_scheduler in zip(ours, theirs):
            assert warnings_of(mine.step) == warnings_of(torch_scheduler.step) == []
    assert ours_opt.step is wrapped  # wrapped once only
    assert_exact(ours[1].get_last_lr(), theirs[1].get_last_lr())


def test_overridden_optimizer_step_warns_as_torch():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours, theirs = lr_scheduler.LinearLR(ours_opt), torch_lr_scheduler.LinearLR(torch_opt)
    ours_opt.step = lambda closure=None: None
    torch_opt.step = lambda closure=None: None
    ours_warnings, their_warnings = warnings_of(ours.step), warnings_of(theirs.step)
    assert len(their_warnings) == 1 and "overridden" in their_warnings[0][1]
    assert ours_warnings == their_warnings


def test_get_lr_outside_step_warns_as_torch():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours, theirs = lr_scheduler.ExponentialLR(ours_opt, 0.5), torch_lr_scheduler.ExponentialLR(torch_opt, 0.5)
    ours_warnings, their_warnings = warnings_of(ours.get_lr), warnings_of(theirs.get_lr)
    assert [w[:2] for w in ours_warnings] == [w[:2] for w in their_warnings]
    assert their_warnings[0][1] == ("To get the last learning rate computed by the scheduler, "
                                    "please use `get_last_lr()`.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_exact(ours.get_lr(), theirs.get_lr())


def test_cosine_first_update_after_construction_uses_the_closed_form_as_torch():
    # torch's branch for _step_count == 1 and last_epoch > 0: reached only by updating straight after
    # construction (no step() in between), as SequentialLR-like callers of _update_lr() can.
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours, theirs = lr_scheduler.CosineAnnealingLR(ours_opt, 7, 1e-3), torch_lr_scheduler.CosineAnnealingLR(torch_opt, 7,
                                                                                                           1e-3)
    for _ in range(3):
        ours._update_lr()
        theirs._update_lr()
        assert_same_state(ours, theirs, ours_opt, torch_opt, "_update_lr")


# ---------------------------------------------------------------------------------------- refusals
def step_past_the_end(scheduler: Any) -> None:
    scheduler.optimizer.step()
    scheduler.step()  # step 1 of total_steps=1
    scheduler.optimizer.step()
    scheduler.step()  # refused


REFUSALS = {
    "LambdaLR wrong count": lambda mod, opt: mod.LambdaLR(opt, [lambda e: 1.0] * 3),
    "StepLR not an optimizer": lambda mod, opt: mod.StepLR(object(), 3),
    "LinearLR start 0": lambda mod, opt: mod.LinearLR(opt, 0.0),
    "LinearLR start > 1": lambda mod, opt: mod.LinearLR(opt, 1.5),
    "LinearLR end < 0": lambda mod, opt: mod.LinearLR(opt, 0.5, -0.1),
    "LinearLR end > 1": lambda mod, opt: mod.LinearLR(opt, 0.5, 1.1),
    "OneCycleLR not an optimizer": lambda mod, opt: mod.OneCycleLR(None, 0.1, 10),
    "OneCycleLR no steps": lambda mod, opt: mod.OneCycleLR(opt, 0.1),
    "OneCycleLR epochs only": lambda mod, opt: mod.OneCycleLR(opt, 0.1, epochs=3),
    "OneCycleLR total_steps 0": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 0),
    "OneCycleLR total_steps float": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10.0),
    "OneCycleLR total_steps str": lambda mod, opt: mod.OneCycleLR(opt, 0.1, "10"),
    "OneCycleLR epochs 0": lambda mod, opt: mod.OneCycleLR(opt, 0.1, None, 0, 5),
    "OneCycleLR steps_per_epoch float": lambda mod, opt: mod.OneCycleLR(opt, 0.1, None, 2, 5.0),
    "OneCycleLR pct_start int": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, pct_start=1),
    "OneCycleLR pct_start > 1": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, pct_start=1.2),
    "OneCycleLR pct_start str": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, pct_start="0.3"),
    "OneCycleLR anneal": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, anneal_strategy="exp"),
    "OneCycleLR max_lr count": lambda mod, opt: mod.OneCycleLR(opt, [0.1, 0.2, 0.3], 10),
    "OneCycleLR max_momentum count": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, max_momentum=(0.9,)),
    "OneCycleLR base_momentum count": lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, base_momentum=[0.8] * 3),
    "OneCycleLR step past the end": lambda mod, opt: step_past_the_end(mod.OneCycleLR(opt, 0.1, 1)),
    "SequentialLR none": lambda mod, opt: mod.SequentialLR(opt, [], []),
    "SequentialLR not a scheduler": lambda mod, opt: mod.SequentialLR(opt, [mod.StepLR(opt, 2), 3], [4]),
    "SequentialLR plateau": lambda mod, opt: mod.SequentialLR(opt, [mod.ReduceLROnPlateau(opt)], []),
    "SequentialLR milestones": lambda mod, opt: mod.SequentialLR(opt, [mod.StepLR(opt, 2)], [3]),
    "SequentialLR too few milestones": lambda mod, opt: mod.SequentialLR(
        opt, [mod.StepLR(opt, 2), mod.ExponentialLR(opt, 0.9)], []),
    "ReduceLROnPlateau factor 1": lambda mod, opt: mod.ReduceLROnPlateau(opt, factor=1.0),
    "ReduceLROnPlateau not an optimizer": lambda mod, opt: mod.ReduceLROnPlateau([1]),
    "ReduceLROnPlateau mode": lambda mod, opt: mod.ReduceLROnPlateau(opt, "mean"),
    "ReduceLROnPlateau mode not str": lambda mod, opt: mod.ReduceLROnPlateau(opt, 0),
    "ReduceLROnPlateau threshold_mode": lambda mod, opt: mod.ReduceLROnPlateau(opt, threshold_mode="relative"),
    "ReduceLROnPlateau min_lr count": lambda mod, opt: mod.ReduceLROnPlateau(opt, min_lr=[0.0]),
    "resume without initial_lr": lambda mod, opt: mod.StepLR(opt, 2, 0.1, 3),
    "resume LambdaLR without initial_lr": lambda mod, opt: mod.LambdaLR(opt, lambda e: 1.0, 0),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_match_torch(name):
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours = outcome(lambda: REFUSALS[name](lr_scheduler, ours_opt))
    theirs = outcome(lambda: REFUSALS[name](torch_lr_scheduler, torch_opt))
    assert theirs[0] != "ok", theirs
    assert ours == theirs


def test_resume_names_the_group_without_initial_lr():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours_opt.param_groups[0]["initial_lr"] = torch_opt.param_groups[0]["initial_lr"] = 0.1
    ours = outcome(lambda: lr_scheduler.CosineAnnealingLR(ours_opt, 10, 0.0, 5))
    theirs = outcome(lambda: torch_lr_scheduler.CosineAnnealingLR(torch_opt, 10, 0.0, 5))
    assert ours == theirs and ours[0] == "KeyError" and "param_groups[1]" in ours[1]


def test_a_non_optimizer_is_refused_by_type_name_as_in_torch():
    # Each library refuses the other's optimizer, with the same message.
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    for name, args in (("StepLR", (3,)), ("OneCycleLR", (0.1, 10)), ("ReduceLROnPlateau", ())):
        ours = outcome(partial(getattr(lr_scheduler, name), torch_opt, *args))
        theirs = outcome(partial(getattr(torch_lr_scheduler, name), ours_opt, *args))
        assert ours == theirs == ("TypeError", "SGD is not an Optimizer")


def test_one_cycle_needs_momentum_or_betas_as_in_torch():
    ours_opt, torch_opt = optimizers([0.1, 0.2], "Adagrad")  # neither momentum nor betas
    ours = outcome(lambda: lr_scheduler.OneCycleLR(ours_opt, 0.1, 10))
    theirs = outcome(lambda: torch_lr_scheduler.OneCycleLR(torch_opt, 0.1, 10))
    assert ours == theirs == ("ValueError",
                              "optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    ours_opt, torch_opt = optimizers([0.1, 0.2], "Adagrad")
    pair = build(lambda mod, opt: mod.OneCycleLR(opt, 0.1, 10, cycle_momentum=False), ours_opt, torch_opt)
    advance(*pair, ours_opt, torch_opt, steps=12)  # the 11th step is refused by both


def test_sequential_lr_refuses_a_scheduler_of_another_optimizer_as_torch():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours_other, torch_other = optimizers([0.3, 0.4])
    ours = outcome(lambda: lr_scheduler.SequentialLR(ours_opt, [lr_scheduler.StepLR(ours_other, 2)], []))
    theirs = outcome(lambda: torch_lr_scheduler.SequentialLR(torch_opt, [torch_lr_scheduler.StepLR(torch_other, 2)],
                                                             []))
    # The message shows the other optimizer's repr, which each library writes its own way.
    assert ours[0] == theirs[0] == "ValueError"
    assert ours[1].replace(str(ours_other), "<optimizer>") == theirs[1].replace(str(torch_other), "<optimizer>")


# ---------------------------------------------------------------------------------------- behaviours
def test_nested_sequential_lr_matches_torch():
    def make(mod: Any, opt: Any) -> Any:
        inner = mod.SequentialLR(opt, [mod.LinearLR(opt, 0.1, 1.0, 4), mod.ExponentialLR(opt, 0.9)], [4])
        return mod.SequentialLR(opt, [inner, mod.CosineAnnealingLR(opt, 20, 1e-3), mod.StepLR(opt, 5, 0.5)], [10, 40])
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    # Building the outer one restarts the inner one with a step() before any optimizer.step(), so
    # torch warns about the call order there: tinynn too (build() compares the warnings).
    pair = build(make, ours_opt, torch_opt, quiet=False)
    # At epoch 10 the outer schedule restarts the Cosine one through _update_lr(0) (its closed form);
    # at 40, StepLR's. Both libraries fail alike nowhere and warn nowhere.
    assert advance(*pair, ours_opt, torch_opt)


@pytest.mark.parametrize("min_lr", [1e-3, [1e-3, 1e-4]])
def test_reduce_lr_on_plateau_after_a_new_param_group_as_torch(min_lr):
    """A float min_lr extends to the new group; a list one makes the next cut a RuntimeError."""
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, "min", 0.5, 0, 0.0, "rel", 0, min_lr)
    theirs = torch_lr_scheduler.ReduceLROnPlateau(torch_opt, "min", 0.5, 0, 0.0, "rel", 0, min_lr)
    ours_opt.add_param_group({"params": [Parameter(np.zeros(2))], "lr": 0.3})
    torch_opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.3})
    # Metrics that never improve after the first: a cut at every step from the second on.
    advance(ours, theirs, ours_opt, torch_opt, steps=6, step_args=lambda i: (1.0,))
    assert len(ours.get_last_lr()) == 3


def test_reduce_lr_on_plateau_takes_numpy_and_tensor_metrics():
    ours_opt, torch_opt = optimizers([0.1, 0.2])
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, patience=0)
    theirs = torch_lr_scheduler.ReduceLROnPlateau(torch_opt, patience=0)
    for metric in (3.0, 4.0, 5.0, 1.0):
        ours.step(np.float32(metric))
        theirs.step(torch.tensor(metric))
        assert_same_state(ours, theirs, ours_opt, torch_opt, f"metric {metric}")
    assert math.isclose(ours.get_last_lr()[0], 0.001)


def test_defaults_and_argument_names_match_torch():
    import inspect
    for name in ("LRScheduler", *ALL, "ReduceLROnPlateau"):
        ours = inspect.signature(getattr(lr_scheduler, name).__init__).parameters
        theirs = inspect.signature(getattr(torch_lr_scheduler, name).__init__).parameters
        assert [(p.name, p.default, p.kind) for p in ours.values()] == \
            [(p.name, p.default, p.kind) for p in theirs.values()], name
    assert sorted(lr_scheduler.__all__) == sorted(set(lr_scheduler.__all__) & set(torch_lr_scheduler.__all__))
    assert optim.lr_scheduler is lr_scheduler and "lr_scheduler" in optim.__all__
