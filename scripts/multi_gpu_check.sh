#!/usr/bin/env bash
# The multi-GPU path of one process (`kiln train --devices cuda:0,cuda:1`, burn's collectives
# over NCCL), checked on a machine with CUDA GPUs: builds kiln with `--features cuda`, trains the
# quickstart for 20 steps on every GPU it finds and on the first alone with the same global
# batch, and compares the final weights (as crates/kiln/tests/data_parallel.rs does for MPI).
# Needs the NVIDIA driver, NVRTC and the CUDA headers (CUDA_PATH or /usr/local/cuda), and, to
# build, what cubecl-cuda's build needs (tracel's LLVM bundle, downloaded by its build script).
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=$(nvidia-smi --list-gpus | wc -l)
[ "$gpus" -ge 1 ] || { echo "no GPU" >&2; exit 1; }
cargo build --release -p kiln --features cuda
kiln=target/release/kiln
devices=$(seq -s, -f 'cuda:%g' 0 $((gpus - 1)))
per_rank=$((32 / gpus))
common=(--set data.per_class=64 --set schedule.epochs=1 --set schedule.warmup_epochs=0
        --set model.drop_path_rate=0 --set logging.plots=false --set logging.interval_iters=5)
out=${OUT:-/tmp}/multi_gpu_check
rm -rf "$out"
$kiln train configs/quickstart.toml "${common[@]}" --set train.device=cuda:0 --set data.batch_size=32 --output-dir "$out/one"
$kiln train configs/quickstart.toml "${common[@]}" --devices "$devices" --set data.batch_size=$per_rank --output-dir "$out/all"
grep '"eval"' "$out/one/metrics.jsonl" "$out/all/metrics.jsonl"
$kiln eval configs/quickstart.toml "${common[@]}" --set train.device=cuda:0 --weights "$out/all/checkpoints/last/model.bpk" --output-dir "$out/eval"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
last = lambda run, kind: [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl") if json.loads(l)["kind"] == kind]
one, all_ = last("one", "eval")[-1], last("all", "eval")[-1]
print("one GPU:", one, "\nall GPUs:", all_)
assert one["top1"] == all_["top1"], "top-1 differs"
for a, b in zip(last("one", "train"), last("all", "train")):
    assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
print("multi-GPU check passed")
PY
