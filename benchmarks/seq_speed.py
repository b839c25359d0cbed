"""Sequence models' speed: one training step of an LSTM and of a Transformer encoder layer, tinynn
(engine and textbook) against torch CPU.

The workloads, float32, each with a Linear head to a 128-symbol vocabulary and cross-entropy over
every position (next-character prediction on random data):

* lstm: ``LSTM(input_size=128, hidden_size=256, num_layers=2)`` on a (64, 32, 128) time-major batch
  (sequence 64, batch 32; 128 is a character embedding's width), ``Linear(256, 128)`` on every
  step's output.
* encoder: ``TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=2048, dropout=0.0,
  batch_first=True)`` on a (32, 128, 128) batch (batch 32, sequence 128), ``Linear(128, 128)`` head.
  2048 is torch's default ``dim_feedforward``, kept so that the layer is the one ``TransformerEncoderLayer
  (128, 4)`` gives; dropout 0 so that both frameworks compute the same thing in training mode.
* encoder_causal: the same with a causal mask (``src_mask`` the square subsequent mask,
  ``is_causal=True``).

One step is conv_speed's training step: forward, cross-entropy, backward, ``SGD(lr=0.01,
momentum=0.9).step()``, ``zero_grad()``, as norm_speed's CNN with BatchNorm; the input needs no
gradient (torch: ``requires_grad`` False; tinynn: ``needs_input_grad=False``). torch's weights are
copied into tinynn by name (``load_state_dict``) and, before any timing, one forward and backward
of each framework is checked to give the same loss and the same gradient of every parameter to
float32 tolerance (``same_work`` in the results): the timings compare equal work.

Timing, allocator and thread handling are ``conv_speed``'s and norm_speed's: blocks of steps,
tinynn and torch alternating, a settling sleep before each block, the median of the rounds' ratios
tinynn/torch; everything twice, with glibc's malloc as it comes and then with its thresholds fixed
(``environment.steady_malloc``); torch on as many threads as tinynn may use
(``tinynn.get_num_threads()``, one per core; ``--torch-threads`` overrides). The textbook path
(``tinynn.textbook()``) is timed beside the engine, so the engine's gain can be read off the same
run. Target: tinynn within 2x of torch CPU's time per step. ``--profile`` adds the time of each
phase (forward, loss, backward, optimizer) of both frameworks and cProfile's view of one tinynn step.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m benchmarks.seq_speed``
(``--quick`` for a smoke run, ``--json`` to keep the figures, ``--workloads lstm`` for some of them).
A workload whose tinynn module does not exist yet (``tinynn.nn.TransformerEncoderLayer``) is
skipped and the results say so. The functions are importable.

The LSTM's time loop is one (32, 256) @ (256, 1024) product per step and layer in the forward
and one in the backward (dh = dB @ W_hh); the input projection and every weight gradient are single
products over all 64 steps (tinynn/nn/rnn.py). Before that change (2026-12-07) each step also did
its own input and weight products, and a step took about 145 ms in some processes and 230 ms in
others, as the hypervisor put the vCPUs on near or far cores (benchmarks/README.md); the loop's
small products are still the part that varies most. Read the LSTM's rounds, not only its median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.conv_speed import (
    ALLOCATORS,
    allocator_heading,
    blas_info,
    compare,
    ratio_text,
    tinynn_train_step,
    torch_train_step,
)

Step = Callable[[], Any]

PATHS = ("engine", "textbook")
WORKLOADS = ("lstm", "encoder", "encoder_causal")
LR, MOMENTUM = 0.01, 0.9
# (steps per block, rounds) per workload and preset.
BLOCKS = {"quick": {"lstm": (2, 3), "encoder": (2, 3), "encoder_causal": (2, 3)},
          "full": {"lstm": (5, 11), "encoder": (5, 11), "encoder_causal": (5, 11)}}
# The same-work check. The loss: relative error (tinynn.testing.compare.relative_error), float32's
# usual 1e-4. Every parameter's gradient: ||tinynn's - torch's|| / ||torch's|| (2-norms), at most 1e-3.
# Not the largest entry's error, as elsewhere in tinynn's tests: a ReLU pre-activation within rounding
# of 0 can fall on either side of the kink, and the unit's whole contribution then goes or stays. At
# seed 0 the encoder had one such unit in 8.4M (6.0e-8 in torch, -3.7e-8 in tinynn), which moved
# linear1's weight gradient by 4.0e-3 of its largest entry and by 1.8e-4 in norm; a wrong term in a
# backward moves it by order 1. (torch in float32 against torch in float64: 4e-7 either way.)
LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class Sizes:
    """One workload's shapes: ``seq`` positions, ``batch`` sequences, ``width`` the input's features
    (the LSTM's input_size, the encoder's d_model), ``hidden`` the LSTM's hidden size or the encoder's
    dim_feedforward, ``layers`` the LSTM's num_layers or the encoder's nhead, ``vocab`` the head's outputs."""

    seq: int
    batch: int
    width: int
    hidden: int
    layers: int
    vocab: int = 128


