"""RNN, LSTM, GRU over sequences against torch, finite differences and torch's errors.

Each comparison gives every output its own random upstream gradient (output, h_n and c_n), and
checks output, h_n, c_n, the input's, the initial state's and every parameter's gradient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinynn
from tests.helpers import outcome
from tinynn.nn.module import Module
from tinynn.nn.rnn import GRU, LSTM, RNN
from tinynn.testing import assert_close, gradcheck, replay_torch_dropout, torch_tolerances

LAYERS = [(RNN, torch.nn.RNN, {}), (RNN, torch.nn.RNN, dict(nonlinearity="relu")), (LSTM, torch.nn.LSTM, {}),
          (GRU, torch.nn.GRU, {})]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(ours, theirs, kwargs, dtype=np.float64, **config):
    reference = theirs(dtype=TORCH_DTYPE[dtype], **kwargs, **config)
    module = ours(dtype=dtype, **kwargs, **config)
    module.load_state_dict({name: value.numpy() for name, value in reference.state_dict().items()})
    return module, reference


def compare_layer(ours, theirs, kwargs, *, seq_len: int, batch: int | None, input_size: int = 3,
                  hidden_size: int = 4, num_layers: int = 1, bidirectional: bool = False, batch_first: bool = False,
                  bias: bool = True, with_hx: bool = True, grad_parts: tuple[bool, ...] = (True, True, True),
                  dtype=np.float64, seed: int = 0, repeats: int = 1, dropout: float = 0.0) -> None:
    """One layer against torch, ``repeats`` times without zero_grad (weight grads add up).

    ``grad_parts``: which of (output, h_n, c_n) get an upstream gradient; the others are passed as None.
    ``dropout``: between the layers, in training mode, with torch's masks replayed into tinynn.
    """
    rng = np.random.default_rng(seed)
    module, reference = _pair(ours, theirs, kwargs, dtype, input_size=input_size, hidden_size=hidden_size,
                              num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                              dropout=dropout)
    lstm, directions = ours is LSTM, 2 if bidirectional else 1
    rtol, atol = torch_tolerances(dtype)
    if batch is None:
        x_shape, state_shape = (seq_len, input_size), (num_layers * directions, hidden_size)
    else:
        x_shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
        state_shape = (num_layers * directions, batch, hidden_size)
    for _ in range(repeats):
        x = rng.standard_normal(x_shape).astype(dtype)
        states = [rng.standard_normal(state_shape).astype(dtype) for _ in range(2 if lstm else 1)]
        x_t = torch.tensor(x, requires_grad=True)
        states_t = [torch.tensor(state, requires_grad=True) for state in states]
        hx = (tuple(states) if lstm else states[0]) if with_hx else None
        hx_t = (tuple(states_t) if lstm else states_t[0]) if with_hx else None
        with replay_torch_dropout(reference) as masks:  # torch first: tinynn takes the masks it drew
            (output_t, state_t), (output, state) = reference(x_t, hx_t), module(x, hx)
        assert masks.used == (num_layers - 1 if 0 < dropout < 1 and num_layers > 1 else 0)
        results, expected = [output, *(state if lstm else [state])], [output_t, *(state_t if lstm else [state_t])]
        for mine, value, name in zip(results, expected, ["output", "h_n", "c_n"]):
            assert_close(mine, value, rtol=rtol, atol=atol, name=name)
        upstream = [rng.uniform(-2, 2, value.shape).astype(dtype) if wanted else None
                    for value, wanted in zip(results, grad_parts)]
        loss = sum((value * torch.tensor(grad)).sum() for value, grad in zip(expected, upstream) if grad is not None)
        if torch.is_tensor(loss):
            loss.backward()
        returned = module.backward((upstream[0], tuple(upstream[1:]) if lstm else upstream[1]))
        if not with_hx:
            assert isinstance(returned, np.ndarray)
            returned = (returned, None)
        grad_x, grad_state = returned
        _close_or_zero(grad_x, x_t.grad, rtol, atol, "grad_x")
        if with_hx:
            for mine, tensor, name in zip(grad_state if lstm else [grad_state], states_t, ["grad_h0", "grad_c0"]):
                _close_or_zero(mine, tensor.grad, rtol, atol, name)
    for name, param in reference.named_parameters():
        _close_or_zero(getattr(module, name).grad, param.grad, rtol, atol, f"{name}.grad")


def _close_or_zero(mine, expected, rtol, atol, name):
    """torch leaves .grad None where nothing reached it; tinynn's gradient there is all zeros."""
    if expected is None:
        assert mine is not None and not np.any(mine), name
    else:
        assert_close(mine, expected, rtol=rtol, atol=atol, name=name)


