"""What the PyTorch and Keras sides of the benchmark share: timing, data, weights.

Every workload script prints one JSON line on stdout; bench/run.py reads it and measures the
process's peak RSS itself.
"""
import json
import os
import sys
import time

import numpy as np

SHARED = os.environ.get("RETRAIN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
LITE0_WEIGHTS = os.path.join(SHARED, "weights", "efficientnet-lite0-57934424.pth")
HYMENOPTERA = os.path.join(SHARED, "data", "hymenoptera")
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def args():
    """WORKLOAD --batch N --runs R --warmup W, like retrain-bench."""
    argv = sys.argv[1:]
    opts = {"--batch": 8, "--runs": 5, "--warmup": 1}
    for flag in opts:
        if flag in argv:
            opts[flag] = int(argv[argv.index(flag) + 1])
    return argv[0], opts["--batch"], opts["--runs"], opts["--warmup"]


def time_runs(step, runs, warmup):
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def report(**fields):
    print(json.dumps(fields), flush=True)


def lite0_state_dict_for(model_state):
    """The shared EfficientNet-Lite0 checkpoint (lukemelas-style names) renamed for `model_state`,
    whose tensors come in the same order with the same shapes (timm's tf_efficientnet_lite0)."""
    import torch

    source = torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=False)
    if len(source) != len(model_state):
        raise SystemExit(f"{LITE0_WEIGHTS}: {len(source)} tensors, the model has {len(model_state)}")
    renamed = {}
    for (name, value), (target, expected) in zip(source.items(), model_state.items()):
        if tuple(value.shape) != tuple(expected.shape):
            raise SystemExit(f"{name} {tuple(value.shape)} does not fit {target} {tuple(expected.shape)}")
        renamed[target] = value
    return renamed


def load_split(split, size=224, crop=0.875):
    """Images of hymenoptera/SPLIT as float32 NHWC in [0, 255] and labels, prepared like retrain's
    EfficientNet-Lite config (timm's): bicubic resize of the short side to size/crop, center crop."""
    from PIL import Image, ImageOps

    root = os.path.join(HYMENOPTERA, split)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    resize = int(size / crop)
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file in sorted(os.listdir(folder)):
            try:
                img = ImageOps.exif_transpose(Image.open(os.path.join(folder, file))).convert("RGB")
            except Exception:
                continue
            w, h = img.size
            scale = resize / min(w, h)
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            images.append(np.asarray(img, dtype=np.float32))
            labels.append(label)
    return np.stack(images), np.array(labels), classes


def lite0_scale(x):
    """EfficientNet-Lite input scaling: (x/255 - 0.498) / 0.502, on [0, 255] values."""
    return (x / 255.0 - 0.498) / 0.502
