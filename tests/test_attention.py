"""scaled_dot_product_attention and MultiheadAttention against torch autograd: outputs, every input
gradient and every parameter gradient under random upstream gradients (never a plain sum), masks of
each kind, layouts, dropout (torch's own masks, replayed into tinynn), gradcheck, errors, and a property
over random sizes, heads, options and masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinynn
from tests.strategies import assert_matches, one_torch_thread  # noqa: F401 - an autouse fixture
from tinynn.nn.attention import (
    attention_dropout_noise,
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)
from tinynn.nn.module import Module
from tinynn.nn.multihead_attention import MultiheadAttention
from tinynn.testing import assert_close, gradcheck, replay_torch_dropout, torch_dropout_masks, torch_tolerances

TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def _close(actual, expected, name, terms=0.0):
    """assert_close at torch_tolerances for the expected dtype (terms: unused here, as assert_matches takes it)."""
    rtol, atol = torch_tolerances(expected.dtype)
    assert_close(actual, expected, rtol=rtol, atol=atol, name=name)


def _torch(array, grad=False):
    return None if array is None else torch.tensor(array).requires_grad_(grad)


# ---------------------------------------------------------------------------------- scaled_dot_product_attention
def _sdpa_case(name, rng, dtype=np.float64):
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 6))
    kwargs = {}
    if name == "bool_mask":
        kwargs["attn_mask"] = rng.random((3, 5)) > 0.5
        kwargs["attn_mask"][:, 0] = True
    elif name == "float_mask_3d":
        kwargs["attn_mask"] = rng.standard_normal((2, 1, 5)).astype(dtype)
    elif name == "causal":
        kwargs["is_causal"] = True
    elif name == "scale":
        kwargs["scale"] = 0.7
    elif name == "broadcast_batch":
        k, v = k[0], v[0]
    elif name == "gqa":
        q, k, v = (rng.standard_normal(shape) for shape in ((1, 4, 3, 2), (1, 2, 5, 2), (1, 2, 5, 3)))
        kwargs["enable_gqa"] = True
    elif name == "unbatched":
        q, k, v = q[0], k[0], v[0]
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), kwargs


SDPA_CASES = ["plain", "bool_mask", "float_mask_3d", "causal", "scale", "broadcast_batch", "gqa", "unbatched"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SDPA_CASES)
def test_sdpa_matches_torch(case, dtype):
    rng = np.random.default_rng(SDPA_CASES.index(case))
    q, k, v, kwargs = _sdpa_case(case, rng, dtype)
    tensors = [_torch(x, grad=True) for x in (q, k, v)]
    torch_kwargs = {name: _torch(value) if isinstance(value, np.ndarray) else value for name, value in kwargs.items()}
    expected = TF.scaled_dot_product_attention(*tensors, **torch_kwargs)
    grad_output = rng.uniform(-1, 1, expected.shape).astype(dtype)
    expected.backward(_torch(grad_output))
    _close(scaled_dot_product_attention(q, k, v, **kwargs), expected, "output")
    grads = scaled_dot_product_attention_backward(grad_output, q, k, v, **kwargs)
    for name, grad, tensor in zip(("query", "key", "value"), grads, tensors):
        _close(grad, tensor.grad, f"grad_{name}")


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_sdpa_fully_masked_row_gives_zero_output_and_gradient_as_torch_cpu(mask_kind):
    # torch's documented reference would give NaN; its CPU kernels (aten._safe_softmax) give 0.
    rng = np.random.default_rng(1)
    q, k, v, _ = _sdpa_case("plain", rng)
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = False
    if mask_kind == "float":
        mask = np.where(mask, 0.0, -np.inf)
    tensors = [_torch(x, grad=True) for x in (q, k, v)]
    expected = TF.scaled_dot_product_attention(*tensors, attn_mask=_torch(mask))
    grad_output = rng.uniform(-1, 1, expected.shape)
    expected.backward(_torch(grad_output))
    output = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert np.all(output[:, 1] == 0) and not np.isnan(output).any()
    _close(output, expected, "output")
    for grad, tensor in zip(scaled_dot_product_attention_backward(grad_output, q, k, v, attn_mask=mask), tensors):
        _close(grad, tensor.grad, "grad")


def test_sdpa_dropout_noise_is_reused_by_the_backward():
    rng = np.random.default_rng(2)
    q, k, v, _ = _sdpa_case("plain", rng)
    mask = rng.random((3, 5)) > 0.3
    tinynn.manual_seed(0)
    noise = attention_dropout_noise(q, k, 0.4)
    assert noise.shape == (2, 3, 5) and set(np.unique(noise)) <= {0.0, 1 / 0.6}
    tensors = [_torch(x, grad=True) for x in (q, k, v)]
    scores = tensors[0] @ tensors[1].transpose(-2, -1) / 2.0 + torch.where(_torch(mask), 0.0, -torch.inf)
    expected = (torch.softmax(scores, -1) * _torch(noise)) @ tensors[2]  # torch's reference, with our noise
    grad_output = rng.uniform(-1, 1, expected.shape)
    expected.backward(_torch(grad_output))
    output = scaled_dot_product_attention(q, k, v, mask, 0.4, noise=noise)
    _close(output, expected, "output")
    grads = scaled_dot_product_attention_backward(grad_output, q, k, v, mask, 0.4, noise=noise)
    for grad, tensor in zip(grads, tensors):
        _close(grad, tensor.grad, "grad")
    tinynn.manual_seed(0)  # without noise= the forward draws the same noise from tinynn's generator
    assert np.array_equal(scaled_dot_product_attention(q, k, v, mask, 0.4), output)
    with pytest.raises(ValueError, match="needs the forward's noise"):
        scaled_dot_product_attention_backward(grad_output, q, k, v, mask, 0.4)


def test_sdpa_errors_are_torchs():
    q, k, v, _ = _sdpa_case("plain", np.random.default_rng(3))
    cases = [(dict(attn_mask=np.ones((3, 5), bool), is_causal=True), (q, k, v)),
             (dict(attn_mask=np.zeros((3, 5), np.int64)), (q, k, v)),
             ({}, (q, k.astype(np.float32), v)),
             ({}, (q[0, 0], k[0], v[0]))]
    for kwargs, arrays in cases:
        with pytest.raises(RuntimeError) as ours:
            scaled_dot_product_attention(*arrays, **kwargs)
        with pytest.raises(RuntimeError) as theirs:
            TF.scaled_dot_product_attention(*map(_torch, arrays), **{n: _torch(a) if isinstance(a, np.ndarray) else a
                                                                     for n, a in kwargs.items()})
        assert str(ours.value) == str(theirs.value)


class _SDPA(Module):
    """gradcheck's view of the functional pair: one output, three input gradients."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, q, k, v):
        self.save_for_backward(q, k, v)
        return scaled_dot_product_attention(q, k, v, **self.kwargs)

    def backward(self, grad_output, needs_input_grad=True):
        return scaled_dot_product_attention_backward(grad_output, *self.saved_tensors(), **self.kwargs)


