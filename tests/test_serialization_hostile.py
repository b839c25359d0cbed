"""tinynn.load on crafted torch checkpoints: globals reached through every pickle protocol and
opcode, BUILD aimed at the reader's stand-ins, small files that expand into huge arrays, cyclic and
deeply nested pickles, dtypes NumPy lacks. Each is refused with a clear error, nothing runs, and
nothing outside the one load changes."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import tinynn
from tinynn.serialization import SerializationError, UnsafeCheckpointError, torch_pickle

ROOT = Path(__file__).resolve().parents[1]


def torch_like_zip(pickled: bytes, records: dict[str, bytes] | None = None) -> io.BytesIO:
    """A zip laid out as torch.save lays it out, holding ``pickled`` as its data.pkl."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil/data.pkl", pickled)
        archive.writestr("evil/byteorder", "little")
        for key, data in (records or {}).items():
            archive.writestr(f"evil/data/{key}", data)
    buffer.seek(0)
    return buffer


def rewrite_pickle(data: bytes, old: bytes, new: bytes) -> io.BytesIO:
    """The torch zip ``data`` with ``old`` replaced by ``new`` (once) in its data.pkl."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for name in source.namelist():
            record = source.read(name)
            if name.endswith("data.pkl"):
                assert old in record
                record = record.replace(old, new, 1)
            target.writestr(name, record)
    buffer.seek(0)
    return buffer


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------- every protocol, every opcode
class Call:
    """Pickles as the call ``module.name(argument)``."""

    def __init__(self, module: str, name: str, argument: str) -> None:
        self.module, self.name, self.argument = module, name, argument

    def __reduce__(self):
        return getattr(__import__(self.module), self.name), (self.argument,)


def calling_pickle(protocol: int, form: str, module: str, name: str, argument: str) -> bytes:
    """A pickle that calls ``module.name(argument)``, in the given protocol and opcode ``form``."""
    if form == "dumps":  # what pickle itself writes: GLOBAL (STACK_GLOBAL from protocol 4) and REDUCE
        return pickle.dumps(Call(module, name, argument), protocol=protocol)
    header = bytes([0x80, protocol]) if protocol >= 2 else b""  # PROTO exists from protocol 2 on
    arg = b"V" + argument.encode("raw_unicode_escape") + b"\n"
    named = f"{module}\n{name}\n".encode()
    body = {"GLOBAL": b"c" + named + b"(" + arg + b"tR",
            "STACK_GLOBAL": f"V{module}\nV{name}\n".encode() + b"\x93(" + arg + b"tR",
            "INST": b"(" + arg + b"i" + named,
            "OBJ": b"(c" + named + arg + b"o"}[form]
    return header + body + b"."


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("form", ["dumps", "GLOBAL", "STACK_GLOBAL", "INST", "OBJ"])
@pytest.mark.parametrize("target", ["system", "eval"])
def test_a_global_is_refused_in_every_protocol_and_opcode(tmp_path: Path, protocol: int, form: str,
                                                          target: str) -> None:
    marker = tmp_path / "pwned"
    module, argument = ((os.system.__module__, f"touch {marker}") if target == "system"
                        else ("builtins", f"open({str(marker)!r}, 'w')"))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load the global") as error:
        tinynn.load(torch_like_zip(calling_pickle(protocol, form, module, target, argument)))
    assert f"{module}.{target}" in str(error.value)  # a protocol-2 __builtin__.eval is named builtins.eval too
    assert not marker.exists()


# ---------------------------------------------------------------------- BUILD
def module_state() -> dict:
    """The attributes of everything torch_pickle holds at module level (its functions' defaults too)."""
    state = {}
    for name, value in vars(torch_pickle).items():
        if hasattr(value, "__dict__"):
            state[name] = (dict(vars(value)), getattr(value, "__defaults__", None))
    return state


BUILDS = {  # pickle's BUILD (b) on: name -> (data.pkl, what the error must name)
    "a storage class's __dict__": (b"\x80\x02ctorch\nUntypedStorage\n}X\x05\x00\x00\x00numpyK\x07sb0}.",
                                   "the global torch.UntypedStorage"),
    "a rebuild function's __dict__": (b"ctorch._utils\n_rebuild_tensor_v2\n}X\x03\x00\x00\x00pwnK\x07sb0}.",
                                      "the global torch._utils._rebuild_tensor_v2"),
    "a function's __defaults__": (b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__"
                                  b"K\x01\x85s\x86b0}.", "the global torch._utils._rebuild_parameter"),
    "OrderedDict itself": (b"\x80\x02ccollections\nOrderedDict\n}X\x03\x00\x00\x00pwnK\x07sb0}.",
                           "the global collections.OrderedDict"),
    "an OrderedDict's other attributes": (b"\x80\x02ccollections\nOrderedDict\n)R}X\x03\x00\x00\x00pwnK\x07sb.",
                                          "an object of type OrderedDict"),
    "a storage": (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
                  b"K\x01tQ}X\x08\x00\x00\x00elementsK\x07sb0}.", "an object of type _Storage"),
}


@pytest.mark.parametrize("case", list(BUILDS))
def test_build_is_refused_naming_its_target_and_changes_nothing(tmp_path: Path, case: str) -> None:
    pickled, named = BUILDS[case]
    before = module_state()
    with pytest.raises(UnsafeCheckpointError, match="BUILD") as error:
        tinynn.load(torch_like_zip(pickled, {"0": bytes(4)}))
    assert named in str(error.value)
    assert module_state() == before
    weight = torch.randn(3, 2)
    torch.save(torch.nn.Linear(2, 3).state_dict() | {"weight": weight}, tmp_path / "ok.pt")
    assert np.array_equal(tinynn.load(tmp_path / "ok.pt")["weight"], weight.numpy())  # later loads still work


def test_the_metadata_torch_builds_onto_a_state_dict_is_kept() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    loaded = tinynn.load(io.BytesIO(saved(model.state_dict())))
    assert type(loaded) is OrderedDict and loaded._metadata == model.state_dict()._metadata


def test_metadata_holding_anything_but_plain_values_is_refused() -> None:
    pickled = (b"\x80\x02ccollections\nOrderedDict\n)R}X\t\x00\x00\x00_metadatactorch._utils\n_rebuild_parameter\n"
               b"sb.")
    with pytest.raises(SerializationError, match=r"the checkpoint\._metadata is a _StandIn"):
        tinynn.load(torch_like_zip(pickled))


def test_stand_ins_are_made_for_each_load_and_cannot_be_changed() -> None:
    first, second = (torch_pickle._allowed_globals(torch_pickle._Reader(None, "", "little", "x", 0)) for _ in "12")
    for key, stand_in in first.items():
        if stand_in is not OrderedDict:
            assert stand_in is not second[key] and not hasattr(stand_in, "__dict__"), key
            with pytest.raises(AttributeError):  # frozen, and slots: no attribute can be set or added
                stand_in.name = "changed"


# ---------------------------------------------------------------------- small files, huge arrays
def test_a_tiny_file_that_expands_to_400_mb_is_refused() -> None:
    data = saved({"w": torch.ones(1).expand(1000, 100)})
    assert tinynn.load(io.BytesIO(data))["w"].shape == (1000, 100)  # a modest expanded tensor still loads
    bomb = rewrite_pickle(data, b"M\xe8\x03Kd\x86", b"J\x40\x42\x0f\x00Kd\x86")  # size (1_000_000, 100)
    assert len(bomb.getvalue()) < 2000
    with pytest.raises(SerializationError, match=r"size \(1000000, 100\), stride \(0, 0\) would need 400000000 bytes"):
        tinynn.load(bomb)


def test_the_limit_counts_all_the_tensors_of_a_file() -> None:
    data = saved({f"w{index}": torch.ones(1).expand(1000, 1000) for index in range(20)})  # 4 MB each, 80 MB in all
    with pytest.raises(SerializationError, match=r"storage \d+: a tensor of size \(1000, 1000\), stride \(0, 0\)"):
        tinynn.load(io.BytesIO(data))


def test_a_compressed_storage_that_inflates_past_the_limit_is_refused_before_it_is_read() -> None:
    numel = 20_000_000  # 80 MB of float32 zeros, about 80 KB deflated
    pickled = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
               b"FloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ" + numel.to_bytes(4, "little") + b"tQK\x00J"
               + numel.to_bytes(4, "little") + b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bomb/data.pkl", pickled)
        archive.writestr("bomb/data/0", bytes(4 * numel), compress_type=zipfile.ZIP_DEFLATED)
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(SerializationError, match=r"record 'bomb/data/0' would need 80000000 bytes"):
        tinynn.load(io.BytesIO(buffer.getvalue()))


def test_a_pickle_storing_at_memo_index_2_31_allocates_nothing() -> None:
    # pickle's C unpickler would make its memo 32 GiB long; run where 1 GiB of address space is all there is
    pytest.importorskip("resource")
    script = ("import io, resource, zipfile, tinynn\n"
              "resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))\n"
              "buffer = io.BytesIO()\n"
              "with zipfile.ZipFile(buffer, 'w') as archive:\n"
              "    archive.writestr('evil/data.pkl', b'\\x80\\x02K\\x01r\\x00\\x00\\x00\\x80.')\n"
              "print(tinynn.load(io.BytesIO(buffer.getvalue())))\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == "1\n", result.stderr[-2000:]


# ---------------------------------------------------------------------- cycles and depth
@pytest.mark.parametrize("pickled", [b"\x80\x02]q\x00h\x00a.", b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.",
                                     b"\x80\x02]q\x00]q\x01h\x00a\x85a."])
def test_a_pickle_that_contains_itself_is_a_clear_error(pickled: bytes) -> None:
    with pytest.raises(SerializationError, match="a container around itself"):
        tinynn.load(torch_like_zip(pickled))


def test_lists_nested_5000_deep_and_one_list_in_two_places_load() -> None:
    loaded = tinynn.load(torch_like_zip(b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."))
    for _ in range(4999):
        (loaded,) = loaded
    assert loaded == []
    shared = tinynn.load(torch_like_zip(b"\x80\x02]q\x00h\x00\x86."))
    assert shared == ([], []) and shared[0] is shared[1]


def test_a_bare_stand_in_deep_down_is_named_by_its_path() -> None:
    pickled = b"\x80\x02" + b"]" * 3000 + b"ctorch\nfloat32\n" + b"a" * 3000 + b"."
    with pytest.raises(SerializationError, match=r"the checkpoint\[0\]\[0\]\[0\]\[0\]\.\.\.\[0\]\[0\]\[0\] is a "
                                                 r"_TorchDtype"):
        tinynn.load(torch_like_zip(pickled))


# ---------------------------------------------------------------------- dtypes NumPy lacks
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex32])
def test_an_unsupported_dtype_is_named_as_such_not_as_unsafe(dtype: torch.dtype) -> None:
    data = saved({"w": torch.zeros(2).to(dtype)})
    with pytest.raises(SerializationError, match=f"unsupported dtype {dtype}") as error:
        tinynn.load(io.BytesIO(data))
    assert not isinstance(error.value, UnsafeCheckpointError)


def test_complex_numbers_load_and_complex_of_a_string_does_not() -> None:
    value = {"c": 1 + 2j, "w": torch.ones(2)}
    loaded = tinynn.load(io.BytesIO(saved(value)))
    assert loaded["c"] == 1 + 2j and type(loaded["c"]) is complex
    with pytest.raises(SerializationError, match="needs two reals") as error:
        tinynn.load(torch_like_zip(b"\x80\x02c__builtin__\ncomplex\nX\x04\x00\x00\x001+2j\x85R."))
    assert not isinstance(error.value, UnsafeCheckpointError)