SIZES = {"lstm": Sizes(seq=64, batch=32, width=128, hidden=256, layers=2),
         "encoder": Sizes(seq=128, batch=32, width=128, hidden=2048, layers=4),
         "encoder_causal": Sizes(seq=128, batch=32, width=128, hidden=2048, layers=4)}


def describe(name: str, sizes: Sizes) -> str:
    """The workload in words, as the report prints it."""
    if name == "lstm":
        return (f"LSTM({sizes.width}, {sizes.hidden}, num_layers={sizes.layers}) on seq {sizes.seq} x batch "
                f"{sizes.batch} (time-major), Linear({sizes.hidden}, {sizes.vocab}) head")
    mask = ", causal mask" if name == "encoder_causal" else ""
    return (f"TransformerEncoderLayer(d_model={sizes.width}, nhead={sizes.layers}, dim_feedforward={sizes.hidden}, "
            f"dropout=0.0, batch_first=True) on batch {sizes.batch} x seq {sizes.seq}{mask}, "
            f"Linear({sizes.width}, {sizes.vocab}) head")


def missing(name: str) -> str | None:
    """Why tinynn cannot run workload ``name`` yet (its module is not written), or None."""
    if name.startswith("encoder"):
        import tinynn.nn

        if not hasattr(tinynn.nn, "TransformerEncoderLayer"):
            return "tinynn.nn.TransformerEncoderLayer does not exist yet"
    return None