@pytest.mark.parametrize("case", ["bool_mask", "causal", "broadcast_batch", "gqa"])
def test_sdpa_gradcheck(case):
    q, k, v, kwargs = _sdpa_case(case, np.random.default_rng(4))
    assert gradcheck(_SDPA(**kwargs), q, k, v)


# ---------------------------------------------------------------------------------- MultiheadAttention
MHA_CONFIGS = [dict(), dict(bias=False), dict(kdim=3, vdim=5), dict(add_bias_kv=True), dict(add_zero_attn=True),
               dict(add_bias_kv=True, add_zero_attn=True, kdim=2, bias=False), dict(batch_first=True)]


@pytest.mark.parametrize("config", MHA_CONFIGS)
def test_mha_construction_repr_state_dict_and_init_are_torchs(config):
    module, reference = MultiheadAttention(4, 2, **config), torch.nn.MultiheadAttention(4, 2, **config)
    assert repr(module) == repr(reference)
    assert [(n, p.shape) for n, p in module.state_dict().items()] == [
        (n, tuple(p.shape)) for n, p in reference.state_dict().items()]
    assert all(p.dtype == np.float32 for p in module.parameters())
    for name in ("in_proj_bias", "out_proj.bias"):
        if name in module.state_dict():
            assert not module.state_dict()[name].any()
    weights = [module.in_proj_weight] if module._qkv_same_embed_dim else [module.q_proj_weight, module.k_proj_weight]
    for weight in weights:  # xavier_uniform_: U(+-sqrt(6 / (fan_in + fan_out)))
        assert np.abs(weight.data).max() <= np.sqrt(6 / sum(weight.shape)) and weight.data.std() > 0
    assert MultiheadAttention(4, 2, dtype=torch.float64).in_proj_weight.dtype == np.float64


