"""Keras 3 (TensorFlow backend) side of the benchmark workloads.

Keras has no EfficientNet-Lite: `forward-efficientnet_lite0` runs the same network written with
Keras layers (tools/keras_parity_fixtures.py, checked against retrain's to 6e-8), and
`forward-mobilenet_v2` runs Keras's own MobileNetV2, the stand-in the issue names.
"""
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from common import THREADS, args, report, time_runs  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
workload, batch, runs, warmup = args()
CLASSES = 5


def lite0_base(size=224):
    from keras_parity_fixtures import efficientnet_lite

    model = efficientnet_lite(1.0, 1.0, size)
    return keras.Model(model.input, model.get_layer("top_activation").output)


if workload.startswith("forward-"):
    build = {
        "forward-vgg16": lambda: keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3)),
        "forward-efficientnet_lite0": lite0_base,
        "forward-mobilenet_v2": lambda: keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3)),
    }.get(workload)
    if build is None:
        raise SystemExit(f"unknown workload {workload}")
    base = build()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)

    def step():
        base.predict_on_batch(x)

elif workload == "step-dense-head":
    head = keras.Sequential([keras.Input((25088,)), keras.layers.Dense(CLASSES)])
    head.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 25088)).astype(np.float32)
    y = np.arange(batch) % CLASSES

    def step():
        head.train_on_batch(x, y)

else:
    raise SystemExit(f"unknown workload {workload}")

report(workload=workload, batch=batch, seconds=time_runs(step, runs, warmup))
