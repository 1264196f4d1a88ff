#!/usr/bin/env python3
"""Write Keras 3's own summaries of the functional models the graph tests rebuild in retrain.

    python3 -m venv /tmp/kenv && /tmp/kenv/bin/pip install keras "jax[cpu]"
    KERAS_BACKEND=jax /tmp/kenv/bin/python tools/keras_functional_summaries.py crates/retrain/tests/data/keras

No weights are downloaded (weights=None): only the layer graph, output shapes and parameter
counts matter here.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402


def write_summary(model, path):
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=140,
                  show_trainable=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(out):
    os.makedirs(out, exist_ok=True)
    # The seed's idiom: reuse a VGG16's layers on a new Input, Model(input_, x).
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    input_ = keras.Input((224, 224, 3), name="input_layer")
    x = input_
    for layer in vgg.layers[1:]:
        x = layer(x)
    write_summary(keras.Model(input_, x, name="rebuilt"), os.path.join(out, "vgg16_functional.txt"))

    # A residual graph: input(8) -> hidden (relu) -> add(input, hidden) -> predictions(3).
    inputs = keras.Input((8,), name="input_layer")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    skip = keras.layers.Add(name="skip")([inputs, hidden])
    outputs = keras.layers.Dense(3, name="predictions")(skip)
    write_summary(keras.Model(inputs, outputs, name="residual"), os.path.join(out, "residual.txt"))
    # Zoo graphs with their classifiers, as Keras builds them in a fresh session (automatic
    # names like input_layer and global_average_pooling2d carry no counter).
    keras.backend.clear_session()
    write_summary(keras.applications.ResNet50(weights=None), os.path.join(out, "resnet50.txt"))
    keras.backend.clear_session()
    write_summary(keras.applications.MobileNetV2(weights=None),
                  os.path.join(out, "mobilenet_v2.txt"))
    keras.backend.clear_session()
    write_summary(keras.applications.InceptionV3(weights=None),
                  os.path.join(out, "inception_v3.txt"))
    print(f"summaries written to {out} (Keras {keras.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/retrain/tests/data/keras")