def _mha_pair(config, dtype=np.float64, seed=0):
    """A torch module with random parameters (biases too) and a tinynn one loaded from it by name."""
    torch.manual_seed(seed)
    reference = torch.nn.MultiheadAttention(config.get("embed_dim", 4), config.get("num_heads", 2),
                                            **{k: v for k, v in config.items() if k not in ("embed_dim", "num_heads")})
    reference = reference.to(TORCH_DTYPE[np.dtype(dtype)])
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.7)
    module = MultiheadAttention(config.get("embed_dim", 4), config.get("num_heads", 2), dtype=dtype,
                                **{k: v for k, v in config.items() if k not in ("embed_dim", "num_heads")})
    module.load_state_dict({name: value.detach().numpy() for name, value in reference.state_dict().items()})
    return module, reference


def _mha_inputs(module, rng, target_len, source_len, batch, dtype):
    """query, key, value in the module's layout; batch None: unbatched."""
    def shape(length, features):
        if batch is None:
            return (length, features)
        return (batch, length, features) if module.batch_first else (length, batch, features)
    return tuple(rng.standard_normal(shape(length, features)).astype(dtype) for length, features in
                 ((target_len, module.embed_dim), (source_len, module.kdim), (source_len, module.vdim)))


def _check_mha(module, reference, inputs, rng, check=_close, terms=None, **kwargs):
    """Forward, both gradients in (random dO and dW), every input and parameter gradient."""
    terms = terms or {}
    tensors = [_torch(x, grad=True) for x in inputs]
    torch_kwargs = {name: _torch(value) if isinstance(value, np.ndarray) else value for name, value in kwargs.items()}
    expected, expected_weights = reference(*tensors, **torch_kwargs)
    output, weights = module(*inputs, **kwargs)
    grad_output = rng.uniform(-1, 1, expected.shape).astype(output.dtype)
    outputs, upstream = [expected], [_torch(grad_output)]
    grad_weights = None
    if expected_weights is not None:
        grad_weights = rng.uniform(-1, 1, expected_weights.shape).astype(output.dtype)
        outputs.append(expected_weights)
        upstream.append(_torch(grad_weights))
    else:
        assert weights is None
    torch.autograd.backward(outputs, upstream)
    module.zero_grad()
    grads = module.backward((grad_output, grad_weights))
    check(output, expected, "attn_output", terms.get("output", 0.0))
    if weights is not None:
        check(weights, expected_weights, "attn_weights", terms.get("weights", 0.0))
    for name, grad, tensor in zip(("query", "key", "value"), grads, tensors):
        check(grad, tensor.grad, f"grad_{name}", terms.get("input", 0.0))
    expected_params = dict(reference.named_parameters())
    assert [name for name, _ in module.named_parameters()] == list(expected_params)
    for name, param in module.named_parameters():
        check(param.grad, expected_params[name].grad, f"{name}.grad", terms.get("param", 0.0))


