"""PyTorch side of the benchmark workloads (see bench/src/main.rs for their definitions)."""
import torch
import torchvision
import timm

from common import THREADS, args, report, time_runs

torch.set_num_threads(THREADS)
torch.manual_seed(0)
workload, batch, runs, warmup = args()
CLASSES = 5


def train_step(model, x):
    labels = torch.arange(x.shape[0]) % CLASSES
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()

    return step


def lite0():
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


if workload.startswith("forward-"):
    if workload == "forward-vgg16":
        base = torchvision.models.vgg16().features
    elif workload == "forward-mobilenet_v2":
        base = torchvision.models.mobilenet_v2().features
    elif workload == "forward-efficientnet_lite0":
        model = lite0()
        base = torch.nn.Sequential(model.conv_stem, model.bn1, model.blocks, model.conv_head, model.bn2)
    else:
        raise SystemExit(f"unknown workload {workload}")
    base.eval()
    x = torch.rand(batch, 3, 224, 224) * 2 - 1

    def step():
        with torch.inference_mode():
            base(x)

elif workload == "step-vgg16-block5":
    features = torchvision.models.vgg16().features
    with torch.no_grad():
        x = features[:24].eval()(torch.rand(batch, 3, 224, 224) * 2 - 1)
    model = torch.nn.Sequential(*features[24:], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(512, CLASSES))
    step = train_step(model, x)
elif workload == "step-lite0-last2":
    m = lite0().eval()
    with torch.no_grad():
        frozen = torch.nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:5], *m.blocks[5][:3])
        x = frozen(torch.rand(batch, 3, 224, 224) * 2 - 1)
    model = torch.nn.Sequential(m.blocks[5][3], m.blocks[6], m.conv_head, m.bn2, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1280, CLASSES))
    step = train_step(model, x)
elif workload == "step-dense-head":
    step = train_step(torch.nn.Linear(25088, CLASSES), torch.rand(batch, 25088) * 2 - 1)
else:
    raise SystemExit(f"unknown workload {workload}")

report(workload=workload, batch=batch, seconds=time_runs(step, runs, warmup))
