"""Embedding, embedding and embedding_backward against torch: lookups, weight gradients, options, errors.

Each torch behaviour is pinned by one readable case; the last test holds the numbers to torch over
random sizes, indices, options and dtypes (hypothesis), always with a random upstream gradient.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.strategies import assert_matches, magnitude, one_torch_thread, to_torch  # noqa: F401 - autouse fixture
from tinynn.nn.sparse import Embedding, embedding, embedding_backward
from tinynn.testing import assert_close, assert_matches_torch, gradcheck
from tinynn.testing.strategies import VALUE_STYLES, arrays, dtypes, grads, sizes
from tinynn.testing.tolerances import INIT_STD_RTOL, TORCH_F64_RTOL

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
CONFIGS = [dict(), dict(padding_idx=2), dict(padding_idx=-1), dict(scale_grad_by_freq=True),
           dict(padding_idx=0, scale_grad_by_freq=True), dict(max_norm=1.0), dict(max_norm=0.5, norm_type=1.0),
           dict(max_norm=2, norm_type=math.inf, padding_idx=-6, scale_grad_by_freq=True)]
SHAPES = [(9,), (3, 5), (), (2, 0), (2, 3, 4)]


def _indices(shape: tuple[int, ...], vocab: int = 6, seed: int = 0, dtype=np.int64) -> np.ndarray:
    """Indices drawn from a small vocabulary, so most shapes repeat some and hit the padding row."""
    return np.random.default_rng(seed).integers(0, vocab, size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------- against torch
@pytest.mark.parametrize("config", CONFIGS, ids=[str(config) for config in CONFIGS])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_module_output_weight_grad_and_renormed_weight_match_torch(config, shape, dtype):
    reference = torch.nn.Embedding(6, 4, **config).to(TORCH_DTYPE[dtype])
    module = Embedding(6, 4, **config, dtype=dtype)
    # torch's weights loaded by name, a random upstream gradient (never all ones), both compared.
    assert_matches_torch(module, reference, _indices(shape, dtype=np.int32 if len(shape) == 2 else np.int64))
    assert_matches(module.weight.data, reference.weight, "renormed weight")


def test_repeated_indices_add_up_and_the_padding_row_gets_nothing():
    module = Embedding.from_pretrained(np.arange(12.0).reshape(4, 3), freeze=False, padding_idx=3)
    indices = np.array([[1, 3, 1], [0, 1, 3]])
    output = module(indices)
    assert np.array_equal(output[0, 1], [9.0, 10.0, 11.0])  # the padding row is still looked up
    grad_output = np.random.default_rng(1).standard_normal((2, 3, 3))
    assert module.backward(grad_output) is None  # indices get no gradient
    expected = np.zeros((4, 3))
    expected[1] = grad_output[0, 0] + grad_output[0, 2] + grad_output[1, 1]  # three uses of row 1
    expected[0] = grad_output[1, 0]
    assert_close(module.weight.grad, expected, rtol=TORCH_F64_RTOL)
    scaled = embedding_backward(grad_output, indices, 4, padding_idx=-1, scale_grad_by_freq=True)
    assert_close(scaled[1], expected[1] / 3, rtol=TORCH_F64_RTOL)
    assert np.array_equal(scaled[3], np.zeros(3))


def test_renorm_scales_only_the_used_rows_above_max_norm_and_the_output_is_a_copy():
    weight = np.array([[3.0, 4.0], [3.0, 4.001], [0.6, 0.8], [30.0, 40.0]])  # norms 5, 5.0008, 1, 50
    reference = torch.from_numpy(weight.copy())
    indices = np.array([[1, 0], [2, 1]])  # row 3 is not used: it keeps its norm of 50
    output = embedding(indices, weight, max_norm=5.0)
    TF.embedding(torch.from_numpy(indices), reference, max_norm=5.0)
    assert_matches(weight, reference, "renormed weight")
    assert np.array_equal(weight[[0, 2, 3]], [[3.0, 4.0], [0.6, 0.8], [30.0, 40.0]])  # a norm of 5 is not above 5
    assert_close(weight[1], np.array([3.0, 4.001]) * 5.0 / (np.hypot(3.0, 4.001) + 1e-7), rtol=TORCH_F64_RTOL)
    output[...] = 0
    single = embedding(np.array(3), weight)
    single[...] = 0
    assert weight[1].any() and weight[3].any()  # the outputs were copies, also for a 0-d index


def test_functional_forward_and_backward_match_torch_aten():
    weight = np.random.default_rng(2).standard_normal((7, 5))
    indices = _indices((4, 6), vocab=7, seed=3, dtype=np.int32)
    assert np.array_equal(embedding(indices, weight), TF.embedding(torch.from_numpy(indices), torch.from_numpy(weight)))
    grad_output = np.random.default_rng(4).standard_normal((4, 6, 5))
    for padding_idx in (None, 0, 5):
        for scale in (False, True):
            expected = torch.ops.aten.embedding_dense_backward(
                torch.from_numpy(grad_output), torch.from_numpy(indices), 7,
                -1 if padding_idx is None else padding_idx, scale)
            assert_matches(embedding_backward(grad_output, indices, 7, padding_idx, scale), expected, "grad_weight")


def test_gradients_accumulate_over_backwards_as_torch():
    reference = torch.nn.Embedding(5, 3, scale_grad_by_freq=True).double()
    module = Embedding(5, 3, scale_grad_by_freq=True, dtype=np.float64)
    module.load_state_dict(reference.state_dict())
    for seed in range(2):
        indices, grad_output = _indices((4,), 5, seed), np.random.default_rng(seed).standard_normal((4, 3))
        reference(torch.from_numpy(indices)).backward(torch.from_numpy(grad_output))
        module(indices)
        module.backward(grad_output)
    assert_matches(module.weight.grad, reference.weight.grad, "accumulated weight.grad")


def test_gradcheck_on_the_weight_with_repeated_indices():
    assert gradcheck(Embedding(5, 3, dtype=np.float64), np.array([[0, 2, 2], [4, 2, 0]]))
    assert gradcheck(Embedding(4, 2, dtype=np.float64), np.array(3))  # a 0-d index gives one row


# ---------------------------------------------------------------------------------------- construction
def test_init_is_standard_normal_with_the_padding_row_zeroed():
    module = Embedding(4000, 30, padding_idx=-3)
    assert module.padding_idx == 3997 and module.weight.dtype == np.float32
    assert not module.weight.data[3997].any()
    weight = module.weight.data  # 120,000 draws: the std within INIT_STD_RTOL; the mean, 0.003 std, too
    assert abs(weight.std() - 1) < INIT_STD_RTOL and abs(weight.mean()) < INIT_STD_RTOL


@pytest.mark.parametrize("config", [*CONFIGS, dict(padding_idx=0, max_norm=1, norm_type=2)], ids=str)
def test_repr_and_state_dict_are_torchs(config):
    module, reference = Embedding(6, 4, **config), torch.nn.Embedding(6, 4, **config)
    assert repr(module) == repr(reference)
    assert list(module.state_dict()) == list(reference.state_dict()) == ["weight"]
    module.load_state_dict(reference.state_dict())
    assert np.array_equal(module.weight.data, reference.weight.detach().numpy())


@pytest.mark.parametrize("freeze", [True, False])
def test_from_pretrained_shares_the_array_and_freezes_as_torch(freeze):
    pretrained = np.random.default_rng(5).standard_normal((4, 3))
    module = Embedding.from_pretrained(pretrained, freeze=freeze, padding_idx=1)
    reference = torch.nn.Embedding.from_pretrained(torch.from_numpy(pretrained.copy()), freeze=freeze, padding_idx=1)
    assert module.weight.data is pretrained and module.weight.requires_grad == reference.weight.requires_grad
    assert np.array_equal(module.weight.data[1], pretrained[1])  # the given padding row is kept, as in torch
    indices, grad_output = np.array([1, 2, 2]), np.ones((3, 3))
    module(indices)
    module.backward(grad_output)
    if not freeze:  # a frozen torch output has no graph to backpropagate
        reference(torch.from_numpy(indices)).backward(torch.from_numpy(grad_output))
    assert (module.weight.grad is None) == (reference.weight.grad is None) == freeze
    assert repr(module) == repr(reference)


# ---------------------------------------------------------------------------------------- errors
def _error(call):
    try:
        call()
    except (AssertionError, RuntimeError, IndexError, NotImplementedError) as error:
        return type(error), str(error)
    raise AssertionError("accepted")


ERRORS = [  # (name, call with (embedding function, module class, array maker))
    ("float indices", lambda f, m, a: f(a([1.0, 2.0], np.float32), a(np.ones((5, 3))))),
    ("double indices", lambda f, m, a: f(a([1.0]), a(np.ones((5, 3))))),
    ("uint8 indices", lambda f, m, a: f(a([1], np.uint8), a(np.ones((5, 3))))),
    ("int16 indices", lambda f, m, a: f(a([1], np.int16), a(np.ones((5, 3))))),
    ("bool indices", lambda f, m, a: f(a([True]), a(np.ones((5, 3))))),
    ("float indices with max_norm", lambda f, m, a: f(a([1.0]), a(np.ones((5, 3))), max_norm=1.0)),
    ("index too large", lambda f, m, a: f(a([[0, 5]]), a(np.ones((5, 3))))),
    ("negative index", lambda f, m, a: f(a([-1]), a(np.ones((5, 3))))),
    ("1-D weight", lambda f, m, a: f(a([1]), a(np.ones(5)))),
    ("3-D weight", lambda f, m, a: f(a([1]), a(np.ones((5, 3, 2))))),
    ("functional padding_idx", lambda f, m, a: f(a([1]), a(np.ones((5, 3))), padding_idx=5)),
    ("module padding_idx", lambda f, m, a: m(5, 3, padding_idx=5)),
    ("module negative padding_idx", lambda f, m, a: m(5, 3, padding_idx=-6)),
    ("_weight shape", lambda f, m, a: m(5, 3, _weight=a(np.ones((3, 5))))),
    ("from_pretrained 1-D", lambda f, m, a: m.from_pretrained(a(np.ones(5)))),
    ("inf-norm of empty rows", lambda f, m, a: f(a([1]), a(np.ones((5, 0))), max_norm=1.0, norm_type=-math.inf)),
]


@pytest.mark.parametrize("case", ERRORS, ids=[case[0] for case in ERRORS])
def test_errors_are_torchs(case):
    _, call = case
    torch_array = lambda values, dtype=None: torch.from_numpy(np.array(values, dtype))  # noqa: E731
    expected = _error(lambda: call(TF.embedding, torch.nn.Embedding, torch_array))
    with pytest.raises(expected[0], match=f"^{re.escape(expected[1])}$"):
        call(embedding, Embedding, lambda v, t=None: np.array(v, t))


def test_sparse_and_misuse_are_refused_clearly():
    for call in (lambda: Embedding(5, 3, sparse=True), lambda: embedding(np.array([1]), np.ones((5, 3)), sparse=True),
                 lambda: Embedding.from_pretrained(np.ones((5, 3)), sparse=True)):
        with pytest.raises(NotImplementedError, match="tinynn has no sparse gradients: use sparse=False"):
            call()
    module = Embedding(5, 3)
    with pytest.raises(RuntimeError, match="nothing saved"):
        module.backward(np.ones((2, 3), np.float32))
    module(np.array([1, 2]))
    with pytest.raises(RuntimeError, match=re.escape("grad_output has shape (2, 4), expected (2, 3)")):
        module.backward(np.ones((2, 4), np.float32))


# ---------------------------------------------------------------------------------------- property
@st.composite
def embedding_cases(draw: st.DrawFn) -> dict:
    dtype, num, dim = draw(dtypes), draw(st.integers(1, 6)), draw(st.integers(0, 4))
    shape = draw(sizes(max_ndim=3, max_side=5))
    options = dict(padding_idx=draw(st.none() | st.integers(-num, num - 1)), scale_grad_by_freq=draw(st.booleans()),
                   max_norm=draw(st.none() | st.sampled_from([0.5, 1.0, 2.5])),
                   norm_type=draw(st.sampled_from([2.0, 1.0, 3.0, math.inf])))
    # Rows of +-2**40 would overflow float32 in a 3-norm (torch and NumPy then disagree on inf): not with max_norm.
    styles = VALUE_STYLES if options["max_norm"] is None else ("normal", "ties")
    indices = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, num, size=shape)
    return dict(weight=draw(arrays((num, dim), dtype, styles)), options=options,
                indices=indices.astype(draw(st.sampled_from([np.int64, np.int32]))),
                grad_output=draw(grads((*shape, dim), dtype)))


@given(embedding_cases())
def test_property_module_matches_torch(case):
    weight, indices, grad_output, options = case["weight"], case["indices"], case["grad_output"], case["options"]
    module = Embedding(*weight.shape, **options, _weight=weight.copy())
    # torch refuses the inf-norm of an empty row (test_errors_are_torchs checks that tinynn does too)
    assume(not (weight.shape[1] == 0 and options["max_norm"] is not None and indices.size
                and options["norm_type"] == math.inf))
    weight_t = to_torch(weight, requires_grad=True)
    output_t = TF.embedding(to_torch(indices), weight_t, **options)
    output_t.backward(to_torch(grad_output))
    output = module(indices)
    assert module.backward(grad_output) is None
    assert_matches(module.weight.data, weight_t, "renormed weight")
    assert_matches(output, output_t, "output")
    assert_matches(module.weight.grad, weight_t.grad, "weight.grad", magnitude(grad_output))