def _data(name: str, sizes: Sizes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 input (LSTM time-major (T, N, F), encoder batch-first (N, T, E)) and the flattened
    next-symbol targets, the same for both frameworks."""
    rng = np.random.default_rng(seed)
    shape = (sizes.seq, sizes.batch, sizes.width) if name == "lstm" else (sizes.batch, sizes.seq, sizes.width)
    return rng.standard_normal(shape, dtype=np.float32), rng.integers(0, sizes.vocab, sizes.seq * sizes.batch)


# ------------------------------------------------------------------------------------ torch
def torch_model(name: str, sizes: Sizes, seed: int = 0) -> Any:
    """The workload's torch model (initialised from ``seed``); its forward returns (positions, vocab) logits."""
    import torch

    torch.manual_seed(seed)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if name == "lstm":
                self.body = torch.nn.LSTM(sizes.width, sizes.hidden, num_layers=sizes.layers)
                self.head = torch.nn.Linear(sizes.hidden, sizes.vocab)
            else:
                self.body = torch.nn.TransformerEncoderLayer(sizes.width, sizes.layers, sizes.hidden, dropout=0.0,
                                                             batch_first=True)
                self.head = torch.nn.Linear(sizes.width, sizes.vocab)
            self.causal = name == "encoder_causal"
            self.mask = torch.nn.Transformer.generate_square_subsequent_mask(sizes.seq) if self.causal else None

        def forward(self, x: Any) -> Any:
            if name == "lstm":
                hidden, _ = self.body(x)
            else:
                hidden = self.body(x, src_mask=self.mask, is_causal=self.causal)
            return self.head(hidden.reshape(-1, hidden.shape[-1]))

    return Model()


# ------------------------------------------------------------------------------------ tinynn
def tinynn_model(name: str, sizes: Sizes, state_dict: dict[str, np.ndarray] | None = None) -> Any:
    """The same model in tinynn, with torch's parameter names (``body.*``, ``head.*``); its
    ``backward(grad_logits, needs_input_grad)`` returns the input's gradient (or None)."""
    import tinynn.nn as nn

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if name == "lstm":
                self.body = nn.LSTM(sizes.width, sizes.hidden, num_layers=sizes.layers)
                self.head = nn.Linear(sizes.hidden, sizes.vocab)
            else:
                self.body = nn.TransformerEncoderLayer(sizes.width, sizes.layers, sizes.hidden, dropout=0.0,
                                                       batch_first=True)
                self.head = nn.Linear(sizes.width, sizes.vocab)
            self.causal = name == "encoder_causal"
            self.mask = causal_mask(sizes.seq) if self.causal else None

        def forward(self, x: np.ndarray) -> np.ndarray:
            if name == "lstm":
                hidden, _ = self.body(x)
            else:
                hidden = self.body(x, src_mask=self.mask, is_causal=self.causal)
            object.__setattr__(self, "hidden_shape", hidden.shape)
            return self.head(hidden.reshape(-1, hidden.shape[-1]))

        def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
            grad_hidden = self.head.backward(grad_output).reshape(self.hidden_shape)
            return self.body.backward(grad_hidden, needs_input_grad=needs_input_grad)

    model = Model()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def causal_mask(length: int) -> np.ndarray:
    """torch's ``Transformer.generate_square_subsequent_mask``: 0 on and below the diagonal, -inf above."""
    return np.triu(np.full((length, length), -np.inf, dtype=np.float32), 1)


def torch_state(model: Any) -> dict[str, np.ndarray]:
    """A torch model's parameters and buffers as NumPy arrays, by name (copies)."""
    return {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}


# ------------------------------------------------------------------------------------ the step
@dataclass
class Pair:
    """One workload in both frameworks: the models (same weights) and their data."""

    name: str
    sizes: Sizes
    tinynn: Any
    torch: Any
    inputs: np.ndarray
    targets: np.ndarray


def pair(name: str, sizes: Sizes | None = None, seed: int = 0) -> Pair:
    """Workload ``name`` built in torch, then in tinynn from torch's weights."""
    sizes = sizes or SIZES[name]
    theirs = torch_model(name, sizes, seed)
    ours = tinynn_model(name, sizes, torch_state(theirs))
    inputs, targets = _data(name, sizes, seed)
    return Pair(name, sizes, ours, theirs, inputs, targets)


def same_work(workload: Pair) -> dict[str, Any]:
    """One forward, loss and backward of each framework from the same weights: the two losses and
    every parameter's gradient, compared (see ``LOSS_RTOL``, ``GRAD_RTOL``; the gradients' largest
    entry's error is recorded too); raises AssertionError if they differ past those. Gradients are
    cleared afterwards."""
    import torch

    import tinynn.nn as nn
    from tinynn.testing.compare import relative_error

    loss_fn = nn.CrossEntropyLoss()
    ours = loss_fn(workload.tinynn(workload.inputs), workload.targets)
    workload.tinynn.backward(loss_fn.backward(), needs_input_grad=False)
    theirs = torch.nn.functional.cross_entropy(workload.torch(torch.from_numpy(workload.inputs)),
                                               torch.from_numpy(workload.targets))
    theirs.backward()
    torch_grads = {key: param.grad for key, param in workload.torch.named_parameters()}
    ours_grads = {key: param.grad for key, param in workload.tinynn.named_parameters()}
    no_grad = sorted(key for grads in (ours_grads, torch_grads) for key, grad in grads.items() if grad is None)
    if no_grad:
        raise AssertionError(f"{workload.name}: no gradient for {no_grad}")
    torch_grads = {key: grad.numpy() for key, grad in torch_grads.items()}
    if set(ours_grads) != set(torch_grads):
        raise AssertionError(f"{workload.name}: parameters differ: {sorted(set(ours_grads) ^ set(torch_grads))}")
    norm_errors = {key: _norm_error(grad, torch_grads[key]) for key, grad in ours_grads.items()}
    max_errors = {key: relative_error(grad, torch_grads[key]) for key, grad in ours_grads.items()}
    loss_error = relative_error(ours, theirs)
    worst = max(norm_errors, key=norm_errors.__getitem__)
    worst_entry = max(max_errors, key=max_errors.__getitem__)
    result = {"loss_tinynn": float(ours), "loss_torch": theirs.item(), "loss_rel_err": loss_error,
              "parameters": len(ours_grads),
              "numbers": int(sum(param.data.size for param in workload.tinynn.parameters())),
              "grad_norm_rel_err": norm_errors[worst], "worst_grad": worst,
              "grad_max_rel_err": max_errors[worst_entry], "worst_grad_entry": worst_entry,
              "loss_rtol": LOSS_RTOL, "grad_rtol": GRAD_RTOL}
    if not loss_error <= LOSS_RTOL or not norm_errors[worst] <= GRAD_RTOL:
        raise AssertionError(f"{workload.name}: tinynn and torch did not compute the same step: {result}")
    workload.tinynn.zero_grad()
    workload.torch.zero_grad()
    return result


def _norm_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 when both are zero, inf when only expected is)."""
    diff = float(np.linalg.norm(actual.astype(np.float64) - expected.astype(np.float64)))
    scale = float(np.linalg.norm(expected.astype(np.float64)))
    return 0.0 if diff == 0 else diff / scale if scale > 0 else float("inf")


def steps(workload: Pair, textbook: bool = False) -> tuple[Step, Step]:
    """The timed training steps (tinynn on the engine or the textbook path, and torch); each returns its loss."""
    import torch

    import tinynn

    tinynn_step = tinynn_train_step(workload.tinynn, lr=LR, momentum=MOMENTUM)
    torch_step = torch_train_step(workload.torch, lr=LR, momentum=MOMENTUM)
    inputs_t, targets_t = torch.from_numpy(workload.inputs), torch.from_numpy(workload.targets)

    def run_tinynn() -> Any:
        with tinynn.textbook(textbook):
            return tinynn_step(workload.inputs, workload.targets)

    return run_tinynn, lambda: torch_step(inputs_t, targets_t)


# ------------------------------------------------------------------------------------ where the time goes
def phases(workload: Pair, textbook: bool = False, calls: int = 3) -> dict[str, dict[str, float]]:
    """Median seconds of each phase of the step (forward, loss, backward, optimizer step and
    zero_grad) over ``calls`` steps after a warm-up one, per framework."""
    import torch

    import tinynn
    import tinynn.nn as nn
    from tinynn.optim import SGD

    loss_fn = nn.CrossEntropyLoss()
    optimizer = SGD(workload.tinynn.parameters(), lr=LR, momentum=MOMENTUM)
    torch_optimizer = torch.optim.SGD(workload.torch.parameters(), lr=LR, momentum=MOMENTUM)
    inputs_t, targets_t = torch.from_numpy(workload.inputs), torch.from_numpy(workload.targets)
    times: dict[str, dict[str, list[float]]] = {"tinynn": {}, "torch": {}}
    clock = [0.0]

    def lap(framework: str, phase: str) -> None:
        now = time.perf_counter()
        times[framework].setdefault(phase, []).append(now - clock[0])
        clock[0] = now

    for _ in range(calls + 1):
        with tinynn.textbook(textbook):
            clock[0] = time.perf_counter()
            logits = workload.tinynn(workload.inputs)
            lap("tinynn", "forward")
            loss_fn(logits, workload.targets)
            lap("tinynn", "loss")
            workload.tinynn.backward(loss_fn.backward(), needs_input_grad=False)
            lap("tinynn", "backward")
            optimizer.step()
            optimizer.zero_grad()
            lap("tinynn", "optimizer")
        clock[0] = time.perf_counter()
        logits_t = workload.torch(inputs_t)
        lap("torch", "forward")
        loss_t = torch.nn.functional.cross_entropy(logits_t, targets_t)
        lap("torch", "loss")
        loss_t.backward()
        lap("torch", "backward")
        torch_optimizer.step()
        torch_optimizer.zero_grad()
        lap("torch", "optimizer")
    return {framework: {phase: statistics.median(values[1:]) for phase, values in by_phase.items()}
            for framework, by_phase in times.items()}


def profile_step(workload: Pair, textbook: bool = False, calls: int = 1) -> list[dict[str, Any]]:
    """cProfile of ``calls`` tinynn steps after an untimed one: tinynn's functions by cumulative time."""
    from benchmarks.profiling import _profile

    step, _ = steps(workload, textbook)
    step()
    return _profile(workload.name, workload.name, f"{calls} steps", lambda: [step() for _ in range(calls)])[
        "tinynn_by_cumulative_time"]


