#!/usr/bin/env python3
"""Write the small PyTorch-format checkpoints the weight tests use, without needing torch.

The files reproduce what torch.save writes (zip format since torch 1.6, and the legacy
pickle-stream format), byte layout included, with stand-in classes registered under the real
torch names so pickle records the same GLOBALs. The hostile ones carry os.system / eval calls
that must be refused before anything runs.

    python3 tools/make_weight_fixtures.py crates/retrain/tests/data/weights
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, key, shape, values):
        self.storage = Storage(key, values)
        self.shape = tuple(shape)

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (
            _rebuild_tensor_v2,
            (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()),
        )


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def state_dict():
    # A PyTorch Linear(2 -> 3): weight [out, in], bias [out].
    return collections.OrderedDict(
        [
            ("fc.weight", Tensor("0", [3, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("fc.bias", Tensor("1", [3], [0.5, -0.5, 0.25])),
        ]
    )


def floats(values):
    return struct.pack("<%df" % len(values), *values)


def dumps(obj, protocol=2):
    buf = io.BytesIO()
    Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def write_zip(path, obj):
    storages = [t.storage for t in obj.values() if isinstance(t, Tensor)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", dumps(obj))
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr("archive/data/" + s.key, floats(s.values))
        z.writestr("archive/version", "3\n")


def write_legacy(path, obj):
    storages = [t.storage for t in obj.values() if isinstance(t, Tensor)]
    with open(path, "wb") as f:
        f.write(dumps(0x1950A86A20F9469CFC6C))
        f.write(dumps(1001))
        f.write(dumps({"protocol_version": 1001, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
        f.write(dumps(obj))
        f.write(dumps([s.key for s in storages]))
        for s in storages:
            f.write(struct.pack("<q", len(s.values)))
            f.write(floats(s.values))


class RunsShell:
    def __reduce__(self):
        return (os.system, ("touch /tmp/retrain-pickle-marker",))


class Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/retrain-pickle-marker')",))


class LyingPickler(Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", 10**12)
        return None


def write_lying_legacy(path):
    obj = collections.OrderedDict([("w", Tensor("0", [1000000, 1000000], [1.0, 2.0]))])
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            f.write(dumps(header))
        buf = io.BytesIO()
        LyingPickler(buf, protocol=2).dump(obj)
        f.write(buf.getvalue())
        f.write(dumps(["0"]))
        f.write(struct.pack("<q", 10**12))
        f.write(floats([1.0, 2.0]))


def write_deep_zip(path, depth):
    # data.pkl: `depth` nested lists, [[[...]]], built with EMPTY_LIST and APPEND opcodes only.
    data = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")


def safetensors(header, data=b"", declared_len=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if declared_len is None else declared_len
    return struct.pack("<Q", length) + raw + data


def write_crafted_safetensors(out):
    """Headers that lie: offsets past the end, negative and overflowing shapes, a huge declared
    header, a deeply nested header."""
    eight = floats([1.0, 2.0])
    files = {
        "offsets_past_end.safetensors": safetensors(
            {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, eight),
        "negative_shape.safetensors": safetensors(
            {"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}}, eight),
        "overflowing_shape.safetensors": safetensors(
            {"w": {"dtype": "F32", "shape": [2**62, 2**62, 16], "data_offsets": [0, 8]}}, eight),
        "shape_and_size_disagree.safetensors": safetensors(
            {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 8]}}, eight),
        "huge_header.safetensors": safetensors(b"{}", declared_len=2**60),
        "deep_nesting.safetensors": safetensors(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":'
            + b"[" * 50000 + b"]" * 50000 + b"}}", eight),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main(out):
    os.makedirs(out, exist_ok=True)
    write_zip(os.path.join(out, "linear_zip.pth"), state_dict())
    write_legacy(os.path.join(out, "linear_legacy.pth"), state_dict())
    evil = collections.OrderedDict([("fc.weight", RunsShell())])
    write_legacy(os.path.join(out, "os_system_legacy.pth"), evil)
    write_zip(os.path.join(out, "os_system_zip.pth"), evil)
    write_lying_legacy(os.path.join(out, "huge_storage_legacy.pth"))
    big = collections.OrderedDict([("w", Tensor("0", [4000, 4000], [1.0, 2.0]))])
    write_zip(os.path.join(out, "short_data_zip.pth"), big)
    with open(os.path.join(out, "eval_protocol4.pkl"), "wb") as f:
        f.write(dumps(collections.OrderedDict([("x", Evals())]), protocol=4))
    write_deep_zip(os.path.join(out, "deep_nesting_zip.pth"), 50000)
    write_crafted_safetensors(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/retrain/tests/data/weights")
