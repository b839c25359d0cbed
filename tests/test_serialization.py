"""tinynn.save and tinynn.load on safetensors: exact round trips of state_dicts, interchange with the
safetensors library, atomic writes, and clear errors for every truncated or corrupt file."""

from __future__ import annotations

import io
import json
import math
import re
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as safetensors_numpy  # a test dependency (pyproject's `test` extra)
import safetensors.torch as safetensors_torch
import torch

import tinynn
from tinynn import nn, optim
from tinynn.serialization import STRUCTURE_KEY, SerializationError
from tinynn.serialization import safetensors as st_format

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def small_model() -> nn.Module:
    """Linear-ReLU-Linear in float64, with a 0-d int64 buffer like BatchNorm's num_batches_tracked."""
    tinynn.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    model[0].register_buffer("count", np.array(7, dtype=np.int64))
    return model


def train_steps(model: nn.Module, opt: optim.Optimizer, steps: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = rng.standard_normal((6, 4))
        out = model(x)
        model.backward(rng.standard_normal(out.shape), needs_input_grad=False)
        opt.step()
        opt.zero_grad()


def assert_same(actual, expected) -> None:
    """Equal values, types, dtypes and shapes, recursively; arrays bit for bit."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, np.ndarray) or isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind == "f")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        assert all(type(a) is type(e) for a, e in zip(actual, expected))  # int keys stay ints
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == expected


def test_model_state_dict_round_trips_exactly(tmp_path: Path) -> None:
    model = small_model()
    path = tmp_path / "model.safetensors"
    tinynn.save(model.state_dict(), path)
    loaded = tinynn.load(path)
    assert_same(loaded, model.state_dict())
    assert loaded["0.count"].shape == () and loaded["0.count"].dtype == np.int64
    fresh = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    fresh[0].register_buffer("count", np.array(0, dtype=np.int64))
    fresh.load_state_dict(loaded)
    assert_same(fresh.state_dict(), model.state_dict())


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_state_dict_round_trips_and_resumes(tmp_path: Path, kind: str) -> None:
    def make(model):
        return (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if kind == "sgd"
                else optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99)))
    model = small_model()
    opt = make(model)
    train_steps(model, opt, 3)
    tinynn.save(opt.state_dict(), tmp_path / "opt.safetensors")
    loaded = tinynn.load(tmp_path / "opt.safetensors")
    assert_same(loaded, opt.state_dict())
    if kind == "adam":
        assert loaded["state"][0]["step"].dtype == np.float32 and loaded["state"][0]["step"].shape == ()
        assert loaded["param_groups"][0]["betas"] == (0.8, 0.99)
    twin = small_model()
    twin.load_state_dict(model.state_dict())
    twin_opt = make(twin)
    twin_opt.load_state_dict(loaded)
    train_steps(model, opt, 2)
    train_steps(twin, twin_opt, 2)
    assert_same(twin.state_dict(), model.state_dict())


def test_nested_structures_and_values_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    value = {
        0: {"int key": np.arange(3)}, "0": "a str key", 7: None,
        "numbers": [1, -2**70, 0.1, 1e-310, float("inf"), float("-inf"), float("nan"), True, False],
        "tuple": (1, (2.5, "x")), "empty": [{}, [], (), OrderedDict()],
        "scalars": [np.float32(1.5), np.float64(0.1), np.int64(-3), np.bool_(True)],
        "arrays": {name: (rng.standard_normal((2, 3)) * 50).astype(name) for name in DTYPES},
        "odd": [np.zeros((0, 4)), np.full((), 2.0), np.arange(12.0).reshape(3, 4)[:, ::2],
                np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(4, dtype=">i4")],
        "rng": tinynn.get_rng_state(),
    }
    tinynn.save(value, tmp_path / "nested.safetensors")
    loaded = tinynn.load(tmp_path / "nested.safetensors")
    value["odd"][4] = value["odd"][4].astype("<i4")  # stored little-endian, loaded in native order
    assert_same(loaded, value)
    for array in loaded["odd"]:
        assert array.flags.c_contiguous and array.flags.writeable and array.flags.owndata


def test_interchange_with_the_safetensors_library(tmp_path: Path) -> None:
    model = small_model()
    tinynn.save(model.state_dict(), tmp_path / "ours.safetensors")
    theirs = safetensors_torch.load_file(tmp_path / "ours.safetensors")
    assert list(theirs) == list(model.state_dict()) or set(theirs) == set(model.state_dict())
    for name, array in model.state_dict().items():
        assert np.array_equal(theirs[name].numpy(), array) and theirs[name].numpy().dtype == array.dtype

    tensors = {"weight": torch.randn(3, 4, dtype=torch.float64), "half": torch.randn(5).half(),
               "flags": torch.tensor([True, False]), "count": torch.tensor(3), "empty": torch.zeros(0, 2)}
    safetensors_torch.save_file(tensors, tmp_path / "theirs.safetensors", metadata={"format": "pt"})
    loaded = tinynn.load(tmp_path / "theirs.safetensors")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert_same(loaded[name], tensor.numpy())


def test_interchange_with_safetensors_numpy(tmp_path: Path) -> None:
    state = dict(small_model().state_dict())
    tinynn.save(state, tmp_path / "ours.safetensors")
    theirs = safetensors_numpy.load_file(tmp_path / "ours.safetensors")
    assert set(theirs) == set(state)
    for name, array in state.items():
        assert_same(theirs[name], array)

    rng = np.random.default_rng(0)
    tensors = {"weight": rng.standard_normal((3, 4)), "half": rng.standard_normal(5).astype(np.float16),
               "flags": np.array([True, False]), "count": np.array(3, dtype=np.int64), "empty": np.zeros((0, 2))}
    safetensors_numpy.save_file(tensors, tmp_path / "theirs.safetensors", metadata={"note": "from numpy"})
    loaded = tinynn.load(tmp_path / "theirs.safetensors")
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert_same(loaded[name], array)


def test_a_key_named_like_the_safetensors_metadata_is_saved(tmp_path: Path) -> None:
    value = {"__metadata__": np.arange(3.0), "a": {"__metadata__": np.ones(2)}, "__metadata__#2": np.zeros(1)}
    tinynn.save(value, tmp_path / "odd.safetensors")
    assert_same(tinynn.load(tmp_path / "odd.safetensors"), value)
    tensors = safetensors_numpy.load_file(tmp_path / "odd.safetensors")  # a valid file for another reader too
    assert sorted(tensors) == ["__metadata__#2", "__metadata__#2#2", "a.__metadata__"]


def test_bfloat16_is_widened_to_float32_with_a_warning(tmp_path: Path) -> None:
    values = torch.tensor([1.0, -2.5, 3.1e38, 1e-40, float("inf")]).bfloat16()
    safetensors_torch.save_file({"x": values}, tmp_path / "bf16.safetensors")
    with pytest.warns(UserWarning, match="bfloat16"):
        loaded = tinynn.load(tmp_path / "bf16.safetensors")
    assert loaded["x"].dtype == np.float32
    assert np.array_equal(loaded["x"], values.float().numpy())


def test_file_objects(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    tinynn.save({"a": np.arange(3.0)}, buffer)
    buffer.seek(0)
    assert_same(tinynn.load(buffer), {"a": np.arange(3.0)})


@pytest.mark.parametrize("value", [
    {"a": object()}, {(1, 2): np.zeros(2)}, {True: 1}, {"a": np.zeros(2, dtype=complex)},
    {"a": np.array(["text"])}, {"a": {1, 2}},
])
def test_unsupported_values_are_refused_before_any_file_is_written(tmp_path: Path, value) -> None:
    with pytest.raises(TypeError):
        tinynn.save(value, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    tinynn.save({"old": np.zeros(3)}, path)
    before = path.read_bytes()
    calls = []

    def fail_on_second(file, array):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (planted)")
        original(file, array)

    original = st_format.write_tensor
    monkeypatch.setattr(st_format, "write_tensor", fail_on_second)
    with pytest.raises(OSError, match="planted"):
        tinynn.save({"a": np.ones(1000), "b": np.ones(1000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    monkeypatch.undo()
    tinynn.save({"new": np.ones(2)}, path)
    assert list(tinynn.load(path)) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_every_truncation_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tinynn.save(small_model().state_dict(), path)
    data = path.read_bytes()
    for length in range(len(data)):
        with pytest.raises(SerializationError, match=r"truncated|not a safetensors|not valid JSON") as error:
            tinynn.load(io.BytesIO(data[:length]))
        assert "<file object>" in str(error.value)
    path.write_bytes(data[:-1])
    with pytest.raises(SerializationError, match=r"model\.safetensors: the file is truncated"):
        tinynn.load(path)


def rewrite_header(data: bytes, edit) -> bytes:
    """``data`` with its JSON header changed by ``edit`` (the data bytes kept)."""
    header, start = st_format.read_header(data, "x")
    edit(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[start:]


def _set(path: list, value):
    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set(["a", "dtype"], "F128"), "unsupported dtype"),
    (_set(["a", "shape"], [2, -1]), "invalid shape"),
    (_set(["a", "shape"], [3]), "needs 24 bytes, its data_offsets span 16"),
    (_set(["a", "data_offsets"], [0, 99]), "needs"),
    (_set(["b", "data_offsets"], [8, 24]), "overlaps"),
    (_set(["a", "extra"], 1), "exactly"),
    (_set(["__metadata__", STRUCTURE_KEY], "{not json"), "not valid JSON"),
    (_set(["__metadata__", STRUCTURE_KEY], '{"dict": [["a", {"tensor": "zz"}]]}'), "unexpected entry"),
    (_set(["__metadata__", STRUCTURE_KEY], '{"dict": [["a", {"tensor": "a"}]]}'), "not in the file's structure"),
    (_set(["__metadata__", STRUCTURE_KEY], '{"set": []}'), "unexpected entry"),
    (_set(["__metadata__", STRUCTURE_KEY], '{"dict": [["a", {"tensor": ["a"]}]]}'), "unexpected entry"),
    (_set(["__metadata__", "format"], 3), "strings to strings"),
])
def test_corrupt_headers_are_clear_errors(edit, message) -> None:
    buffer = io.BytesIO()
    tinynn.save({"a": np.zeros(2), "b": np.ones(2)}, buffer)
    with pytest.raises(SerializationError, match=message):
        tinynn.load(io.BytesIO(rewrite_header(buffer.getvalue(), edit)))


def deep_structure(depth: int) -> bytes:
    """A file whose tinynn.structure is the tensor "a" in ``depth`` nested lists."""
    buffer = io.BytesIO()
    tinynn.save({"a": np.zeros(2)}, buffer)
    nested = '{"list": [' * depth + '{"tensor": "a"}' + "]}" * depth
    return rewrite_header(buffer.getvalue(), _set(["__metadata__", STRUCTURE_KEY], nested))


def test_a_structure_nested_200_deep_loads() -> None:
    loaded = tinynn.load(io.BytesIO(deep_structure(200)))
    for _ in range(200):
        (loaded,) = loaded
    assert_same(loaded, np.zeros(2))


@pytest.mark.parametrize("depth", [600, 5000])  # too deep for the decoding's recursion; for json's too
def test_a_structure_nested_too_deeply_is_a_clear_error(depth: int) -> None:
    with pytest.raises(SerializationError, match="nests containers too deeply"):
        tinynn.load(io.BytesIO(deep_structure(depth)))


def test_a_header_nested_too_deeply_is_a_clear_error() -> None:
    text = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(SerializationError, match="header nests too deeply"):
        tinynn.load(io.BytesIO(struct.pack("<Q", len(text)) + text))


@pytest.mark.parametrize("data", [b"", b"hello world, not a model", bytes(range(256)) * 4,
                                  np.random.default_rng(0).bytes(4096), b"\x80\x04\x95" + bytes(40)])
def test_random_bytes_are_clear_errors(data: bytes) -> None:
    with pytest.raises(SerializationError):
        tinynn.load(io.BytesIO(data))


@pytest.mark.parametrize("data", [b"hello world, not a model", b"(dp0\nVa\np1\nI1\ns.", bytes(8) + b"{}"])
def test_an_unknown_format_says_what_it_is_not_and_what_it_starts_with(data: bytes) -> None:
    with pytest.raises(SerializationError, match="not a tinynn, safetensors or torch zip file") as error:
        tinynn.load(io.BytesIO(data))
    assert repr(data[:16]) in str(error.value)


def torch_twin() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()


@pytest.mark.parametrize("change", ["missing", "unexpected", "size", "all"])
def test_load_state_dict_errors_stay_torchs_and_nothing_is_written(tmp_path: Path, change: str) -> None:
    model = small_model()
    del model[0]._buffers["count"]  # now it has torch's twin's keys
    state = dict(model.state_dict())
    if change in ("missing", "all"):
        del state["0.bias"]
    if change in ("unexpected", "all"):
        state["2.extra"] = np.zeros(1)
    if change in ("size", "all"):  # the last key: a load that checked and wrote key by key would write the rest
        state["2.bias"] = np.zeros(4)
    tinynn.save(state, tmp_path / "bad.safetensors")
    fresh = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    before = {name: array.copy() for name, array in fresh.state_dict().items()}
    with pytest.raises(RuntimeError) as ours:
        fresh.load_state_dict(tinynn.load(tmp_path / "bad.safetensors"))
    with pytest.raises(RuntimeError) as theirs:
        torch_twin().load_state_dict(safetensors_torch.load_file(tmp_path / "bad.safetensors"))
    as_tuples = re.sub(r"torch\.Size\(\[([\d, ]*)\]\)", lambda m: str(tuple(int(n) for n in m[1].split(", "))),
                       str(theirs.value))
    assert str(ours.value) == as_tuples
    assert_same(dict(fresh.state_dict()), before)


@pytest.mark.parametrize("last", [np.array(["a", "b", "c"]), np.array([b"x", b"y", b"z"])])
def test_a_value_that_cannot_convert_on_the_last_key_writes_nothing(last: np.ndarray) -> None:
    state = dict(small_model().state_dict())
    state["2.bias"] = last  # the right shape, but no float64 in it
    fresh = small_model()
    for array in fresh.state_dict().values():
        array[...] = 0
    with pytest.raises(RuntimeError, match=r'While copying the parameter named "2\.bias", whose dimensions in '
                                           r"the model are \(3,\) and whose dimensions in the checkpoint are \(3,\)"):
        fresh.load_state_dict(state)
    assert all(not array.any() for array in fresh.state_dict().values())


def test_rng_state_round_trips_through_a_file(tmp_path: Path) -> None:
    tinynn.manual_seed(3)
    generator = tinynn.default_generator()
    tinynn.save({"rng": tinynn.get_rng_state()}, tmp_path / "rng.safetensors")
    expected = generator.standard_normal(5)
    generator.standard_normal(100)
    tinynn.set_rng_state(tinynn.load(tmp_path / "rng.safetensors")["rng"])
    assert tinynn.default_generator() is generator  # set in place: samplers holding it see the change
    assert np.array_equal(generator.standard_normal(5), expected)
