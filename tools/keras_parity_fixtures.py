#!/usr/bin/env python3
"""Parity fixtures for the zoo architectures retrain builds as graphs, computed by Keras 3.

Weights are not downloaded or stored: every variable is filled from a formula of its path and
index (`formula_weights` below; crates/retrain/tests/zoo_parity.rs implements the same formula),
so only a small input and Keras's output go into each fixture. For the smallest model the same
weights are also saved as Keras HDF5 files, in the Keras 3 (`.weights.h5`) and the Keras 2 /
applications layout, to check that retrain reads both.

    python3 -m venv /tmp/kenv && /tmp/kenv/bin/pip install keras "jax[cpu]"
    KERAS_BACKEND=jax /tmp/kenv/bin/python tools/keras_parity_fixtures.py crates/retrain/tests/data/keras
"""
import json
import math
import os
import struct
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
import numpy as np  # noqa: E402

SIZE = 96


def phase(path):
    h = 0
    for i, b in enumerate(path.encode()):
        h = (h + (i + 1) * b) % 997
    return h * 0.013


def formula_value(path, shape):
    """Values of a variable in Keras layout, from its path and shape."""
    n = int(np.prod(shape))
    k = np.arange(n, dtype=np.float64)
    s = np.sin(k * 0.61 + phase(path))
    kind = path.rsplit("/", 1)[-1]
    if kind == "kernel":
        if len(shape) == 4:
            depthwise = shape[3] == 1 and ("depthwise" in path or "dwconv" in path)
            fan_in = shape[0] * shape[1] * (1 if depthwise else shape[2])
        else:
            fan_in = shape[0]
        v = s * math.sqrt(3.0 / fan_in)
    elif kind in ("bias", "beta", "moving_mean"):
        v = 0.1 * s
    elif kind == "gamma":
        v = 1.0 + 0.1 * s
    elif kind == "moving_variance":
        v = 1.0 + 0.5 * s * s
    else:
        raise ValueError(f"no formula for {path}")
    return v.astype(np.float32).reshape(shape)


def formula_weights(model):
    for v in model.weights:
        v.assign(formula_value(v.path, tuple(v.shape)))


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def write_keras2_h5(model, path):
    """The legacy layout of Keras 2 and the Keras applications downloads: fixed-length byte
    strings in `layer_names` / `weight_names`, `:0` suffixes."""
    import h5py
    with h5py.File(path, "w") as f:
        names = [layer.name.encode() for layer in model.layers]
        f.attrs["layer_names"] = np.array(names, dtype=f"S{max(len(n) for n in names)}")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for layer in model.layers:
            group = f.create_group(layer.name)
            weight_names = [f"{layer.name}/{w.path.rsplit('/', 1)[-1]}:0".encode()
                            for w in layer.weights]
            width = max((len(n) for n in weight_names), default=1)
            group.attrs["weight_names"] = np.array(weight_names, dtype=f"S{width}")
            for name, w in zip(weight_names, layer.weights):
                group.create_dataset(name.decode(), data=np.asarray(w))


def main(out):
    os.makedirs(out, exist_ok=True)
    apps = keras.applications
    models = {
        "resnet50": lambda: apps.ResNet50(weights=None, include_top=False, pooling="avg",
                                          input_shape=(SIZE, SIZE, 3)),
        "mobilenet_v2": lambda: apps.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                                 input_shape=(SIZE, SIZE, 3)),
        "mobilenet_v2_035": lambda: apps.MobileNetV2(alpha=0.35, weights=None, include_top=False,
                                                     pooling="avg", input_shape=(SIZE, SIZE, 3)),
        "inception_v3": lambda: apps.InceptionV3(weights=None, include_top=False, pooling="avg",
                                                 input_shape=(SIZE, SIZE, 3)),
        "vgg19": lambda: apps.VGG19(weights=None, include_top=False, pooling="avg",
                                    input_shape=(SIZE, SIZE, 3)),
    }
    rng = np.random.default_rng(0)
    for name, build in models.items():
        model = build()
        formula_weights(model)
        nchw = rng.uniform(-1.0, 1.0, size=(2, 3, SIZE, SIZE)).astype(np.float32)
        output = np.asarray(model(np.transpose(nchw, (0, 2, 3, 1)), training=False))
        write_safetensors(os.path.join(out, f"parity_{name}.safetensors"),
                          {"input": nchw, "output": output},
                          {"model": name, "keras": keras.__version__, "size": str(SIZE)})
        print(name, output.shape, float(np.abs(output).max()))
        if name == "mobilenet_v2_035":
            # Keras-format weight files of the same formula weights, both layouts.
            model.save_weights(os.path.join(out, f"{name}_notop.weights.h5"))
            write_keras2_h5(model, os.path.join(out, f"{name}_notop_keras2.h5"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/retrain/tests/data/keras")