# ---------------------------------------------------------------------------------------- against torch
@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (1, True), (3, True)])
def test_layer_matches_torch(ours, theirs, kwargs, num_layers, bidirectional):
    compare_layer(ours, theirs, kwargs, seq_len=4, batch=2, num_layers=num_layers, bidirectional=bidirectional,
                  repeats=2)


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batch", [None, 1, 3])
def test_layouts_and_unbatched_match_torch(ours, theirs, kwargs, batch_first, batch):
    compare_layer(ours, theirs, kwargs, seq_len=3, batch=batch, num_layers=2, bidirectional=True,
                  batch_first=batch_first)


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
def test_no_initial_state_no_bias_float32_and_missing_gradients(ours, theirs, kwargs):
    compare_layer(ours, theirs, kwargs, seq_len=3, batch=2, num_layers=2, with_hx=False)
    compare_layer(ours, theirs, kwargs, seq_len=3, batch=2, bias=False, bidirectional=True)
    compare_layer(ours, theirs, kwargs, seq_len=5, batch=2, num_layers=2, bidirectional=True, dtype=np.float32)
    for parts in [(True, False, False), (False, True, False), (False, False, True), (False, False, False)]:
        compare_layer(ours, theirs, kwargs, seq_len=3, batch=2, num_layers=2, bidirectional=True, grad_parts=parts)


def test_a_bare_array_is_the_output_gradient_alone():
    rng = np.random.default_rng(0)
    module, reference = _pair(LSTM, torch.nn.LSTM, {}, input_size=2, hidden_size=3, num_layers=2)
    x = rng.standard_normal((4, 2, 2))
    grad_output = rng.uniform(-1, 1, (4, 2, 3))
    x_t = torch.tensor(x, requires_grad=True)
    reference(x_t)[0].backward(torch.tensor(grad_output))
    module(x)
    assert_close(module.backward(grad_output), x_t.grad, rtol=1e-10, name="grad_x")
    module(x)
    with pytest.raises(RuntimeError, match="grad_output has the wrong shape"):
        module.backward(grad_output[:3])


@given(index=st.integers(0, 3), seq_len=st.integers(1, 4), batch=st.sampled_from([None, 1, 2, 3]),
       input_size=st.integers(1, 3), hidden_size=st.integers(1, 3), num_layers=st.integers(1, 3),
       bidirectional=st.booleans(), batch_first=st.booleans(), bias=st.booleans(), with_hx=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**32 - 1))
def test_layer_property_matches_torch(index, seq_len, batch, input_size, hidden_size, num_layers, bidirectional,
                                      batch_first, bias, with_hx, dtype, seed):
    # relu in float32 is left out: a pre-activation within float32 rounding of 0 can fall on either
    # side of the kink in the two libraries, and the gradient then differs by a whole term.
    ours, theirs, kwargs = LAYERS[0 if index == 1 and dtype == np.float32 else index]
    compare_layer(ours, theirs, kwargs, seq_len=seq_len, batch=batch, input_size=input_size, hidden_size=hidden_size,
                  num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                  with_hx=with_hx, dtype=dtype, seed=seed)


# ---------------------------------------------------------------------------------------- finite differences
class _Flat(Module):
    """output, h_n (and c_n) as one flat array, so gradcheck sees one output and one upstream gradient."""

    def __init__(self, layer: Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: np.ndarray, *states: np.ndarray) -> np.ndarray:
        lstm = isinstance(self.layer, LSTM)
        output, state = self.layer(x, tuple(states) if lstm else states[0])
        self.shapes = [output.shape, *[part.shape for part in (state if lstm else [state])]]
        return np.concatenate([output.ravel(), *[part.ravel() for part in (state if lstm else [state])]])

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True):
        sizes = np.cumsum([int(np.prod(shape)) for shape in self.shapes])[:-1]
        parts = [part.reshape(shape) for part, shape in zip(np.split(grad_output, sizes), self.shapes)]
        if isinstance(self.layer, LSTM):
            grad_x, (grad_h0, grad_c0) = self.layer.backward((parts[0], (parts[1], parts[2])))
            return grad_x, grad_h0, grad_c0
        return self.layer.backward((parts[0], parts[1]))


@pytest.mark.parametrize("ours, _, kwargs", LAYERS, ids=IDS)
def test_layer_gradcheck(ours, _, kwargs):
    rng = np.random.default_rng(5)
    layer = ours(2, 2, num_layers=2, bidirectional=True, dtype=np.float64, **kwargs)
    states = [rng.standard_normal((4, 2, 2)) for _ in range(2 if ours is LSTM else 1)]
    assert gradcheck(_Flat(layer), rng.standard_normal((3, 2, 2)), *states)


