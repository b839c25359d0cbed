"""Give tinynn's dropout layers the masks torch's drew, so a model with dropout can be compared
with its torch twin number for number.

torch and tinynn draw from different generators, so their dropout masks differ. Inside
``replay_torch_dropout(torch_model)``:

1. each ``torch.nn.Dropout`` / ``Dropout2d`` in ``torch_model`` saves torch's RNG state before its
   forward (a pre-hook); after it (a forward hook) the same dropout (in place if the module is) is
   replayed on a tensor of ones of the input's shape, dtype, layout and device under that saved
   state (the CUDA generator's too for a CUDA input), which draws the very
   same mask (``mask = replayed != 0``, reduced to ``(N, C, 1, ..., 1)`` for Dropout2d); the state
   is then put back to where the real forward left it, so torch's later draws are unchanged.
   The mask joins a queue, in the order torch's dropouts ran.
   torch's ``RNN``, ``LSTM``, ``GRU`` and ``MultiheadAttention`` draw their dropouts inside one C++
   call (between an RNN's layers; on the attention probabilities), out of reach of any hook. Those
   modules' hooks save the RNG state before the forward and replay, after it, the draws the forward
   made (``torch_dropout_masks``): one mask (T, N, D * H) per layer but the last, and one (N * H,
   L, S) for the attention. CPU only: on CUDA, cuDNN's RNN and the fused attention kernels draw
   their own way, and the replay refuses.
2. tinynn's generator (``tinynn.default_generator()``) is replaced by a stand-in whose
   ``random(shape)``, the one call tinynn's dropout makes, pops the next mask and returns values
   that tinynn's keep rule ``random(shape) >= p`` turns back into exactly that mask (the largest
   float below 1 where torch kept, 0.0 where it dropped). Every other method goes to the real
   generator, and the real one is back on exit.

Run torch's forward first, then tinynn's; several dropouts per forward and many steps are fine.
Masks are only queued when torch drew one (training mode, 0 < p < 1, a non-empty input), which is
exactly when tinynn draws. A tinynn dropout asking for a mask of another shape, or when the queue is
empty, raises RuntimeError saying what it asked for and what torch had; so does leaving the block
with masks that tinynn never used (``strict=False`` allows that).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from tinynn import _random

_KEEP, _DROP = float(np.nextafter(1.0, 0.0)), 0.0  # >= any p < 1, < any p > 0


class TorchDropoutMasks:
    """The queue of torch's masks, and tinynn's stand-in generator that hands them out in order."""

    def __init__(self, real_generator: np.random.Generator) -> None:
        self._real = real_generator
        self._queue: deque[tuple[str, np.ndarray]] = deque()
        self.used = 0  # masks handed to tinynn so far

    def pending(self) -> int:
        """How many of torch's masks tinynn has not used yet."""
        return len(self._queue)

    def push(self, name: str, mask: np.ndarray) -> None:
        self._queue.append((name, mask))

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> np.ndarray:
        """The next of torch's masks as uniform-like values: keep -> just below 1, drop -> 0."""
        shape = () if size is None else (tuple(size) if np.iterable(size) else (int(size),))
        if not self._queue:
            raise RuntimeError(
                f"replay_torch_dropout: tinynn's dropout asked for a mask of shape {shape}, but torch's "
                f"dropouts left none ({self.used} used so far): run the torch forward before tinynn's, with "
                "the same dropout layers in training mode"
            )
        name, mask = self._queue[0]
        if mask.shape != shape:
            raise RuntimeError(
                f"replay_torch_dropout: tinynn's dropout asked for a mask of shape {shape}, but torch's next "
                f"one, from its module '{name}', has shape {mask.shape}: the two models' dropouts differ or "
                "run in a different order"
            )
        self._queue.popleft()
        self.used += 1
        return np.where(mask, _KEEP, _DROP).astype(dtype, copy=False)

    def __getattr__(self, name: str) -> Any:  # integers, permutation, normal...: the real generator
        return getattr(self._real, name)


