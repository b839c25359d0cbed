"""Recurrent cells: one time step of an Elman RNN, an LSTM and a GRU, each forward beside its backward.

Every cell starts with the same two affine maps of the step's input x (N, input_size) and the
previous hidden state h (N, hidden_size), stacked by gate in torch's order::

    gates_ih = x @ W_ih.T + b_ih        gates_hh = h @ W_hh.T + b_hh        (N, k * hidden_size)

so every backward ends the same way (``_affine_backward``): from dA = dL/d(gates_ih) and
dB = dL/d(gates_hh), dx = dA @ W_ih, dh += dB @ W_hh, dW_ih = dA.T @ x, dW_hh = dB.T @ h,
db_ih = dA.sum(0), db_hh = dB.sum(0). For the RNN and the LSTM the two sums simply add, so dA = dB.

Between the two sits each cell's "gates" part (``rnn_gates``, ``lstm_gates``, ``gru_gates`` and
their backwards): the nonlinearities from (gates_ih, gates_hh) to h', and from dL/dh' back to
(dA, dB). A cell is ``_affine`` + gates; the layers in ``tinynn/nn/rnn.py`` call the gates once
per time step but do the affine maps' weight products once for the whole sequence.

The functions take batched 2-D arrays; the modules below also accept one unbatched sample (1-D),
as torch does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32
from tinynn.nn import init
from tinynn.nn.activation import sigmoid, sigmoid_backward, tanh, tanh_backward
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter

Grads = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _project(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """input @ W.T + b: one of the two affine maps, for one step (N, ...) or all steps at once."""
    output = input @ weight.T
    return output if bias is None else output + bias


def _affine(input: np.ndarray, hx: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
            bias_ih: np.ndarray | None, bias_hh: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(x @ W_ih.T + b_ih, h @ W_hh.T + b_hh), each (N, k * hidden_size)."""
    return _project(input, weight_ih, bias_ih), _project(hx, weight_hh, bias_hh)


def _affine_backward(grad_ih: np.ndarray, grad_hh: np.ndarray, input: np.ndarray, hx: np.ndarray,
                     weight_ih: np.ndarray, weight_hh: np.ndarray, has_bias: bool) -> Grads:
    """(dx, dh, dW_ih, dW_hh, db_ih, db_hh) from dL/d(gates_ih) and dL/d(gates_hh) (see the module docstring)."""
    return (grad_ih @ weight_ih, grad_hh @ weight_hh, grad_ih.T @ input, grad_hh.T @ hx,
            grad_ih.sum(0) if has_bias else None, grad_hh.sum(0) if has_bias else None)


# ---------------------------------------------------------------------------------------- Elman RNN
def rnn_gates(gates_ih: np.ndarray, gates_hh: np.ndarray, nonlinearity: str = "tanh") -> np.ndarray:
    """h' = act(gates_ih + gates_hh), act tanh or relu."""
    pre_activation = gates_ih + gates_hh
    return tanh(pre_activation) if nonlinearity == "tanh" else np.maximum(pre_activation, 0)


def rnn_gates_backward(grad_h_new: np.ndarray, h_new: np.ndarray, nonlinearity: str = "tanh") -> np.ndarray:
    """dP = dh' * (1 - h'^2) for tanh, dh' * [h' > 0] for relu (0 at the kink, as torch); dA = dB = dP."""
    if nonlinearity == "tanh":
        return tanh_backward(grad_h_new, h_new)
    return np.where(h_new > 0, grad_h_new, 0)


def rnn_cell(input: np.ndarray, hx: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
             bias_ih: np.ndarray | None = None, bias_hh: np.ndarray | None = None,
             nonlinearity: str = "tanh") -> np.ndarray:
    """h' = act(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh), act tanh or relu.

    Shapes: input (N, input_size), hx (N, H), W_ih (H, input_size), W_hh (H, H), biases (H,) -> (N, H).
    The backward needs only h' (and x, h): both activations' derivatives are functions of their output.
    """
    return rnn_gates(*_affine(input, hx, weight_ih, weight_hh, bias_ih, bias_hh), nonlinearity)


