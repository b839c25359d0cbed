"""tinynn.load on torch's own checkpoints: real files from torch.save read exactly, and hostile files
(pickles that name os.system, eval, Popen, unknown globals, whole Modules) refused with nothing run."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import tinynn
from tinynn import nn, optim
from tinynn.serialization import SerializationError, UnsafeCheckpointError


def torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(8, 3))


def assert_matches(loaded, expected) -> None:
    """``loaded`` (from tinynn.load) holds ``expected``'s (from torch.load) values, bit for bit."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach()
        expected = expected.float() if expected.dtype == torch.bfloat16 else expected
        assert isinstance(loaded, np.ndarray) and loaded.dtype == expected.numpy().dtype
        assert loaded.shape == tuple(expected.shape) and np.array_equal(loaded, expected.numpy())
    elif isinstance(expected, dict):
        assert list(loaded) == list(expected)
        for key in expected:
            assert_matches(loaded[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for a, e in zip(loaded, expected):
            assert_matches(a, e)
    else:
        assert loaded == expected and type(loaded) is type(expected)


def test_model_state_dict_with_buffers(tmp_path: Path) -> None:
    model = torch_model()
    model(torch.randn(4, 1, 4, 4))  # moves BatchNorm's running stats and num_batches_tracked
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = tinynn.load(tmp_path / "model.pt")
    assert_matches(loaded, model.state_dict())
    assert loaded["1.num_batches_tracked"].dtype == np.int64 and loaded["1.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_state_dict_loads_into_tinynn(tmp_path: Path, kind: str) -> None:
    model = torch.nn.Linear(3, 2).double()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if kind == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    for _ in range(2):
        model(torch.randn(5, 3, dtype=torch.float64)).square().sum().backward()
        opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    loaded = tinynn.load(tmp_path / "opt.pt")
    assert_matches(loaded, opt.state_dict())
    ours = nn.Linear(3, 2).double()
    ours_opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9) if kind == "sgd" else optim.Adam(ours.parameters())
    ours_opt.load_state_dict(loaded)
    assert ours_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_views_parameters_and_dtypes(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    value = {
        "view": base[1:, ::2], "transposed": base.t(), "base": base, "expanded": torch.ones(3, 1).expand(3, 4),
        "param": torch.nn.Parameter(torch.randn(2, 2)), "half": torch.randn(3).half(), "uint16": torch.arange(3).to(
        torch.uint16), "bool": torch.tensor([True, False]), "int8": torch.tensor([-1, 2], dtype=torch.int8),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "list": [torch.ones(1), (1, 2.5, "x", None)],
    }
    torch.save(value, tmp_path / "misc.pt")
    loaded = tinynn.load(tmp_path / "misc.pt")
    assert_matches(loaded, value)
    assert all(array.flags.owndata and array.flags.writeable and array.flags.c_contiguous
               for array in (loaded["view"], loaded["transposed"], loaded["expanded"]))


def test_bfloat16_is_widened_with_a_warning(tmp_path: Path) -> None:
    values = torch.tensor([1.0, -3.5, 1e38, float("inf")]).bfloat16()
    torch.save({"w": values}, tmp_path / "bf16.pt")
    with pytest.warns(UserWarning, match="bfloat16"):
        loaded = tinynn.load(tmp_path / "bf16.pt")
    assert loaded["w"].dtype == np.float32 and np.array_equal(loaded["w"], values.float().numpy())


def rewrite(path: Path, out: Path, change) -> None:
    """Copy the zip at ``path`` to ``out``, each record's bytes passed through ``change(name, data)``
    (a record for which it returns None is left out)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = change(name, source.read(name))
            if data is not None:
                target.writestr(name, data)


def test_big_endian_files_and_gpu_locations(tmp_path: Path) -> None:
    weight = torch.randn(3, 2, dtype=torch.float64)
    torch.save({"w": weight}, tmp_path / "w.pt")

    def to_big_endian_on_gpu(name, data):
        if name.endswith("byteorder"):
            return b"big"
        if name.endswith("data/0"):
            return np.frombuffer(data, "<f8").astype(">f8").tobytes()
        if name.endswith("data.pkl"):
            return data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        return data
    rewrite(tmp_path / "w.pt", tmp_path / "big.pt", to_big_endian_on_gpu)
    assert b"cuda:0" in zipfile.ZipFile(tmp_path / "big.pt").read("w/data.pkl")
    assert_matches(tinynn.load(tmp_path / "big.pt"), {"w": weight})


# ---------------------------------------------------------------------- hostile files
class Reduce:
    """Pickles as a call of ``function(*args)``: what an attacker puts in a checkpoint."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def hostile_payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """name -> (an object whose unpickling would create ``marker``, the global the error must name)."""
    command = f"touch {marker}"
    return {
        "os.system": (Reduce(os.system, command), f"{os.system.__module__}.system"),
        "eval": (Reduce(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "exec": (Reduce(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        "Popen": (Reduce(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "open": (Reduce(open, str(marker), "w"), "io.open"),
        "getattr": (Reduce(getattr, Reduce(__import__, "os"), "system"), "builtins.getattr"),
    }


@pytest.mark.parametrize("name", ["os.system", "eval", "exec", "Popen", "open", "getattr"])
@pytest.mark.parametrize("where", ["whole", "beside a tensor", "in the tensor hooks"])
def test_pickles_that_call_code_are_refused_and_nothing_runs(tmp_path: Path, name: str, where: str) -> None:
    marker = tmp_path / "pwned"
    payload, global_name = hostile_payloads(marker)[name]
    path = tmp_path / "evil.pt"
    if where == "whole":
        torch.save(payload, path)
    elif where == "beside a tensor":
        torch.save({"weight": torch.ones(2), "bias": payload}, path)
    else:  # the hooks argument of _rebuild_tensor_v2, which the reader is given by the pickle
        torch.save({"weight": torch.ones(2)}, path)
        evil = pickletools.optimize(pickle.dumps(payload, protocol=2))[2:-1]  # its opcodes, no PROTO, STOP, PUTs
        hooks = re.compile(rb"ccollections\nOrderedDict\nq(.)\)R", re.DOTALL)  # OrderedDict() as the hooks
        rewrite(path, tmp_path / "evil2.pt", lambda n, d: hooks.sub(lambda m: evil + b"q" + m[1], d, count=1)
                if n.endswith("data.pkl") else d)
        path = tmp_path / "evil2.pt"
        assert evil in zipfile.ZipFile(path).read("evil/data.pkl")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load the global") as error:
        tinynn.load(path)
    assert global_name in str(error.value)  # a protocol-2 pickle's __builtin__.eval is named builtins.eval too
    assert isinstance(error.value, pickle.UnpicklingError) and isinstance(error.value, ValueError)
    assert not marker.exists()


def test_a_pickled_module_and_unknown_globals_are_refused(tmp_path: Path) -> None:
    torch.save(torch_model(), tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.container\.Sequential.*state_dict"):
        tinynn.load(tmp_path / "model.pt")
    torch.save({"device": torch.device("cpu"), "size": torch.Size([2])}, tmp_path / "other.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"global torch\.(device|Size)"):
        tinynn.load(tmp_path / "other.pt")
    with zipfile.ZipFile(tmp_path / "unknown.pt", "w") as archive:
        archive.writestr("unknown/data.pkl", b"\x80\x02cno_such_module\nthing\n)R.")
    with pytest.raises(UnsafeCheckpointError, match=r"global no_such_module\.thing"):
        tinynn.load(tmp_path / "unknown.pt")


def test_tensors_that_reach_outside_their_storage_are_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(6.0)}, tmp_path / "w.pt")
    cases = {  # the BININT1 offset and size of the tensor in data.pkl: offset 0, size (6,), stride (1,)
        "offset": (b"QK\x00K\x06\x85", b"QK\x01K\x06\x85"),
        "size": (b"QK\x00K\x06\x85", b"QK\x00K\x07\x85"),
        "stride": (b"K\x01\x85q", b"K\x02\x85q"),
    }
    for what, (old, new) in cases.items():
        rewrite(tmp_path / "w.pt", tmp_path / f"{what}.pt", lambda n, d, o=old, w=new: d.replace(o, w, 1)
                if n.endswith("data.pkl") else d)
        assert zipfile.ZipFile(tmp_path / f"{what}.pt").read("w/data.pkl").count(new) >= 1
        with pytest.raises(SerializationError, match="past the storage"):
            tinynn.load(tmp_path / f"{what}.pt")


def test_incomplete_and_corrupt_archives_are_clear_errors(tmp_path: Path) -> None:
    model = torch_model()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    rewrite(tmp_path / "model.pt", tmp_path / "missing.pt", lambda n, d: None if n.endswith("data/2") else d)
    with pytest.raises(SerializationError, match="no record 'model/data/2'"):
        tinynn.load(tmp_path / "missing.pt")
    rewrite(tmp_path / "model.pt", tmp_path / "short.pt", lambda n, d: d[:-4] if n.endswith("data/0") else d)
    with pytest.raises(SerializationError, match="needs"):
        tinynn.load(tmp_path / "short.pt")
    rewrite(tmp_path / "model.pt", tmp_path / "nopkl.pt", lambda n, d: None if n.endswith("data.pkl") else d)
    with pytest.raises(SerializationError, match="not a torch checkpoint"):
        tinynn.load(tmp_path / "nopkl.pt")
    rewrite(tmp_path / "model.pt", tmp_path / "junk.pt", lambda n, d: d[:40] if n.endswith("data.pkl") else d)
    with pytest.raises(SerializationError, match="not a pickle of a state_dict"):
        tinynn.load(tmp_path / "junk.pt")

    data = (tmp_path / "model.pt").read_bytes()
    for length in range(0, len(data), max(1, len(data) // 200)):
        with pytest.raises(SerializationError):
            tinynn.load(io.BytesIO(data[:length]))
    record = zipfile.ZipFile(tmp_path / "model.pt").getinfo("model/data/0")
    flipped = bytearray(data)
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_length + extra_length  # the record's first byte
    assert data[start:start + record.file_size] == zipfile.ZipFile(tmp_path / "model.pt").read(record)
    flipped[start] ^= 0xFF  # the zip's CRC check catches it
    with pytest.raises(SerializationError):
        tinynn.load(io.BytesIO(bytes(flipped)))


@pytest.mark.parametrize("protocol", range(6))
def test_the_format_before_torch_1_6_is_recognised_in_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False,
               pickle_protocol=protocol)
    with pytest.raises(SerializationError, match=r"format before torch 1\.6.*save it again"):
        tinynn.load(tmp_path / "legacy.pt")


def test_a_bare_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "bare.pkl").write_bytes(pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=4))
    with pytest.raises(SerializationError, match="bare pickle"):
        tinynn.load(tmp_path / "bare.pkl")
    assert not marker.exists()


def test_a_loaded_checkpoint_fills_a_tinynn_model(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 3)).double()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).double()
    ours.load_state_dict(tinynn.load(tmp_path / "model.pt"))
    x = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    with tinynn.no_grad():
        np.testing.assert_allclose(ours(x), expected, rtol=1e-13, atol=0)
