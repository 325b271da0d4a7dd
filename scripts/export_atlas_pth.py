"""Writes tests/fixtures/atlas/weights.pth from weights.safetensors, in the form the official
Atlas training loop (YalaLab/atlas, sandstone) saves: a dict wrapping the state dict under
"model", with the int64 BatchNorm `num_batches_tracked` counters the safetensors file leaves
out. Kiln must unwrap it, skip the counters and the unused per-stage norm/head by name, and
give the same logits.

    python scripts/export_atlas_pth.py   # needs torch and safetensors
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURE = Path(__file__).resolve().parent.parent / "crates/kiln-models/tests/fixtures/atlas"


def main():
    weights = load_file(FIXTURE / "weights.safetensors")
    config = json.loads((FIXTURE / "config.json").read_text())
    state_dict = {}
    # the official state_dict order, counters included (the fixture's config lists every key)
    for entry in config["state_dict"]:
        key = entry["key"]
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.tensor(1000, dtype=torch.int64)
        else:
            state_dict[key] = weights[key]
    torch.save({"model": state_dict, "epoch": 319}, FIXTURE / "weights.pth")


if __name__ == "__main__":
    main()
