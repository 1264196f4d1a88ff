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


def efficientnet_lite(width, depth, size):
    """EfficientNet-Lite (Keras has none) written with Keras layers and Keras EfficientNet names:
    TF "same" padding, BatchNorm epsilon 1e-3, ReLU6, no squeeze-excitation, the stem, the head
    and the first and last stages' repeats fixed (TF's lite builder)."""
    L = keras.layers

    def round_filters(f):
        scaled = f * width
        new = max(8, int(scaled + 4) // 8 * 8)
        return new + 8 if new < 0.9 * scaled else new

    def bn(name, x):
        return L.BatchNormalization(epsilon=1e-3, name=name)(x)

    inputs = keras.Input((size, size, 3))
    x = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.ReLU(6.0, name="stem_activation")(bn("stem_bn", x))
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
              (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
              (6, 3, 1, 192, 320, 1)]
    for stage, (expand, kernel, stride, fin, fout, repeats) in enumerate(stages):
        fixed = stage in (0, len(stages) - 1)
        repeats = repeats if fixed else int(math.ceil(repeats * depth))
        fin = fin if stage == 0 else round_filters(fin)
        fout = round_filters(fout)
        for r in range(repeats):
            name = f"block{stage + 1}{chr(ord('a') + r)}"
            block_in = x
            filters_in = fin if r == 0 else fout
            s = stride if r == 0 else 1
            if expand != 1:
                x = L.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                             name=f"{name}_expand_conv")(x)
                x = L.ReLU(6.0, name=f"{name}_expand_activation")(bn(f"{name}_expand_bn", x))
            x = L.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False,
                                  name=f"{name}_dwconv")(x)
            x = L.ReLU(6.0, name=f"{name}_activation")(bn(f"{name}_bn", x))
            x = L.Conv2D(fout, 1, padding="same", use_bias=False,
                         name=f"{name}_project_conv")(x)
            x = bn(f"{name}_project_bn", x)
            if s == 1 and filters_in == fout:
                x = L.Add(name=f"{name}_add")([x, block_in])
    x = L.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = L.ReLU(6.0, name="top_activation")(bn("top_bn", x))
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x)


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
        "efficientnet_lite0": lambda: efficientnet_lite(1.0, 1.0, SIZE),
        "efficientnet_lite1": lambda: efficientnet_lite(1.0, 1.1, SIZE),
        "efficientnet_lite2": lambda: efficientnet_lite(1.1, 1.2, SIZE),
        "efficientnet_lite3": lambda: efficientnet_lite(1.2, 1.4, SIZE),
        "efficientnet_lite4": lambda: efficientnet_lite(1.4, 1.8, SIZE),
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
