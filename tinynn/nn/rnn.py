"""Recurrent layers: ``RNN``, ``LSTM`` and ``GRU`` over whole sequences, with backpropagation through time.

A layer runs one cell (``tinynn/nn/rnn_cells.py``) along the sequence, feeding each step's hidden
state to the next::

    h_t = cell(x_t, h_{t-1})            t = 0 .. T-1   (T-1 .. 0 for the reverse direction)
    output = [h_0', h_1', ..., h_{T-1}']

The cell's input projection x_t @ W_ih.T + b_ih does not depend on h, so it is one product for
all T steps before the loop; the loop does only h_{t-1} @ W_hh.T + b_hh and the cell's gates.

Backpropagation through time walks the same steps backwards. The gradient reaching h_t has two
sources, the output at step t and the step after it (which read h_t as its previous state)::

    dh_t = d(output)_t + dB_{t+1} @ W_hh       (the GRU adds z_{t+1} * dh_{t+1}: h_t reaches h_{t+1} directly)

with dA_t, dB_t the gradients of step t's gates_ih and gates_hh (the cells' gates backward). The
loop computes only those; the weights are shared over time, so each weight's gradient is a sum over
the steps, one product over all of them after the loop: dW_ih = dA.T @ x, dW_hh = dB.T @ h_prev
(the h_{t-1} each step read), db = the sums of dA and dB, and the input's gradient dx = dA @ W_ih.
The LSTM carries dc_t backwards the same way. Stacked layers feed each layer's output to the next
layer as its input, so the backward runs the layers top down, each layer's input gradient becoming
the output gradient of the layer below; a bidirectional layer's input gradient is the sum of its
two directions', and its output is the two directions' hidden states side by side. With
``dropout`` p, while training, each layer's output but the last's is multiplied by dropout noise
(keep / (1 - p)) before the next layer reads it, and its gradient by the same noise on the way down.

Layout as in torch: input (T, N, input_size), or (N, T, input_size) with ``batch_first``, or (T,
input_size) unbatched; h_0 and h_n (num_layers * num_directions, N, hidden_size), layer-major.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32
from tinynn.nn import init
from tinynn.nn.dropout import dropout_backward, dropout_noise
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter
from tinynn.nn.rnn_cells import (
    _project,
    gru_gates,
    gru_gates_backward,
    lstm_gates,
    lstm_gates_backward,
    rnn_gates,
    rnn_gates_backward,
)

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_NONLINEARITY = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}
Weights = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


# ---------------------------------------------------------------------------------------- one step's gates
def _gates(mode: str, gates_ih: np.ndarray, gates_hh: np.ndarray, hx: np.ndarray,
           cx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """(h', c' or None, what the step's backward needs) from one step's two affine maps."""
    if mode == "LSTM":
        return lstm_gates(gates_ih, gates_hh, cx)
    if mode == "GRU":
        h_new, saved = gru_gates(gates_ih, gates_hh, hx)
        return h_new, None, saved
    h_new = rnn_gates(gates_ih, gates_hh, _NONLINEARITY[mode])
    return h_new, None, h_new


def _gates_backward(mode: str, grad_h: np.ndarray, grad_c: np.ndarray | None, hx: np.ndarray,
                    cx: np.ndarray | None, saved: Any) -> tuple[Any, ...]:
    """(dA, dB, dh's direct part or None, dc or None) for one step: dA and dB the gradients of its
    gates_ih and gates_hh (the same array but for the GRU)."""
    if mode == "LSTM":
        grad_gates, grad_cx = lstm_gates_backward(grad_h, grad_c, cx, saved)
        return grad_gates, grad_gates, None, grad_cx
    if mode == "GRU":
        return (*gru_gates_backward(grad_h, hx, saved), None)
    grad_pre = rnn_gates_backward(grad_h, saved, _NONLINEARITY[mode])
    return grad_pre, grad_pre, None, None


# ---------------------------------------------------------------------------------------- one layer, one direction
def recurrent_layer(mode: str, input: np.ndarray, h0: np.ndarray, c0: np.ndarray | None, weights: Weights,
                    reverse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list]:
    """Run one direction of one layer over a sequence.

    input (T, N, F), h0 and c0 (N, H) (c0 None unless LSTM). Returns (output (T, N, H), h_n, c_n,
    steps), ``steps[t]`` = (h_{t-1}, c_{t-1}, saved): what the backward of step t needs.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    seq_len, batch, features = input.shape
    # x_t @ W_ih.T + b_ih for every t at once, (T, N, k H): it does not depend on h.
    gates_x = _project(input.reshape(seq_len * batch, features), weight_ih, bias_ih)
    gates_x = gates_x.reshape(seq_len, batch, weight_ih.shape[0])
    times = range(seq_len - 1, -1, -1) if reverse else range(seq_len)
    output = np.empty((seq_len, batch, h0.shape[-1]), dtype=h0.dtype)
    steps: list = [None] * seq_len
    hx, cx = h0, c0
    for t in times:
        h_new, c_new, saved = _gates(mode, gates_x[t], _project(hx, weight_hh, bias_hh), hx, cx)
        steps[t] = (hx, cx, saved)
        output[t] = h_new
        hx, cx = h_new, c_new
    return output, hx, cx, steps


def recurrent_layer_backward(mode: str, grad_output: np.ndarray, grad_h_n: np.ndarray, grad_c_n: np.ndarray | None,
                             input: np.ndarray, steps: list, weights: Weights, reverse: bool = False,
                             needs_input_grad: bool = True) -> tuple[Any, ...]:
    """BPTT through ``recurrent_layer``: the steps in the opposite order to the forward's.

    grad_output (T, N, H), grad_h_n and grad_c_n (N, H). At each step the hidden state's gradient
    is the output's at that step plus what the later step sent back (see the module docstring).
    Returns (grad_input (T, N, F) or None if not ``needs_input_grad``, grad_h0, grad_c0 or None,
    [dW_ih, dW_hh, db_ih, db_hh]), the weight gradients summed over the steps (biases' None without bias).
    """
    weight_ih, weight_hh, bias_ih, _ = weights
    seq_len, batch, features = input.shape
    times = range(seq_len) if reverse else range(seq_len - 1, -1, -1)
    grads_ih: list = [None] * seq_len
    grads_hh: list = [None] * seq_len
    grad_h, grad_c = grad_h_n, grad_c_n
    for t in times:
        hx, cx, saved = steps[t]
        grads_ih[t], grads_hh[t], grad_h_direct, grad_c = _gates_backward(
            mode, grad_h + grad_output[t], grad_c, hx, cx, saved)
        grad_h = grads_hh[t] @ weight_hh
        if grad_h_direct is not None:
            grad_h = grad_h + grad_h_direct
    # All T steps' rows at once: (T * N, k H) against the inputs and previous states each step read.
    rows, gate_rows = seq_len * batch, weight_ih.shape[0]
    grad_ih = np.stack(grads_ih).reshape(rows, gate_rows)
    grad_hh = np.stack(grads_hh).reshape(rows, gate_rows) if mode == "GRU" else grad_ih
    h_prev = np.stack([hx for hx, _, _ in steps]).reshape(rows, weight_hh.shape[1])
    has_bias = bias_ih is not None
    grad_params = [grad_ih.T @ input.reshape(rows, features), grad_hh.T @ h_prev,
                   grad_ih.sum(0) if has_bias else None, grad_hh.sum(0) if has_bias else None]
    grad_input = (grad_ih @ weight_ih).reshape(input.shape) if needs_input_grad else None
    return grad_input, grad_h, grad_c, grad_params


# ---------------------------------------------------------------------------------------- modules
def _is_packed(value: Any) -> bool:
    return type(value).__name__ == "PackedSequence" or hasattr(value, "batch_sizes")


class RNNBase(Module):
    """The parameters, checks and layer loop shared by RNN, LSTM and GRU (torch's ``RNNBase``)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 dtype: Any = None) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=3)
        for name, value, kind in (("bias", bias, bool), ("batch_first", batch_first, bool),
                                  ("input_size", input_size, int), ("hidden_size", hidden_size, int)):
            if not isinstance(value, kind):
                raise TypeError(f"{name} should be of type {kind.__name__}, got: {type(value).__name__}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size > 0:
            raise NotImplementedError("LSTM(proj_size > 0) is not implemented in tinynn yet: "
                                      "use proj_size=0 (a Linear after the LSTM projects its output)")
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        directions = 2 if bidirectional else 1
        rows = _GATES[mode] * hidden_size
        for layer in range(num_layers):
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                columns = input_size if layer == 0 else hidden_size * directions
                setattr(self, "weight_ih" + suffix, Parameter(np.empty((rows, columns), dtype=dtype)))
                setattr(self, "weight_hh" + suffix, Parameter(np.empty((rows, hidden_size), dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + suffix, Parameter(np.empty(rows, dtype=dtype)))
                    setattr(self, "bias_hh" + suffix, Parameter(np.empty(rows, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's init: every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _weights(self, layer: int, direction: int) -> Weights:
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        params = [self._parameters.get(name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        return tuple(None if param is None else param.data for param in params)  # type: ignore[return-value]

    def _params(self, layer: int, direction: int) -> list[Parameter | None]:
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return [self._parameters.get(name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    # -------------------------------------------------------------------- forward
    def _prepare(self, input: Any, hx: Any) -> tuple[np.ndarray, list[np.ndarray] | None, bool]:
        """torch's checks, in torch's order; returns the time-major batched input, the states as given
        but batched, and whether the input was batched."""
        if _is_packed(input):
            raise NotImplementedError(f"{type(self).__name__} in tinynn does not take a PackedSequence yet: pad the "
                                      "sequences to one length (torch.nn.utils.rnn.pad_packed_sequence) and pass "
                                      "the padded array")
        name, lstm = type(self).__name__, self.mode == "LSTM"
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D"
                             + (" tensor instead" if name == "RNN" else " instead"))
        batched, batch_dim = input.ndim == 3, 0 if self.batch_first else 1
        states = None if hx is None else (list(hx) if lstm else [hx])
        if not batched:
            input = np.expand_dims(input, batch_dim)
        if states is not None:
            want = 3 if batched else 2
            if any(state.ndim != want for state in states):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                if lstm:
                    got = ", ".join(f"{state.ndim}-D" for state in states)
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got ({got}) tensors")
                raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {states[0].ndim}-D tensor")
            states = states if batched else [state[:, None] for state in states]
        weight_dtype = self._parameters["weight_ih_l0"].dtype
        if input.dtype != weight_dtype:
            raise ValueError(f"RNN input dtype (torch.{input.dtype.name}) does not match weight dtype "
                             f"(torch.{weight_dtype.name}). Convert input: input.to(torch.{weight_dtype.name}), "
                             f"or convert model: model.to(torch.{input.dtype.name})")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.shape[-1]}")
        expected = (self.num_layers * (2 if self.bidirectional else 1), input.shape[batch_dim], self.hidden_size)
        for index, state in enumerate(states or []):
            if state.shape != expected:
                what = f"hidden[{index}]" if lstm else "hidden"
                raise RuntimeError(f"Expected {what} size {expected}, got {list(state.shape)}")
        if input.shape[1 - batch_dim] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        return (input.swapaxes(0, 1) if self.batch_first else input), states, batched

    def forward(self, input: np.ndarray, hx: Any = None) -> tuple[np.ndarray, Any]:
        """(output, h_n), or for LSTM (output, (h_n, c_n)); hx: h_0 (LSTM: (h_0, c_0)), zeros if None."""
        x, states, batched = self._prepare(input, hx)
        directions, lstm = 2 if self.bidirectional else 1, self.mode == "LSTM"
        state_shape = (self.num_layers * directions, x.shape[1], self.hidden_size)
        if states is None:
            states = [np.zeros(state_shape, dtype=x.dtype) for _ in range(2 if lstm else 1)]
        h_n, c_n = np.empty(state_shape, dtype=x.dtype), np.empty(state_shape, dtype=x.dtype) if lstm else None
        layer_input, layer_inputs, all_steps, noises = x, [], [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                output, h_last, c_last, steps = recurrent_layer(
                    self.mode, layer_input, states[0][index], states[1][index] if lstm else None,
                    self._weights(layer, direction), reverse=direction == 1)
                h_n[index] = h_last
                if lstm:
                    c_n[index] = c_last
                outputs.append(output)
                all_steps.append(steps)
            layer_inputs.append(layer_input)
            layer_input = np.concatenate(outputs, axis=2) if directions == 2 else outputs[0]
            # torch: dropout on every layer's output but the last, while training (noise None otherwise).
            last = layer == self.num_layers - 1
            noises.append(None if last else dropout_noise(layer_input, self.dropout, self.training))
            if noises[-1] is not None:
                layer_input = layer_input * noises[-1]
        self.save_for_backward(layer_inputs, all_steps, noises, layer_input.shape, batched, hx is not None)
        output = layer_input.swapaxes(0, 1) if self.batch_first else layer_input
        if not batched:
            output, h_n = output.squeeze(0 if self.batch_first else 1), h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        return output, ((h_n, c_n) if lstm else h_n)

    # -------------------------------------------------------------------- backward
    def _batched_grad(self, grad: Any, shape: tuple[int, ...], batched: bool, what: str,
                      sequence: bool) -> np.ndarray:
        """A gradient given in the forward's layout, as a time-major batched array (zeros for None)."""
        if grad is None:
            return np.zeros(shape, dtype=self._parameters["weight_ih_l0"].dtype)
        grad = np.asarray(grad)
        if not batched:
            grad = np.expand_dims(grad, (0 if self.batch_first else 1) if sequence else 1)
        if sequence and self.batch_first:
            grad = grad.swapaxes(0, 1)
        if grad.shape != shape:
            raise RuntimeError(f"{type(self).__name__}.backward: {what} has the wrong shape {np.shape(grad)}")
        return grad

    def _restore(self, grad: np.ndarray, batched: bool, sequence: bool) -> np.ndarray:
        if sequence and self.batch_first:
            grad = grad.swapaxes(0, 1)
        return grad if batched else grad.squeeze((0 if self.batch_first else 1) if sequence else 1)

    def backward(self, grad_output: Any, needs_input_grad: bool = True) -> Any:
        """``backward((grad_output, grad_h_n))`` (LSTM: ``(grad_output, (grad_h_n, grad_c_n))``), any part
        None; a bare array is grad_output alone. Returns grad_input, or with an initial state given to the
        forward (grad_input, grad_h0) (LSTM: (grad_input, (grad_h0, grad_c0))). Adds into the weights' grads."""
        layer_inputs, all_steps, noises, output_shape, batched, had_hx = self.saved_tensors()
        lstm, directions = self.mode == "LSTM", 2 if self.bidirectional else 1
        if grad_output is None or isinstance(grad_output, np.ndarray):
            grad_output, grad_state = grad_output, None
        else:
            grad_output, grad_state = grad_output
        grad_h_n, grad_c_n = (grad_state if grad_state is not None else (None, None)) if lstm else (grad_state, None)
        state_shape = (self.num_layers * directions, output_shape[1], self.hidden_size)
        grad_layer_output = self._batched_grad(grad_output, output_shape, batched, "grad_output", True)
        grad_h_n = self._batched_grad(grad_h_n, state_shape, batched, "grad_h_n", False)
        grad_c_n = self._batched_grad(grad_c_n, state_shape, batched, "grad_c_n", False) if lstm else None
        grad_h0, grad_c0 = np.empty_like(grad_h_n), np.empty_like(grad_h_n) if lstm else None
        for layer in reversed(range(self.num_layers)):
            grad_layer_output = dropout_backward(grad_layer_output, noises[layer])
            grad_layer_input = None
            for direction in range(directions):
                index, hidden = layer * directions + direction, slice(direction * self.hidden_size,
                                                                      (direction + 1) * self.hidden_size)
                grad_input, grad_h0[index], grad_c, grad_params = recurrent_layer_backward(
                    self.mode, grad_layer_output[..., hidden], grad_h_n[index],
                    grad_c_n[index] if lstm else None, layer_inputs[layer], all_steps[index],
                    self._weights(layer, direction), reverse=direction == 1,
                    needs_input_grad=needs_input_grad or layer > 0)  # None for layer 0 if not needed
                if lstm:
                    grad_c0[index] = grad_c
                for param, grad in zip(self._params(layer, direction), grad_params):
                    if param is not None:
                        param.accumulate_grad(grad)
                grad_layer_input = grad_input if grad_layer_input is None else grad_layer_input + grad_input
            grad_layer_output = grad_layer_input
        grad_x = self._restore(grad_layer_output, batched, True) if needs_input_grad else None
        if not had_hx:
            return grad_x
        grad_h0 = self._restore(grad_h0, batched, False)
        return grad_x, ((grad_h0, self._restore(grad_c0, batched, False)) if lstm else grad_h0)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text


class RNN(RNNBase):
    """Elman RNN, h_t = tanh(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh) (or relu), stacked num_layers deep.
    (torch's repr leaves the nonlinearity out, and so does this one.)

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False)``, torch's argument order.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, dtype)


class LSTM(RNNBase):
    """LSTM (gates i, f, g, o; see ``tinynn.nn.rnn_cells.lstm_cell``), stacked num_layers deep.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0)``; proj_size > 0 is refused (not implemented yet).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, dtype)


class GRU(RNNBase):
    """GRU (gates r, z, n; see ``tinynn.nn.rnn_cells.gru_cell``), stacked num_layers deep.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``, torch's argument order.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, dtype)