def _mask_cases(rng):
    kpm = rng.random((2, 5)) > 0.6
    kpm[:, 0] = False
    attn = rng.random((3, 5)) > 0.7
    attn[:, 0] = False
    return {"none": {}, "kpm_bool": dict(key_padding_mask=kpm), "attn_bool_2d": dict(attn_mask=attn),
            "both_bool": dict(key_padding_mask=kpm, attn_mask=attn),
            "both_float_3d": dict(key_padding_mask=rng.standard_normal((2, 5)),
                                  attn_mask=rng.standard_normal((4, 3, 5))),
            "causal_hint_sdpa": dict(attn_mask=rng.standard_normal((3, 5)), is_causal=True, need_weights=False),
            "causal_hint_weights": dict(attn_mask=rng.standard_normal((3, 5)), is_causal=True),
            "per_head_weights": dict(average_attn_weights=False), "no_weights": dict(need_weights=False)}


@pytest.mark.parametrize("config", MHA_CONFIGS)
@pytest.mark.parametrize("masks", list(_mask_cases(np.random.default_rng(0))))
def test_mha_matches_torch(config, masks):
    rng = np.random.default_rng(5)
    module, reference = _mha_pair(config)
    _check_mha(module, reference, _mha_inputs(module, rng, 3, 5, 2, np.float64), rng, **_mask_cases(rng)[masks])


@pytest.mark.parametrize("config", [dict(), dict(batch_first=True, kdim=3, add_bias_kv=True)])
def test_mha_unbatched_and_float32_match_torch(config):
    rng = np.random.default_rng(6)
    module, reference = _mha_pair(config)
    unbatched = dict(attn_mask=rng.standard_normal((2, 3, 5)), key_padding_mask=rng.random(5) > 0.8)
    unbatched["key_padding_mask"][0] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns for mismatched mask kinds; so does tinynn
        _check_mha(module, reference, _mha_inputs(module, rng, 3, 5, None, np.float64), rng, **unbatched)
    module, reference = _mha_pair(config, np.float32)
    _check_mha(module, reference, _mha_inputs(module, rng, 3, 5, 2, np.float32), rng, average_attn_weights=False)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_masked_rows_are_nan_with_weights_and_zero_without_as_torch(need_weights):
    rng = np.random.default_rng(7)
    module, reference = _mha_pair({})
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[0] = True
    _check_mha(module, reference, _mha_inputs(module, rng, 3, 5, 2, np.float64), rng,
               key_padding_mask=kpm, need_weights=need_weights)
    output, _ = module(*_mha_inputs(module, rng, 3, 5, 2, np.float64), key_padding_mask=kpm, need_weights=need_weights)
    assert np.isnan(output[:, 0]).all() == need_weights and not np.isnan(output[:, 1]).any()


def test_mha_self_attention_gradient_is_the_sum_of_the_three():
    rng = np.random.default_rng(8)
    module, reference = _mha_pair(dict(batch_first=True))
    x = rng.standard_normal((2, 3, 4))
    x_t = _torch(x, grad=True)
    expected, _ = reference(x_t, x_t, x_t, need_weights=False)
    grad_output = rng.uniform(-1, 1, expected.shape)
    expected.backward(_torch(grad_output))
    module(x, x, x, need_weights=False)
    _close(sum(module.backward(grad_output)), x_t.grad, "grad_x")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", [dict(add_zero_attn=True), dict(batch_first=True, add_bias_kv=True)])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_training_dropout_matches_torch_with_its_own_masks(need_weights, config, dtype):
    # torch's weights path calls F.dropout, its SDPA path draws inside C++: replay_torch_dropout reads both.
    rng = np.random.default_rng(9)
    module, reference = _mha_pair(dict(dropout=0.3, **config), dtype)
    inputs = _mha_inputs(module, rng, 3, 5, 2, dtype)
    with replay_torch_dropout(reference) as masks:
        for _ in range(2):  # a second step draws new masks, in order
            reference.zero_grad()
            _check_mha(module, reference, inputs, rng, need_weights=need_weights)
    assert masks.used == 2
    module.eval()  # eval: no dropout at all
    _close(module(*inputs)[0], reference.eval()(*map(_torch, inputs))[0], "eval output")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sdpa_dropout_matches_torch_with_the_masks_it_drew(dtype):
    rng = np.random.default_rng(12)
    q, k, v, kwargs = _sdpa_case("bool_mask", rng, dtype)
    tensors = [_torch(x, grad=True) for x in (q, k, v)]
    state = torch.get_rng_state()
    expected = TF.scaled_dot_product_attention(*tensors, dropout_p=0.4, **{"attn_mask": _torch(kwargs["attn_mask"])})
    (mask,) = torch_dropout_masks(state, 0.4, [(2, 3, 5)], TORCH_DTYPE[np.dtype(dtype)])
    noise = mask.astype(dtype) / dtype(1 - 0.4)
    grad_output = rng.uniform(-1, 1, expected.shape).astype(dtype)
    expected.backward(_torch(grad_output))
    _close(scaled_dot_product_attention(q, k, v, dropout_p=0.4, noise=noise, **kwargs), expected, "output")
    grads = scaled_dot_product_attention_backward(grad_output, q, k, v, dropout_p=0.4, noise=noise, **kwargs)
    for name, grad, tensor in zip(("query", "key", "value"), grads, tensors):
        _close(grad, tensor.grad, f"grad_{name}")


