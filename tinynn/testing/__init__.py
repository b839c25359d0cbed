"""tinynn.testing: check a layer's hand-written backward against finite differences and against torch.

Write a layer, then hold it to two references::

    import numpy as np
    import torch
    import tinynn.nn as nn
    from tinynn.testing import assert_matches_torch, gradcheck

    class LeakyReLU(nn.Module):
        def __init__(self, slope=0.01):
            super().__init__()
            self.slope = slope

        def forward(self, x):
            self.save_for_backward(x)
            return np.where(x > 0, x, self.slope * x)

        def backward(self, grad_output, needs_input_grad=True):
            (x,) = self.saved_tensors()
            return grad_output * np.where(x > 0, 1.0, self.slope)

    x = np.random.default_rng(0).standard_normal((4, 5))
    gradcheck(LeakyReLU(0.1), x)                                   # finite differences, float64
    assert_matches_torch(LeakyReLU(0.1), torch.nn.LeakyReLU(0.1), x)  # output and gradients

Both return True or raise AssertionError naming the gradient that is wrong (``input 0``,
``parameter 'weight'``), its worst index and the two values.

* ``gradcheck(module, *inputs, grad_output=None, eps=1e-6, atol=1e-5, rtol=1e-3)``: every input
  and parameter gradient against central differences of ``sum(grad_output * module(*inputs))``.
* ``assert_matches_torch(module, torch_module, *inputs, grad_output=None, rtol=None, atol=None)``:
  loads torch's weights by name, then compares output, input gradients and parameter gradients.
* ``numerical_grad(f, x, grad_output, eps)``: the central-difference routine behind gradcheck.
* ``assert_close(actual, expected, rtol=..., atol=...)`` and ``to_numpy``: the comparison they use.
* ``tinynn.testing.tolerances``: every tolerance, with the reasoning for its size.
* ``tinynn.testing.strategies``: hypothesis strategies for arrays, gradients and conv/pool
  arguments that torch accepts (import it where hypothesis is installed; this package does not).
* ``replay_torch_dropout(torch_module)``: a context in which tinynn's Dropout/Dropout2d use the masks
  that torch's dropouts in ``torch_module`` drew, in order (run torch's forward first)::

      torch_model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3)).double()
      model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3)).double()
      model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
      x = np.random.default_rng(0).standard_normal((5, 4))
      with replay_torch_dropout(torch_model):
          for step in range(3):
              expected = torch_model(torch.from_numpy(x))  # torch draws its masks...
              output = model(x)                           # ...and tinynn takes them: bit for bit equal

  torch's RNN, LSTM, GRU and MultiheadAttention, which draw inside C++, are replayed too (CPU);
  ``torch_dropout_masks(rng_state, p, shapes)`` reads the masks of such a draw by hand (for
  ``F.scaled_dot_product_attention(..., dropout_p=p)``, say).

Only NumPy is imported here: torch is imported inside ``assert_matches_torch`` and ``replay_torch_dropout``.
"""

from tinynn.testing import tolerances
from tinynn.testing.compare import assert_close, relative_error, to_numpy
from tinynn.testing.dropout import replay_torch_dropout, torch_dropout_masks
from tinynn.testing.gradcheck import default_grad_output, gradcheck, numerical_grad
from tinynn.testing.torch_check import assert_matches_torch, torch_tolerances

__all__ = [
    "assert_close",
    "assert_matches_torch",
    "default_grad_output",
    "gradcheck",
    "numerical_grad",
    "relative_error",
    "replay_torch_dropout",
    "to_numpy",
    "tolerances",
    "torch_dropout_masks",
    "torch_tolerances",
]
