#!/usr/bin/env python3
"""PyTorch+timm companion of `kiln bench`: the same model, batch, input and step, measured in
the same sitting, and the ratio Kiln/PyTorch printed as a table.

    python3 scripts/bench_timm.py --model swin_tiny_patch4_window7_224 [--batch 16] \
        [--img-size 224] [--mode train|infer|both] [--warmup 2] [--steps 5] \
        [--kiln target/release/kiln] [--markdown]
    python3 scripts/bench_timm.py --config configs/quickstart.toml --kiln target/release/kiln

A training step is forward, soft-target cross-entropy (label smoothing 0.1), backward and an
AdamW step (weight decay 0.05); inference is a forward under torch.inference_mode(). Inputs are
N(0, 1). Threads: torch.set_num_threads(os.cpu_count()), as Kiln's flex backend uses every core.
Peak memory is the process's peak RSS (VmHWM) from a reset (`/proc/self/clear_refs`) before the
timed steps, as `kiln bench` reports it.

With --config, the model is the experiment's: its registered name, `[model]` in_chans/img_size
and `[model.arch]` fields passed to timm as keyword arguments (Swin's names are timm's), and its
batch size; num_classes comes from `--num-classes` (default 10 for configs, timm's otherwise).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
import timm


def resolve_config(path):
    """The experiment's model name and timm kwargs, following `_base_` files (deep merge)."""
    def load(p):
        data = tomllib.loads(Path(p).read_text())
        merged = {}
        for base in data.pop("_base_", []):
            deep_merge(merged, load(Path(p).parent / base))
        deep_merge(merged, data)
        return merged

    def deep_merge(into, other):
        for k, v in other.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                deep_merge(into[k], v)
            else:
                into[k] = v

    cfg = load(path)
    model = cfg["model"]
    kwargs = dict(model.get("arch", {}))
    if "in_chans" in model:
        kwargs["in_chans"] = model["in_chans"]
    size = model.get("img_size")
    if size is not None:
        kwargs["img_size"] = size if isinstance(size, int) else [size["height"], size["width"]]
    return model["name"], kwargs, cfg.get("data", {}).get("batch_size", 16)


def peak_rss_reset():
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def bench_torch(name, kwargs, batch, mode, warmup, steps):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    in_chans = kwargs.get("in_chans", size[0])
    img = kwargs.get("img_size", size[1:])
    h, w = (img, img) if isinstance(img, int) else img
    classes = model.num_classes
    times = []
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        labels = torch.arange(batch) % classes
        target = F.one_hot(labels, classes).float() * 0.9 + 0.1 / classes
        for step in range(warmup + steps):
            if step == warmup:
                reset = peak_rss_reset()
            x = torch.randn(batch, in_chans, h, w)
            t = time.perf_counter()
            loss = torch.sum(-target * F.log_softmax(model(x), dim=-1), dim=-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= warmup:
                times.append(time.perf_counter() - t)
    else:
        model.eval()
        with torch.inference_mode():
            for step in range(warmup + steps):
                if step == warmup:
                    reset = peak_rss_reset()
                x = torch.randn(batch, in_chans, h, w)
                t = time.perf_counter()
                model(x)
                if step >= warmup:
                    times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "model": name, "mode": mode, "batch": batch, "img_size": [h, w], "steps": steps,
        "images_per_s": batch / median, "step_ms_median": 1e3 * median,
        "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "peak_rss_mib": peak_rss_mib() if reset else None,
    }


def bench_kiln(binary, args, mode):
    cmd = [binary, "bench", "--mode", mode, "--json", "--warmup", str(args.warmup), "--steps", str(args.steps)]
    if args.config:
        cmd += ["--config", args.config]
    else:
        cmd += ["--model", args.model]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.img_size:
        cmd += ["--img-size", str(args.img_size)]
    if args.num_classes or args.config:
        cmd += ["--num-classes", str(args.num_classes or 10)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--config")
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--kiln", help="kiln binary: also run `kiln bench` and print the ratio")
    ap.add_argument("--markdown", action="store_true", help="print the README table's rows")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())

    if args.config:
        name, kwargs, batch = resolve_config(args.config)
        kwargs["num_classes"] = args.num_classes or 10
    elif args.model:
        name, kwargs, batch = args.model, {}, 16
        if args.num_classes:
            kwargs["num_classes"] = args.num_classes
    else:
        ap.error("--model or --config is required")
    batch = args.batch or batch
    if args.img_size:
        kwargs["img_size"] = args.img_size

    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    for mode in modes:
        torch_r = bench_torch(name, kwargs, batch, mode, args.warmup, args.steps)
        row = {"pytorch": torch_r}
        if args.kiln:
            kiln_r = bench_kiln(args.kiln, args, mode)
            row["kiln"] = kiln_r
            row["ratio"] = kiln_r["images_per_s"] / torch_r["images_per_s"]
        if args.markdown and args.kiln:
            k, t = row["kiln"], row["pytorch"]
            mem = lambda r: f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "n/a"
            print(f"| {name} | {mode} | {batch} | {t['img_size'][0]} | {k['images_per_s']:.1f} | "
                  f"{t['images_per_s']:.1f} | {row['ratio']:.2f} | {mem(k)} | {mem(t)} |")
        else:
            print(json.dumps(row))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