def test_replay_refuses_attention_dropout_that_torch_drew_on_cuda(monkeypatch):
    module, reference = _mha_pair(dict(dropout=0.3))
    inputs = [_torch(x) for x in _mha_inputs(module, np.random.default_rng(0), 3, 5, 2, np.float64)]
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    with pytest.raises(RuntimeError, match="ran on CUDA"), replay_torch_dropout(reference, strict=False):
        reference(*inputs)


def test_mha_backward_accumulates_and_can_skip_input_gradients():
    rng = np.random.default_rng(10)
    module, _ = _mha_pair({})
    inputs = _mha_inputs(module, rng, 3, 5, 2, np.float64)
    grad_output = rng.uniform(-1, 1, (3, 2, 4))
    module(*inputs)
    first = module.backward(grad_output)
    once = {name: param.grad.copy() for name, param in module.named_parameters()}
    module(*inputs)
    assert module.backward(grad_output, needs_input_grad=False) is None
    for name, param in module.named_parameters():
        assert_close(param.grad, 2 * once[name], rtol=1e-12, name=name)
    assert len(first) == 3


class _OutputOnly(Module):
    """gradcheck's view of MultiheadAttention: the attn_output alone, need_weights=False."""

    def __init__(self, attention, **kwargs):
        super().__init__()
        self.attention, self.kwargs = attention, kwargs

    def forward(self, q, k, v):
        return self.attention(q, k, v, need_weights=False, **self.kwargs)[0]

    def backward(self, grad_output, needs_input_grad=True):
        return self.attention.backward(grad_output)


@pytest.mark.parametrize("config", [dict(kdim=3, add_bias_kv=True), dict(add_zero_attn=True, batch_first=True)])
def test_mha_gradcheck(config):
    rng = np.random.default_rng(11)
    module, _ = _mha_pair(config)
    kpm = np.array([[False, True, False], [False, False, True]])
    assert gradcheck(_OutputOnly(module, key_padding_mask=kpm), *_mha_inputs(module, rng, 2, 3, 2, np.float64))


def test_mha_errors_are_torchs():
    rng = np.random.default_rng(12)
    module, reference = _mha_pair({})
    q, k, v = _mha_inputs(module, rng, 3, 5, 2, np.float64)
    cases = [dict(is_causal=True), dict(key_padding_mask=np.zeros((3, 5), bool)),
             dict(attn_mask=np.zeros((4, 5), bool)), dict(attn_mask=np.zeros((3, 3, 5)))]
    for kwargs in cases:
        with pytest.raises((RuntimeError, AssertionError)) as ours:
            module(q, k, v, **kwargs)
        with pytest.raises((RuntimeError, AssertionError)) as theirs:
            reference(*map(_torch, (q, k, v)), **{name: _torch(value) if isinstance(value, np.ndarray) else value
                                                  for name, value in kwargs.items()})
        message = str(theirs.value).replace("torch.Size([", "(").replace("])", ")")  # tinynn prints shapes as tuples
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), message)
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        MultiheadAttention(5, 2)
    module(q, k, v, need_weights=False)
    with pytest.raises(RuntimeError, match="need_weights=False"):
        module.backward((np.ones((3, 2, 4)), np.ones((2, 3, 5))))