def _replay(state: tuple[Any, Any], device: Any, draw: Any) -> Any:
    """Run ``draw()`` with torch's RNG set to ``state`` (CPU, and CUDA for a CUDA ``device``), then
    put the RNG back where it was, so torch's later draws are unchanged."""
    import torch

    cpu_state, cuda_state = state
    after = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda_state is not None else None)
    torch.set_rng_state(cpu_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
    try:
        return draw()
    finally:
        torch.set_rng_state(after[0])
        if after[1] is not None:
            torch.cuda.set_rng_state(after[1], device)


def _read_mask(module: Any, input: Any, state: tuple[Any, Any]) -> np.ndarray:
    """The mask ``module`` (torch Dropout or Dropout2d) drew from RNG ``state``, replayed on ones."""
    import warnings

    import torch
    import torch.nn.functional as TF

    def draw() -> Any:
        ones = torch.ones_like(input)  # same dtype, device and memory layout: the same draws
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropout2d's rank warnings were already given by the real call
            # With the module's own ``inplace``: on CUDA the in-place dropout draws through another
            # kernel (bernoulli_) than the out-of-place one (fused), so the two masks differ.
            return (TF.dropout2d if channelwise else TF.dropout)(ones, module.p, True, module.inplace)

    channelwise = isinstance(module, torch.nn.Dropout2d)
    mask = (_replay(state, input.device, draw) != 0).cpu().numpy()
    if channelwise:  # one draw per (n, c), broadcast over the rest
        mask = mask.reshape(*mask.shape[:2], -1)[..., :1].reshape(*mask.shape[:2], *[1] * (mask.ndim - 2))
    return mask


def torch_dropout_masks(rng_state: Any, p: float, shapes: list[tuple[int, ...]], dtype: Any = None) -> list[np.ndarray]:
    """The masks that ``at::dropout(x, p, train=True)`` calls on contiguous CPU tensors of ``shapes``
    drew, one after another, from torch's CPU generator in ``rng_state`` (``torch.get_rng_state()``
    taken before them); bool arrays, True = kept. torch's own RNG is left as it was.

    For dropouts that torch draws inside one C++ call, where no module hook can see them: between an
    RNN's layers (shape (T, N, D * H), layer by layer) and on scaled_dot_product_attention's
    probabilities ((..., L, S), the math kernel that CPU torch runs whenever dropout_p > 0). Turn a mask
    into tinynn's noise as torch does: ``mask.astype(dtype) / dtype(1 - p)``.
    """
    import torch
    import torch.nn.functional as TF

    dtype = torch.float32 if dtype is None else dtype

    def draw() -> list[np.ndarray]:
        with torch.no_grad():
            return [(TF.dropout(torch.ones(shape, dtype=dtype), p, True) != 0).numpy() for shape in shapes]

    return _replay((rng_state, None), None, draw)


def _inner_shapes(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list, bool]:
    """The shapes of the dropouts torch draws inside an RNN's or MultiheadAttention's forward (none in
    eval mode, for p 0 or 1, or an empty input: then torch draws nothing), and whether they are on CUDA."""
    import torch

    input, p = args[0], module.dropout
    if not module.training or not 0 < p < 1 or (torch.is_tensor(input) and input.numel() == 0):
        return [], False
    if not torch.is_tensor(input):
        raise RuntimeError(f"replay_torch_dropout: {type(module).__name__} was given a {type(input).__name__}; "
                           "only the dropout of a padded tensor input is replayed")
    if isinstance(module, torch.nn.RNNBase):
        if module.num_layers == 1:
            return [], False
        batched = input.dim() == 3
        steps, batch = input.shape[:2] if batched else (input.shape[0], 1)
        if batched and module.batch_first:
            steps, batch = batch, steps
        width = module.hidden_size * (2 if module.bidirectional else 1)
        return [(steps, batch, width)] * (module.num_layers - 1), input.is_cuda
    key = args[1] if len(args) > 1 else kwargs["key"]
    batched = input.dim() == 3
    target, source, batch = input.shape[0], key.shape[0], input.shape[1] if batched else 1
    if batched and module.batch_first:
        target, source, batch = input.shape[1], key.shape[1], input.shape[0]
    source += int(module.bias_k is not None) + int(module.add_zero_attn)
    return [(batch * module.num_heads, target, source)], input.is_cuda  # tinynn's (N * H, L, S)


@contextlib.contextmanager
def replay_torch_dropout(torch_module: Any, strict: bool = True) -> Iterator[TorchDropoutMasks]:
    """Inside, tinynn's dropouts use the masks that the dropouts in ``torch_module`` drew, in order.

    ``torch_module``: a torch.nn.Module (any depth); its Dropout, Dropout2d, RNN, LSTM, GRU
    and MultiheadAttention submodules are hooked.
    Yields the queue (``pending()``, ``used``). ``strict``: raise on exit if masks are left unused.
    Raises RuntimeError on a shape mismatch or an empty queue (see the module docstring).
    """
    import torch

    masks = TorchDropoutMasks(_random.default_generator())
    saved_states: dict[int, tuple[Any, Any]] = {}
    handles = []

    def before(module: Any, args: tuple[Any, ...]) -> None:
        input = args[0]
        saved_states[id(module)] = (torch.get_rng_state(),
                                    torch.cuda.get_rng_state(input.device) if input.is_cuda else None)

    def after(name: str, module: Any, args: tuple[Any, ...], output: Any) -> None:
        input, state = args[0], saved_states.pop(id(module))
        if module.training and 0 < module.p < 1 and input.numel() > 0:  # torch drew a mask
            masks.push(name, _read_mask(module, input, state))

    def before_inner(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        saved_states[id(module)] = torch.get_rng_state()

    def after_inner(name: str, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        state = saved_states.pop(id(module))
        shapes, on_cuda = _inner_shapes(module, args, kwargs)
        if shapes and on_cuda:
            raise RuntimeError(f"replay_torch_dropout: the dropout inside '{name}' ({type(module).__name__}) ran "
                               "on CUDA, whose fused kernels draw masks that cannot be replayed: compare on the CPU")
        for mask in torch_dropout_masks(state, module.dropout, shapes, args[0].dtype):
            masks.push(name, mask)

    for name, module in torch_module.named_modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(
                lambda module, args, output, name=name: after(name or "(root)", module, args, output)))
        elif isinstance(module, (torch.nn.RNNBase, torch.nn.MultiheadAttention)):
            handles.append(module.register_forward_pre_hook(before_inner, with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda module, args, kwargs, output, name=name: after_inner(name or "(root)", module, args, kwargs,
                                                                            output), with_kwargs=True))
    real = _random._generator
    _random._generator = masks
    try:
        yield masks
    finally:
        _random._generator = real
        for handle in handles:
            handle.remove()
    if strict and masks.pending():
        raise RuntimeError(
            f"replay_torch_dropout: {masks.pending()} of torch's dropout masks were never used by tinynn "
            f"(next from module '{masks._queue[0][0]}'): tinynn ran fewer dropout forwards than torch"
        )
