"""Which input size gives EfficientNet-Lite0 (trained at 224) the best features for transfer?

Runs timm's tf_efficientnet_lite0 with the shared weights on the ants/bees set at several sizes
(bicubic resize of the short side to size / 0.875, center crop), then trains retrain's default
head on the pooled features (Glorot init, Adam 1e-3, batch 32, 10 epochs) for 20 seeds and
prints the mean final val accuracy. The result chose the zoo's `transfer_input_size` (288).

Run with the benchmark's venv: bench/.venv/bin/python tools/transfer_size_probe.py [SIZE...]
"""
import os
import sys

import numpy as np
import torch
import timm
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench", "peers"))
from common import THREADS, lite0_scale, lite0_state_dict_for, load_split  # noqa: E402

SEEDS, EPOCHS, BATCH = 20, 10, 32


def features(model, split, size):
    x, y, _ = load_split(split, size=size)
    x = torch.from_numpy(lite0_scale(x)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return torch.cat([model(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]), torch.from_numpy(y)


def head_accuracy(seed, x_train, y_train, x_val, y_val):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = torch.nn.Linear(x_train.shape[1], int(y_train.max()) + 1)
    torch.nn.init.xavier_uniform_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    for _ in range(EPOCHS):
        for idx in np.array_split(rng.permutation(len(y_train)), int(np.ceil(len(y_train) / BATCH))):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        return (head(x_val).argmax(1) == y_val).float().mean().item()


def main():
    torch.set_num_threads(THREADS)
    Image.MAX_IMAGE_PIXELS = None
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_state_dict_for(model.state_dict()))
    model.reset_classifier(0)
    model.eval()
    for size in [int(s) for s in sys.argv[1:]] or [224, 256, 272, 288, 320]:
        x_train, y_train = features(model, "train", size)
        x_val, y_val = features(model, "val", size)
        scores = [head_accuracy(seed, x_train, y_train, x_val, y_val) for seed in range(SEEDS)]
        print(f"{size}: mean val accuracy {np.mean(scores):.4f} over {SEEDS} seeds, "
              f"{sum(s >= 0.95 for s in scores)} >= 0.95, min {min(scores):.4f}", flush=True)


if __name__ == "__main__":
    main()
