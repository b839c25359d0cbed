"""Check a tinynn module against the torch module it mirrors: output, input and parameter gradients.

torch is imported inside ``assert_matches_torch`` only, so ``import tinynn.testing`` works without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinynn.testing.compare import assert_close, to_numpy
from tinynn.testing.gradcheck import default_grad_output
from tinynn.testing.tolerances import TORCH_TOLERANCES


def torch_tolerances(dtype: Any) -> tuple[float, float]:
    """(rtol, atol) for comparing against a torch result of ``dtype`` (a NumPy or torch dtype):
    ``TORCH_TOLERANCES`` in ``tinynn.testing.tolerances``, float32's for any dtype but float64."""
    name = str(dtype).removeprefix("torch.") if type(dtype).__module__ == "torch" else np.dtype(dtype).name
    return TORCH_TOLERANCES.get(name, TORCH_TOLERANCES["float32"])


def _check(actual: Any, expected: Any, name: str, rtol: float | None, atol: float | None) -> None:
    default_rtol, default_atol = torch_tolerances(to_numpy(expected).dtype)
    assert_close(actual, expected, rtol=default_rtol if rtol is None else rtol,
                 atol=default_atol if atol is None else atol, name=name)


def assert_matches_torch(module: Any, torch_module: Any, *inputs: Any, grad_output: Any = None,
                         rtol: float | None = None, atol: float | None = None) -> bool:
    """Run ``module`` and ``torch_module`` on the same inputs and compare everything; return True.

    1. ``torch_module.state_dict()`` is copied into ``module`` by name (``load_state_dict``, strict:
       both must name their parameters alike, e.g. ``0.weight``); the values keep torch's numbers
       and are stored in tinynn's parameter dtype. Both modules' gradients are cleared.
    2. Both forwards run on copies of ``inputs``: torch gets ``torch.from_numpy`` tensors on the
       torch module's device, float ones requiring grad; non-float ones (class indices) do not.
    3. Both backwards run with the same ``grad_output`` (dL/dy, the output's shape); default 1.0
       for a scalar output (a loss), else seeded random values in [-1, 1), never all ones.
    4. Compared with ``assert_close`` (``max|actual - expected| <= atol + rtol * max|expected|``, dtype
       and shape too): the output, each float input's gradient (backward's return value, a tuple
       for several inputs), and each torch parameter's ``.grad`` against tinynn's of that name.

    ``rtol``/``atol``: default by the dtype of torch's value, from ``tinynn.testing.tolerances``
    (float64: 1e-10 relative; float32: 1e-4 relative, 1e-5 absolute). Raises AssertionError naming
    what differs (``output``, ``input 0 gradient``, ``parameter 'weight' gradient``), the worst
    index and both values.
    """
    import torch

    tensors = list(torch_module.parameters()) + list(torch_module.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    module.load_state_dict({key: value.detach().cpu().numpy() for key, value in torch_module.state_dict().items()})
    module.zero_grad()
    torch_module.zero_grad(set_to_none=True)

    ours = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in inputs]
    theirs = []
    for x in inputs:
        if x is None:
            theirs.append(None)
            continue
        tensor = torch.from_numpy(np.array(x, copy=True)).to(device)
        theirs.append(tensor.requires_grad_() if tensor.is_floating_point() else tensor)

    output = module(*ours)
    expected = torch_module(*theirs)
    _check(output, expected, "output", rtol, atol)

    upstream = (default_grad_output(output) if grad_output is None
                else np.array(grad_output, dtype=to_numpy(output).dtype, copy=True))
    returned = module.backward(upstream)
    expected.backward(torch.from_numpy(np.array(upstream, copy=True)).to(device=device, dtype=expected.dtype))

    # A single array for several inputs is the first one's gradient (a loss returns dL/dinput only).
    single = not isinstance(returned, (tuple, list))
    grads = [returned] + [None] * (len(inputs) - 1) if single else list(returned)
    if len(grads) != len(inputs):
        raise AssertionError(f"backward returned {len(grads)} gradients for {len(inputs)} inputs")
    for i, (grad, tensor) in enumerate(zip(grads, theirs)):
        if tensor is None or not tensor.requires_grad or (single and i > 0):
            continue
        name = f"input {i} gradient"
        if tensor.grad is None:
            if grad is not None and np.any(grad):
                raise AssertionError(f"{name}: torch has none (the output does not depend on it), "
                                     "tinynn's backward returned a nonzero one")
        elif grad is None:
            raise AssertionError(f"{name}: tinynn's backward returned None, torch computed one")
        else:
            _check(grad, tensor.grad, name, rtol, atol)

    ours_by_name = dict(module.named_parameters())
    for name, param in torch_module.named_parameters():
        label = f"parameter '{name}' gradient"
        if name not in ours_by_name:
            raise AssertionError(f"{label}: tinynn's module has no parameter '{name}'")
        grad = ours_by_name[name].grad
        if param.grad is None:
            if grad is not None and np.any(grad):
                raise AssertionError(f"{label}: torch has none, tinynn's backward added a nonzero one")
            continue
        if grad is None:
            raise AssertionError(f"{label}: tinynn's backward added none (.grad is None), torch's max |grad| is "
                                 f"{float(param.grad.abs().max()) if param.grad.numel() else 0.0:.3e}")
        _check(grad, param.grad, label, rtol, atol)
    return True