# ---------------------------------------------------------------------------------- property
@st.composite
def mha_cases(draw):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    config = dict(embed_dim=heads * head_dim, num_heads=heads, bias=draw(st.booleans()),
                  add_bias_kv=draw(st.booleans()), add_zero_attn=draw(st.booleans()), batch_first=draw(st.booleans()),
                  kdim=draw(st.sampled_from([None, 1, 3])), vdim=draw(st.sampled_from([None, 2])))
    sizes = dict(target_len=draw(st.integers(1, 4)), source_len=draw(st.integers(1, 4)),
                 batch=draw(st.sampled_from([None, 1, 2, 3])))
    mask_kinds = st.sampled_from([None, "bool", "float"])
    kinds = dict(kpm=draw(mask_kinds), attn=draw(mask_kinds), attn_3d=draw(st.booleans()))
    options = dict(need_weights=draw(st.booleans()), average_attn_weights=draw(st.booleans()))
    dtype, seed = draw(st.sampled_from([np.float64, np.float32])), draw(st.integers(0, 2**32 - 1))
    return config, sizes, kinds, options, dtype, seed


def _draw_mask(rng, kind, shape, dtype):
    """A bool (True = masked) or float mask that leaves key 0 of every row open: fully masked rows
    are pinned by their own test above, and NaN rows would make every later gradient NaN."""
    if kind is None:
        return None
    if kind == "bool":
        mask = rng.random(shape) < 0.4
        mask[..., 0] = False
        return mask
    mask = rng.standard_normal(shape).astype(dtype)
    mask[rng.random(shape) < 0.2] = -np.inf
    mask[..., 0] = 0.0
    return mask


@given(mha_cases())
def test_property_mha_matches_torch(case):
    config, sizes, kinds, options, dtype, seed = case
    rng = np.random.default_rng(seed)
    module, reference = _mha_pair(config, dtype, seed % 1000)
    batch, target_len, source_len = sizes["batch"], sizes["target_len"], sizes["source_len"]
    inputs = _mha_inputs(module, rng, target_len, source_len, batch, dtype)
    heads = config["num_heads"]
    kpm_shape = (source_len,) if batch is None else (batch, source_len)
    attn_shape = ((heads * (batch or 1), target_len, source_len) if kinds["attn_3d"] else (target_len, source_len))
    masks = dict(key_padding_mask=_draw_mask(rng, kinds["kpm"], kpm_shape, dtype),
                 attn_mask=_draw_mask(rng, kinds["attn"], attn_shape, dtype))
    # The size of the terms each result sums (assert_matches' ``terms``), from a = max|input|, w = max|param|
    # and E the widest feature dim: attn_output is out_proj of a mix of v = value Wv^T, about w * (w * a * E);
    # an input gradient goes back through out_proj, V^T or K, the softmax and an in-projection: w^4 a^2 E;
    # a weight gradient is that times the input once more. The upstream gradients are at most 1.
    a = max(float(np.abs(x).max()) for x in inputs)
    w = max(float(np.abs(p.data).max()) for p in module.parameters())
    width = max(module.embed_dim, module.kdim, module.vdim)
    terms = dict(output=w * w * a * width, weights=1.0, input=w**4 * a**2 * width, param=w**4 * a**3 * width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mismatched mask kinds warn, in both libraries
        _check_mha(module, reference, inputs, rng, check=assert_matches, terms=terms, **masks, **options)