# ------------------------------------------------------------------------------------ main
def run(quick: bool = False, settle_s: float = 0.25, workloads: tuple[str, ...] = WORKLOADS,
        sizes: dict[str, Sizes] | None = None, blocks: dict[str, tuple[int, int]] | None = None,
        torch_threads: int | None = None, profile: bool = False) -> dict[str, Any]:
    """Every workload, tinynn's engine and textbook paths against torch, under each allocator (the
    steady one second: ``steady_malloc`` cannot be undone in a process). ``torch_threads``: torch's
    thread count for the run (default: tinynn's). ``sizes`` and ``blocks`` replace the workloads'
    shapes and their (steps per block, rounds), for tests."""
    import torch

    import tinynn

    threads_before = torch.get_num_threads()
    torch.set_num_threads(tinynn.get_num_threads() if torch_threads is None else torch_threads)
    try:
        return _run(quick, settle_s, workloads, {**SIZES, **(sizes or {})},
                    blocks or BLOCKS["quick" if quick else "full"], profile)
    finally:
        torch.set_num_threads(threads_before)


def _run(quick: bool, settle_s: float, workloads: tuple[str, ...], sizes: dict[str, Sizes],
         blocks: dict[str, tuple[int, int]], profile: bool) -> dict[str, Any]:
    from benchmarks.environment import cpu_model, steady_malloc

    skipped = {name: reason for name in workloads if (reason := missing(name))}
    names = [name for name in workloads if name not in skipped]
    results: dict[str, Any] = {
        "cpu": cpu_model(), "blas": blas_info(), "load_average_before": os.getloadavg()[0],
        "step": f"forward, cross-entropy, backward, SGD(lr={LR}, momentum={MOMENTUM}).step(), zero_grad()",
        "workloads": {name: {"sizes": vars(sizes[name]), "description": describe(name, sizes[name])}
                      for name in names},
        "skipped": skipped, "same_work": {}}
    for allocator in ALLOCATORS:
        if allocator == "steady":
            results["malloc"] = steady_malloc()
        results[allocator] = {}
        for name in names:
            for path in PATHS:
                workload = pair(name, sizes[name])
                check = same_work(workload)  # before the first timed step: the same weights in both
                results["same_work"].setdefault(name, check)
                count, rounds = blocks[name]
                results[allocator][f"{name} {path}"] = compare(*steps(workload, textbook=path == "textbook"),
                                                               count, rounds, settle_s, warmup=2)
    results["load_average_after"] = os.getloadavg()[0]
    if profile:
        results["phases"] = {f"{name} {path}": phases(pair(name, sizes[name]), textbook=path == "textbook")
                             for name in names for path in PATHS}
        results["profile"] = {name: profile_step(pair(name, sizes[name])) for name in names}
    return results


