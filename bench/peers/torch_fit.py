"""End to end in PyTorch: a linear head on the frozen EfficientNet-Lite0 (timm's
tf_efficientnet_lite0 with the shared weights), the base recomputed for every batch of every
epoch, Adam 1e-3, batch 32, 10 epochs: the usual notebook."""
import time

started = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import timm  # noqa: E402

from common import THREADS, lite0_scale, lite0_state_dict_for, load_split, report  # noqa: E402

torch.set_num_threads(THREADS)
torch.manual_seed(42)
EPOCHS, BATCH = 10, 32


def tensors(split):
    x, y, classes = load_split(split)
    return torch.from_numpy(lite0_scale(x)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y), classes


x_train, y_train, classes = tensors("train")
x_val, y_val, _ = tensors("val")
model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
model.load_state_dict(lite0_state_dict_for(model.state_dict()))
model.reset_classifier(len(classes))
for p in model.parameters():
    p.requires_grad = False
for p in model.get_classifier().parameters():
    p.requires_grad = True
model.eval()  # the frozen base's BatchNorm stays on its moving statistics
optimizer = torch.optim.Adam(model.get_classifier().parameters(), 1e-3)
rng = np.random.default_rng(42)
history = []
for epoch in range(EPOCHS):
    for idx in np.array_split(rng.permutation(len(y_train)), int(np.ceil(len(y_train) / BATCH))):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        correct = sum((model(x_val[i:i + BATCH]).argmax(1) == y_val[i:i + BATCH]).sum().item()
                      for i in range(0, len(y_val), BATCH))
    history.append(correct / len(y_val))
report(workload="fit-hymenoptera", seconds=[time.perf_counter() - started], val_accuracy=history[-1], history=history)
