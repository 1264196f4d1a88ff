#!/usr/bin/env python3
"""Side-by-side benchmarks: retrain against PyTorch and Keras, on this machine, one after another.

    python3 bench/run.py            # everything (about 25 minutes on 2 cores)
    python3 bench/run.py --quick    # 3 timed runs instead of 5, smaller batches skipped
    python3 bench/run.py --only forward,step

Installs the peers (bench/requirements.txt) into bench/.venv when missing, builds retrain's
side (`retrain-bench`, `retrain`) in release, runs every workload in its own process (median of
the timed runs after one warm-up run; peak RSS from the kernel's accounting of that process) and
prints retrain / peer ratios next to the targets. The same table goes to bench/results.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENV = os.path.join(BENCH, ".venv")
PY = os.path.join(VENV, "bin", "python")
SHARED = os.environ.get("RETRAIN_SHARED", os.path.join(ROOT, "..", "shared"))
PEERS = os.path.join(BENCH, "peers")

# (group, workload, batch, peers); bench/src/main.rs defines each workload.
WORKLOADS = [
    ("forward", "forward-vgg16", 4, ("torch", "keras")),
    ("forward", "forward-vgg16", 32, ("torch", "keras")),
    ("forward", "forward-efficientnet_lite0", 8, ("torch", "keras")),
    ("forward", "forward-efficientnet_lite0", 32, ("torch", "keras")),
    ("forward", "forward-mobilenet_v2", 8, ("torch", "keras")),
    ("step", "step-vgg16-block5", 8, ("torch",)),
    ("step", "step-lite0-last2", 16, ("torch",)),
    ("head", "step-dense-head", 32, ("torch", "keras")),
]
TARGETS = {"forward": 1.0, "step": 1.0, "head": 1.0}
# Alternating f32 / bf16 rounds behind each bf16 ratio (median of the rounds' medians).
PAIRED_ROUNDS = 3


def ensure_venv():
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    probe = subprocess.run([PY, "-c", "import torch, torchvision, timm, tensorflow, keras"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([PY, "-m", "pip", "install", "--progress-bar", "off", "-r",
                        os.path.join(BENCH, "requirements.txt")], check=True)


def build():
    # The whole workspace, like the tests: one feature resolution, one build of Burn.
    subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=ROOT, check=True)


def run_measured(command, cwd=ROOT):
    """Run `command`; return its stdout, its peak RSS in MiB (the kernel's ru_maxrss of exactly
    that child) and its wall seconds."""
    env = dict(os.environ, RETRAIN_SHARED=SHARED, PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read both pipes to the end (stderr is small), then reap the child with wait4 for its rusage.
    out, err = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{err[-3000:]}")
    return out, usage.ru_maxrss / 1024, wall


def result_line(out, command):
    """The JSON result a workload printed last."""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} printed no result")
    return json.loads(lines[-1])


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def workload_command(side, workload, batch, runs):
    flags = [workload, "--batch", str(batch), "--runs", str(runs), "--warmup", "1"]
    if side == "retrain":
        return [os.path.join(ROOT, "target", "release", "retrain-bench")] + flags
    return [PY, os.path.join(PEERS, f"{side}_bench.py")] + flags


def bench_workloads(groups, runs, quick):
    rows = []
    for group, workload, batch, peers in WORKLOADS:
        if group not in groups or (quick and batch == 32 and group == "forward"):
            continue
        row = {"group": group, "workload": workload, "batch": batch, "per_s": {}, "rss_mib": {}}
        for side in ("retrain",) + peers:
            command = workload_command(side, workload, batch, runs)
            out, rss, _ = run_measured(command, cwd=PEERS if side != "retrain" else ROOT)
            result = result_line(out, command)
            row["per_s"][side] = batch / median(result["seconds"])
            row["rss_mib"][side] = rss
            print(f"  {workload} b{batch} {side}: {row['per_s'][side]:.2f}/s, {rss:.0f} MiB", flush=True)
        if group == "forward":
            # retrain's own bf16 extraction against f32, measured in alternating pairs of runs
            # so that both see the same machine (this one's speed drifts 10-20% in minutes).
            seconds = {"f32": [], "bf16": []}
            for _ in range(PAIRED_ROUNDS):
                for precision in seconds:
                    command = workload_command("retrain", workload, batch, runs) + ["--precision", precision]
                    out, rss, _ = run_measured(command)
                    seconds[precision].append(median(result_line(out, command)["seconds"]))
            row["paired_f32_per_s"] = batch / median(seconds["f32"])
            row["bf16_per_s"] = batch / median(seconds["bf16"])
            print(f"  {workload} b{batch} retrain bf16: {row['bf16_per_s']:.2f}/s against f32 "
                  f"{row['paired_f32_per_s']:.2f}/s (alternating, {PAIRED_ROUNDS} rounds), {rss:.0f} MiB", flush=True)
        rows.append(row)
    return rows


def retrain_fit(extra):
    """`retrain fit` as the README runs it (plus `extra` arguments): wall, peak RSS, accuracy."""
    data = os.path.join(SHARED, "data", "hymenoptera")
    weights = os.path.join(SHARED, "weights", "efficientnet-lite0-57934424.pth")
    out = tempfile.mkdtemp(prefix="retrain-bench-")
    try:
        command = [os.path.join(ROOT, "target", "release", "retrain"), "fit", data, "--base", "efficientnet_lite0",
                   "--weights", weights, "--out", os.path.join(out, "run"), "--epochs", "10", *extra]
        _, rss, wall = run_measured(command)
        with open(os.path.join(out, "run", "history.json")) as f:
            epochs = json.load(f)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    kept = min(epochs, key=lambda epoch: epoch["val_loss"])  # the weights the run keeps
    print(f"  fit retrain {' '.join(extra)}: {wall:.1f} s, val_accuracy {epochs[-1]['val_accuracy']:.4f} "
          f"(kept: epoch {kept['epoch']}, {kept['val_accuracy']:.4f})", flush=True)
    return {"seconds": wall, "rss_mib": rss, "val_accuracy": epochs[-1]["val_accuracy"],
            "kept_epoch": kept["epoch"], "kept_val_accuracy": kept["val_accuracy"]}


def end_to_end():
    # retrain's default runs Lite0's features at 288x288 (its FixRes transfer size); the peers'
    # notebooks use the 224x224 it was trained at, which retrain also runs for a like-for-like row.
    # The f32 and bf16 runs alternate (PAIRED_ROUNDS each; median wall, largest RSS), as the
    # bf16 ratio compares them.
    runs = {"retrain": [], "retrain-bf16": []}
    for _ in range(PAIRED_ROUNDS):
        runs["retrain"].append(retrain_fit([]))
        runs["retrain-bf16"].append(retrain_fit(["--precision", "bf16"]))
    sides = {side: dict(results[-1], seconds=median([r["seconds"] for r in results]),
                        rss_mib=max(r["rss_mib"] for r in results))
             for side, results in runs.items()}
    sides["retrain-224"] = retrain_fit(["--image-size", "224"])
    for side in ("torch", "keras"):
        command = [PY, os.path.join(PEERS, f"{side}_fit.py")]
        out, rss, _ = run_measured(command, cwd=PEERS)
        result = result_line(out, command)
        sides[side] = {"seconds": result["seconds"][0], "rss_mib": rss, "val_accuracy": result["val_accuracy"]}
        print(f"  fit {side}: {result['seconds'][0]:.1f} s, val_accuracy {result['val_accuracy']:.4f}", flush=True)
    return sides


def cpu_has_amx_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


BF16_TARGET = 1.5
BF16_CPU = f"this CPU has AMX-BF16: {'yes' if cpu_has_amx_bf16() else 'no (bf16 products run as rounded f32 ones)'}"


def print_tables(rows, fit):
    if rows:
        print("\n| workload | batch | retrain /s | PyTorch /s | Keras /s | retrain/PyTorch | retrain/Keras | target | RSS MiB retrain/torch/keras |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            per_s, rss = row["per_s"], row["rss_mib"]
            ratios = {peer: per_s["retrain"] / per_s[peer] for peer in per_s if peer != "retrain"}
            target = TARGETS[row["group"]]
            against = min(ratios.values())  # against the faster peer
            met = "met" if against >= target else "MISSED"
            cell = lambda side, f: f(per_s[side]) if side in per_s else "-"  # noqa: E731
            ratio = lambda side: f"{ratios[side]:.2f}x" if side in ratios else "-"  # noqa: E731
            print(f"| {row['workload']} | {row['batch']} | {per_s['retrain']:.2f} | {cell('torch', lambda v: f'{v:.2f}')} | "
                  f"{cell('keras', lambda v: f'{v:.2f}')} | {ratio('torch')} | {ratio('keras')} | >= {target}x: {met} | "
                  f"{'/'.join(f'{rss[s]:.0f}' for s in ('retrain', 'torch', 'keras') if s in rss)} |")
        bf16 = [row for row in rows if "bf16_per_s" in row]
        if bf16:
            print(f"\n| bf16 extraction (forward, alternating rounds) | batch | retrain f32 /s | retrain bf16 /s | bf16/f32 | target |")
            print("|---|---|---|---|---|---|")
            for row in bf16:
                ratio = row["bf16_per_s"] / row["paired_f32_per_s"]
                print(f"| {row['workload']} | {row['batch']} | {row['paired_f32_per_s']:.2f} | {row['bf16_per_s']:.2f} | "
                      f"{ratio:.2f}x | >= {BF16_TARGET}x: {'met' if ratio >= BF16_TARGET else 'MISSED'} |")
            print(BF16_CPU)
    if fit:
        r = fit["retrain"]
        print("\n| end to end (hymenoptera, Lite0, 10 epochs) | seconds | speed-up of retrain | peak RSS MiB | val accuracy |")
        print("|---|---|---|---|---|")
        for side, target in (("retrain", None), ("retrain-224", None), ("retrain-bf16", None), ("keras", 10.0), ("torch", 5.0)):
            s = fit[side]
            speedup = "" if target is None else f"{s['seconds'] / r['seconds']:.1f}x (target >= {target:.0f}x: {'met' if s['seconds'] / r['seconds'] >= target else 'MISSED'})"
            print(f"| {side} | {s['seconds']:.1f} | {speedup} | {s['rss_mib']:.0f} | {s['val_accuracy']:.4f} |")
        b = fit["retrain-bf16"]
        speedup, points = r["seconds"] / b["seconds"], 100 * (b["val_accuracy"] - r["val_accuracy"])
        print(f"\nbf16 end to end (retrain-bf16 against retrain): {speedup:.2f}x the f32 speed "
              f"(target >= {BF16_TARGET}x: {'met' if speedup >= BF16_TARGET else 'MISSED'}), val accuracy {points:+.2f} points "
              f"(target within 0.5: {'met' if abs(points) <= 0.5 else 'MISSED'}); {BF16_CPU}")
        print(f"\npeak RSS below PyTorch's: {'met' if r['rss_mib'] < fit['torch']['rss_mib'] else 'MISSED'}; "
              f"val accuracy no lower than either: {'met' if r['val_accuracy'] >= max(fit['torch']['val_accuracy'], fit['keras']['val_accuracy']) else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed runs; skip batch 32 forward passes")
    parser.add_argument("--only", default="forward,step,head,fit", help="groups: forward,step,head,fit")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per workload (median)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    options = parser.parse_args()
    groups = set(options.only.split(","))
    ensure_venv()
    if not options.no_build:
        build()
    runs = 3 if options.quick else options.runs
    print(f"threads: {os.cpu_count()}, runs per workload: {runs} (median), after 1 warm-up", flush=True)
    rows = bench_workloads(groups, runs, options.quick)
    fit = end_to_end() if "fit" in groups else None
    print_tables(rows, fit)
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump({"workloads": rows, "fit": fit}, f, indent=1)


if __name__ == "__main__":
    main()