# ---------------------------------------------------------------------------------------- API
@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
def test_state_dict_repr_and_init_are_torchs(ours, theirs, kwargs):
    for config in [{}, dict(num_layers=3, bidirectional=True), dict(num_layers=2, bias=False, batch_first=True),
                   dict(num_layers=2, dropout=0.5)]:
        module, reference = ours(3, 5, **kwargs, **config), theirs(3, 5, **kwargs, **config)
        assert repr(module) == repr(reference)
        assert list(module.state_dict()) == list(reference.state_dict())
        assert {k: v.shape for k, v in module.state_dict().items()} == {
            k: tuple(v.shape) for k, v in reference.state_dict().items()}
        assert all(v.dtype == np.float32 for v in module.state_dict().values())
    tinynn.manual_seed(1)
    first = ours(4, 64, **kwargs).weight_hh_l0.data.copy()
    tinynn.manual_seed(1)
    module = ours(4, 64, **kwargs)
    assert np.array_equal(first, module.weight_hh_l0.data)
    for name, param in module.named_parameters():  # U(-1/8, 1/8): the edges are reached, never passed
        assert 0.12 < np.abs(param.data).max() <= 1 / 8, name


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bidirectional, batch_first, batch", [(False, False, 2), (True, True, 3), (True, False, None)])
def test_dropout_between_layers_matches_torch_with_its_masks(ours, theirs, kwargs, dtype, bidirectional,
                                                             batch_first, batch):
    compare_layer(ours, theirs, kwargs, seq_len=4, batch=batch, num_layers=3, bidirectional=bidirectional,
                  batch_first=batch_first, dtype=dtype, dropout=0.4, repeats=2)


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
def test_dropout_warns_like_torch_and_is_off_in_eval_and_for_p_one_drops_everything(ours, theirs, kwargs):
    with warnings.catch_warnings(record=True) as mine:
        warnings.simplefilter("always")
        ours(3, 4, dropout=0.5, **kwargs)
    with warnings.catch_warnings(record=True) as expected:
        warnings.simplefilter("always")
        theirs(3, 4, dropout=0.5, **kwargs)
    assert [str(w.message) for w in mine] == [str(w.message) for w in expected] and len(mine) == 1
    module, reference = _pair(ours, theirs, kwargs, input_size=3, hidden_size=4, num_layers=2, dropout=0.5)
    module.eval(), reference.eval()
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    assert_close(module(x)[0], reference(torch.tensor(x))[0], rtol=1e-10, name="eval output")
    # p = 1: the upper layer sees zeros, so its output does not depend on x (torch draws nothing).
    compare_layer(ours, theirs, kwargs, seq_len=3, batch=2, num_layers=2, dropout=1.0)


def test_proj_size_and_packed_sequences_are_refused():
    with pytest.raises(NotImplementedError, match="proj_size"):
        LSTM(3, 4, proj_size=2)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.zeros(3, 2, 3), [3, 2])
    for module in (RNN(3, 4), LSTM(3, 4), GRU(3, 4)):
        with pytest.raises(NotImplementedError, match="PackedSequence"):
            module(packed)


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS, ids=IDS)
def test_errors_are_torchs(ours, theirs, kwargs):
    lstm = ours is LSTM
    module, reference = ours(3, 4, num_layers=2, **kwargs), theirs(3, 4, num_layers=2, **kwargs)
    state = (lambda *shapes: tuple(np.zeros(shape, np.float32) for shape in shapes)) if lstm else (
        lambda *shapes: np.zeros(shapes[0], np.float32))
    good = (2, 5, 4)
    float32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    cases = [
        (float32(5, 2, 6), None),  # wrong input size
        (float32(5, 2, 3, 1), None),  # 4-D input
        (np.zeros((5, 2, 3)), None),  # float64 input, float32 weights
        (float32(5, 2, 3), state((2, 2, 5), (2, 2, 4))),  # wrong hidden size
        (float32(5, 2, 3), state((1, 2, 4), (2, 2, 4))),  # wrong layer count
        (float32(5, 2, 3), state((2, 3, 4), (2, 3, 4))),  # wrong batch
        (float32(5, 2, 3), state((2, 4), (2, 4))),  # 2-D hx for a batched input
        (float32(5, 3), state(good, good)),  # 3-D hx for an unbatched input
        (float32(5, 3), state((2, 5), (2, 4))),  # unbatched, wrong hidden size
        (float32(0, 2, 3), None),  # an empty sequence
        (float32(0, 3), None),  # an empty unbatched sequence
    ]
    if lstm:
        cases.append((float32(5, 2, 3), state((2, 2, 4), (2, 2, 6))))  # wrong cell size
    for x, hx in cases:
        hx_t = None if hx is None else (tuple(torch.tensor(a) for a in hx) if lstm else torch.tensor(hx))
        mine = outcome(lambda x=x, hx=hx: module(x, hx))
        expected = outcome(lambda x=x, hx_t=hx_t: reference(torch.tensor(x), hx_t))
        assert mine[0] != "ok" and mine == expected, (x.shape, mine, expected)
    for config in [dict(dropout=1.5), dict(hidden_size=0), dict(num_layers=0), dict(bias=1)]:
        arguments = dict(input_size=3, hidden_size=4) | config
        assert outcome(lambda arguments=arguments: ours(**arguments, **kwargs)) == outcome(
            lambda arguments=arguments: theirs(**arguments, **kwargs))
    assert outcome(lambda: RNN(3, 4, nonlinearity="gelu")) == outcome(lambda: torch.nn.RNN(3, 4, nonlinearity="gelu"))