def report(results: dict[str, Any]) -> str:
    blas = results["blas"]
    lines = [f"One training step per workload, float32: {results['step']}",
             f"{results['cpu']}; numpy {blas['numpy']} ({blas.get('numpy_blas')}), torch {blas['torch']} "
             f"({blas['torch_threads']} threads), {blas['cpus']} CPUs; load average "
             f"{results['load_average_before']:.1f} before the timings, {results['load_average_after']:.1f} after"]
    for name, workload in results["workloads"].items():
        check = results["same_work"][name]
        lines.append(f"{name}: {workload['description']}; {check['numbers']:,} parameters. Same work: loss "
                     f"{check['loss_tinynn']:.6f} (tinynn) vs {check['loss_torch']:.6f} (torch), relative error "
                     f"{check['loss_rel_err']:.1e}; gradients of {check['parameters']} parameters: worst in norm "
                     f"{check['worst_grad']} {check['grad_norm_rel_err']:.1e}, worst entry {check['worst_grad_entry']} "
                     f"{check['grad_max_rel_err']:.1e} of its largest")
    for name, reason in results["skipped"].items():
        lines.append(f"{name}: skipped, {reason}")
    for allocator in ALLOCATORS:
        lines.append(allocator_heading(results, allocator))
        for key, timing in results[allocator].items():
            lines.append(f"  {key}: tinynn {timing['tinynn_s'] * 1e3:.1f} ms, torch {timing['torch_s'] * 1e3:.1f} ms "
                         f"per step; {ratio_text(timing)}")
    for key, by_framework in results.get("phases", {}).items():
        lines.append(f"phases of {key} (median ms per step): " + "; ".join(
            f"{framework} " + ", ".join(f"{phase} {seconds * 1e3:.1f}" for phase, seconds in by_phase.items())
            for framework, by_phase in by_framework.items()))
    for name, rows in results.get("profile", {}).items():
        lines.append(f"cProfile of tinynn's {name} step (engine), its functions by cumulative time:")
        lines += [f"  {row['cumulative_percent']:5.1f}%  {row['cumulative_s'] * 1e3:8.1f} ms  {row['calls']:6d} calls  "
                  f"{row['function']}" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few blocks of steps")
    parser.add_argument("--settle", type=float, default=0.25, help="seconds of sleep before each timed block")
    parser.add_argument("--torch-threads", type=int, help="torch's thread count (default: tinynn's)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"some of {', '.join(WORKLOADS)}")
    parser.add_argument("--profile", action="store_true", help="also time each phase and profile one tinynn step")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    workloads = tuple(name.strip() for name in args.workloads.split(",") if name.strip())
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}: choose from {', '.join(WORKLOADS)}")
    results = run(args.quick, args.settle, workloads, torch_threads=args.torch_threads, profile=args.profile)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