def rnn_cell_backward(grad_h_new: np.ndarray, input: np.ndarray, hx: np.ndarray, h_new: np.ndarray,
                      weight_ih: np.ndarray, weight_hh: np.ndarray, has_bias: bool = True,
                      nonlinearity: str = "tanh") -> Grads:
    """Gradients of ``rnn_cell`` from dL/dh' and its output h' (``rnn_gates_backward``, then the affine
    maps'). Returns (dx, dh, dW_ih, dW_hh, db_ih, db_hh); the biases' None without bias.
    """
    grad_pre = rnn_gates_backward(grad_h_new, h_new, nonlinearity)
    return _affine_backward(grad_pre, grad_pre, input, hx, weight_ih, weight_hh, has_bias)


# ---------------------------------------------------------------------------------------- LSTM
def lstm_gates(gates_ih: np.ndarray, gates_hh: np.ndarray,
               cx: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """The LSTM's gates, in torch's order i, f, g, o (4 blocks of H along the last axis)::

        i, f, g, o = split(gates_ih + gates_hh, 4)
        i, f, o = sigmoid(i), sigmoid(f), sigmoid(o);  g = tanh(g)
        c' = f * c + i * g
        h' = o * tanh(c')

    Returns (h', c', saved) with saved = (i, f, g, o, tanh(c')), the activated gates the backward needs.
    """
    in_gate, forget_gate, cell_gate, out_gate = np.split(gates_ih + gates_hh, 4, axis=1)
    in_gate, forget_gate, out_gate = sigmoid(in_gate), sigmoid(forget_gate), sigmoid(out_gate)
    cell_gate = tanh(cell_gate)
    c_new = forget_gate * cx + in_gate * cell_gate
    tanh_c_new = tanh(c_new)
    h_new = out_gate * tanh_c_new
    return h_new, c_new, (in_gate, forget_gate, cell_gate, out_gate, tanh_c_new)


def lstm_gates_backward(grad_h_new: np.ndarray, grad_c_new: np.ndarray, cx: np.ndarray,
                        saved: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``lstm_gates``' backward from dL/dh' and dL/dc' (the cell state also flows to the next step)::

        dc' (total) = dc' + dh' * o * (1 - tanh(c')^2)          h' = o * tanh(c') reaches c' too
        do = dh' * tanh(c')
        di = dc' * g,   df = dc' * c,   dg = dc' * i,   dc = dc' * f
        pre-activation: di * i (1 - i), df * f (1 - f), dg * (1 - g^2), do * o (1 - o)

    Returns (dA, dc): dA = dB, the four pre-activation blocks side by side.
    """
    in_gate, forget_gate, cell_gate, out_gate, tanh_c_new = saved
    grad_c_total = grad_c_new + tanh_backward(grad_h_new * out_gate, tanh_c_new)
    grad_gates = np.concatenate([
        sigmoid_backward(grad_c_total * cell_gate, in_gate),
        sigmoid_backward(grad_c_total * cx, forget_gate),
        tanh_backward(grad_c_total * in_gate, cell_gate),
        sigmoid_backward(grad_h_new * tanh_c_new, out_gate),
    ], axis=1)
    return grad_gates, grad_c_total * forget_gate


def lstm_cell(input: np.ndarray, hx: np.ndarray, cx: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
              bias_ih: np.ndarray | None = None,
              bias_hh: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """One LSTM step: ``lstm_gates`` of x @ W_ih.T + b_ih and h @ W_hh.T + b_hh (rows: 4 blocks of H).

    Shapes: input (N, input_size), hx and cx (N, H), W_ih (4H, input_size), W_hh (4H, H), biases (4H,).
    Returns (h', c', saved) with saved = (i, f, g, o, tanh(c')).
    """
    return lstm_gates(*_affine(input, hx, weight_ih, weight_hh, bias_ih, bias_hh), cx)


def lstm_cell_backward(grad_h_new: np.ndarray, grad_c_new: np.ndarray, input: np.ndarray, hx: np.ndarray,
                       cx: np.ndarray, saved: tuple[np.ndarray, ...], weight_ih: np.ndarray, weight_hh: np.ndarray,
                       has_bias: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``lstm_cell`` from dL/dh' and dL/dc' (``lstm_gates_backward``, then the affine maps').
    Returns (dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh).
    """
    grad_gates, grad_cx = lstm_gates_backward(grad_h_new, grad_c_new, cx, saved)
    grad_input, grad_hx, *grad_params = _affine_backward(grad_gates, grad_gates, input, hx, weight_ih, weight_hh,
                                                         has_bias)
    return (grad_input, grad_hx, grad_cx, *grad_params)


# ---------------------------------------------------------------------------------------- GRU
def gru_gates(gates_ih: np.ndarray, gates_hh: np.ndarray,
              hx: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The GRU's gates, in torch's order r, z, n (3 blocks of H along the last axis)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))       r scales the hidden part only, with its bias
        h' = (1 - z) * n + z * h

    with the W_i. x + b_i. blocks from gates_ih and the W_h. h + b_h. from gates_hh, kept apart
    for n. Returns (h', saved) with saved = (r, z, n, W_hn h + b_hn).
    """
    reset_ih, update_ih, new_ih = np.split(gates_ih, 3, axis=1)
    reset_hh, update_hh, new_hh = np.split(gates_hh, 3, axis=1)
    reset_gate = sigmoid(reset_ih + reset_hh)
    update_gate = sigmoid(update_ih + update_hh)
    new_gate = tanh(new_ih + reset_gate * new_hh)
    h_new = (1 - update_gate) * new_gate + update_gate * hx
    return h_new, (reset_gate, update_gate, new_gate, new_hh)


def gru_gates_backward(grad_h_new: np.ndarray, hx: np.ndarray,
                       saved: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gru_gates``' backward from dL/dh'::

        dn = dh' * (1 - z),   dz = dh' * (h - n),   dh (direct) = dh' * z
        dn_pre = dn * (1 - n^2)                                 pre-activation of n
        dr_pre = dn_pre * (W_hn h + b_hn) * r (1 - r)
        dz_pre = dz * z (1 - z)
        dA = [dr_pre, dz_pre, dn_pre],   dB = [dr_pre, dz_pre, dn_pre * r]

    dB's last block carries r, which multiplies W_hn h + b_hn. Returns (dA, dB, dh direct).
    """
    reset_gate, update_gate, new_gate, new_hh = saved
    grad_new_pre = tanh_backward(grad_h_new * (1 - update_gate), new_gate)
    grad_update_pre = sigmoid_backward(grad_h_new * (hx - new_gate), update_gate)
    grad_reset_pre = sigmoid_backward(grad_new_pre * new_hh, reset_gate)
    grad_ih = np.concatenate([grad_reset_pre, grad_update_pre, grad_new_pre], axis=1)
    grad_hh = np.concatenate([grad_reset_pre, grad_update_pre, grad_new_pre * reset_gate], axis=1)
    return grad_ih, grad_hh, grad_h_new * update_gate


def gru_cell(input: np.ndarray, hx: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
             bias_ih: np.ndarray | None = None,
             bias_hh: np.ndarray | None = None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One GRU step: ``gru_gates`` of x @ W_ih.T + b_ih and h @ W_hh.T + b_hh (rows: 3 blocks of H).

    Shapes: input (N, input_size), hx (N, H), W_ih (3H, input_size), W_hh (3H, H), biases (3H,) -> (N, H).
    Returns (h', saved) with saved = (r, z, n, W_hn h + b_hn).
    """
    return gru_gates(*_affine(input, hx, weight_ih, weight_hh, bias_ih, bias_hh), hx)


def gru_cell_backward(grad_h_new: np.ndarray, input: np.ndarray, hx: np.ndarray, saved: tuple[np.ndarray, ...],
                      weight_ih: np.ndarray, weight_hh: np.ndarray, has_bias: bool = True) -> Grads:
    """Gradients of ``gru_cell`` from dL/dh' (``gru_gates_backward``, then the affine maps'; h reaches h'
    directly too). Returns (dx, dh, dW_ih, dW_hh, db_ih, db_hh).
    """
    grad_ih, grad_hh, grad_hx_direct = gru_gates_backward(grad_h_new, hx, saved)
    grad_input, grad_hx, *grad_params = _affine_backward(grad_ih, grad_hh, input, hx, weight_ih, weight_hh, has_bias)
    return (grad_input, grad_hx + grad_hx_direct, *grad_params)


# ---------------------------------------------------------------------------------------- modules
def _check_cell_input(name: str, input: np.ndarray, input_size: int) -> None:
    if input.ndim not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
    if input.shape[-1] != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {input_size}")


def _check_cell_hidden(input: np.ndarray, hx: np.ndarray, hidden_size: int, label: int) -> None:
    """torch's checks of a (batched) hidden state against the (batched) input, in torch's order."""
    if input.shape[0] != hx.shape[0]:
        raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match hidden{label} batch size {hx.shape[0]}")
    if hx.shape[1] != hidden_size:
        raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {hx.shape[1]}, expected {hidden_size}")


class _CellBase(Module):
    """weight_ih (k H, input_size), weight_hh (k H, H), bias_ih and bias_hh (k H,), all U(+-1/sqrt(H))."""

    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = self._gates * hidden_size
        self.weight_ih = Parameter(np.empty((rows, input_size), dtype=dtype))
        self.weight_hh = Parameter(np.empty((rows, hidden_size), dtype=dtype))
        if bias:
            self.bias_ih = Parameter(np.empty(rows, dtype=dtype))
            self.bias_hh = Parameter(np.empty(rows, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's init: every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        bias_ih, bias_hh = self._parameters["bias_ih"], self._parameters["bias_hh"]
        return (self._parameters["weight_ih"].data, self._parameters["weight_hh"].data,
                None if bias_ih is None else bias_ih.data, None if bias_hh is None else bias_hh.data)

    def _batched(self, input: np.ndarray, states: list[np.ndarray | None]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The input and states as 2-D arrays (a 1-D sample becomes a batch of one), zeros for missing states."""
        name = type(self).__name__
        _check_cell_input(name, input, self.input_size)
        for index, state in enumerate(states):
            if state is not None and state.ndim not in (1, 2):
                what = "hidden" if len(states) == 1 else f"hx[{index}]"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {state.ndim}D instead")
        batch = input.reshape(1, -1) if input.ndim == 1 else input
        out = []
        for label, state in enumerate(states):
            if state is None:
                state = np.zeros((batch.shape[0], self.hidden_size), dtype=input.dtype)
            elif input.ndim == 1:
                state = state[None]
            if state.ndim < 2:
                raise RuntimeError(f"hidden{label} must be 2-D for a batched input, got {state.ndim}-D")
            _check_cell_hidden(batch, state, self.hidden_size, label)  # as torch: a (1, N, H) hx fails here
            out.append(state)
        return batch, out

    def _accumulate(self, grad_params: list[np.ndarray | None]) -> None:
        for name, grad in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), grad_params):
            if grad is not None and self._parameters[name] is not None:
                self._parameters[name].accumulate_grad(grad)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text


def _unbatch(grad: np.ndarray, unbatched: bool) -> np.ndarray:
    return grad[0] if unbatched else grad


class RNNCell(_CellBase):
    """h' = tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh) (or relu); ``forward(input, hx=None)`` -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: np.ndarray, hx: np.ndarray | None = None) -> np.ndarray:
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        batch, (state,) = self._batched(input, [hx])
        h_new = rnn_cell(batch, state, *self._weights(), nonlinearity=self.nonlinearity)
        self.save_for_backward(batch, state, h_new, input.ndim == 1, hx is not None)
        return _unbatch(h_new, input.ndim == 1)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> Any:
        """grad_input, or (grad_input, grad_hx) when the forward was given hx; adds into the parameters' grads."""
        batch, state, h_new, unbatched, had_hx = self.saved_tensors()
        weight_ih, weight_hh, bias_ih, _ = self._weights()
        grad_input, grad_hx, *grad_params = rnn_cell_backward(
            np.reshape(grad_output, h_new.shape), batch, state, h_new, weight_ih, weight_hh,
            bias_ih is not None, self.nonlinearity)
        self._accumulate(grad_params)
        grad_input = _unbatch(grad_input, unbatched) if needs_input_grad else None
        return (grad_input, _unbatch(grad_hx, unbatched)) if had_hx else grad_input


class LSTMCell(_CellBase):
    """One LSTM step (see ``lstm_cell``); ``forward(input, hx=None)`` with hx = (h, c) -> (h', c')."""

    _gates = 4

    def forward(self, input: np.ndarray,
                hx: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        batch, (h, c) = self._batched(input, [None, None] if hx is None else list(hx))
        h_new, c_new, saved = lstm_cell(batch, h, c, *self._weights())
        self.save_for_backward(batch, h, c, saved, input.ndim == 1, hx is not None)
        return _unbatch(h_new, input.ndim == 1), _unbatch(c_new, input.ndim == 1)

    def backward(self, grad_output: tuple[np.ndarray | None, np.ndarray | None],
                 needs_input_grad: bool = True) -> Any:
        """``backward((grad_h, grad_c))``, either part None (zero): grad_input, or
        (grad_input, (grad_h0, grad_c0)) when the forward was given hx."""
        batch, h, c, saved, unbatched, had_hx = self.saved_tensors()
        grad_h, grad_c = (grad_output, None) if isinstance(grad_output, np.ndarray) else grad_output
        grad_h = np.zeros_like(h) if grad_h is None else np.reshape(grad_h, h.shape)
        grad_c = np.zeros_like(c) if grad_c is None else np.reshape(grad_c, c.shape)
        weight_ih, weight_hh, bias_ih, _ = self._weights()
        grad_input, grad_h0, grad_c0, *grad_params = lstm_cell_backward(
            grad_h, grad_c, batch, h, c, saved, weight_ih, weight_hh, bias_ih is not None)
        self._accumulate(grad_params)
        grad_input = _unbatch(grad_input, unbatched) if needs_input_grad else None
        if had_hx:
            return grad_input, (_unbatch(grad_h0, unbatched), _unbatch(grad_c0, unbatched))
        return grad_input


class GRUCell(_CellBase):
    """One GRU step (see ``gru_cell``); ``forward(input, hx=None)`` -> h'."""

    _gates = 3

    def forward(self, input: np.ndarray, hx: np.ndarray | None = None) -> np.ndarray:
        batch, (state,) = self._batched(input, [hx])
        h_new, saved = gru_cell(batch, state, *self._weights())
        self.save_for_backward(batch, state, saved, input.ndim == 1, hx is not None)
        return _unbatch(h_new, input.ndim == 1)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> Any:
        """grad_input, or (grad_input, grad_hx) when the forward was given hx; adds into the parameters' grads."""
        batch, state, saved, unbatched, had_hx = self.saved_tensors()
        weight_ih, weight_hh, bias_ih, _ = self._weights()
        grad_input, grad_hx, *grad_params = gru_cell_backward(
            np.reshape(grad_output, state.shape), batch, state, saved, weight_ih, weight_hh, bias_ih is not None)
        self._accumulate(grad_params)
        grad_input = _unbatch(grad_input, unbatched) if needs_input_grad else None
        return (grad_input, _unbatch(grad_hx, unbatched)) if had_hx else grad_input
