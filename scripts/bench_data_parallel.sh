#!/usr/bin/env bash
# Data-parallel throughput on one machine, in one sitting: one rank on every core against one
# rank per core (`mpirun`, one thread each) at the same global batch, for the quickstart model
# and Swin-T at 224 px; the two-rank runs also report the gradient exchange per step against
# MPI's own in-place all-reduce of as many floats. Needs Open MPI and a kiln built with
# `--features mpi` (README, "Train on several processes or machines").
# Usage: scripts/bench_data_parallel.sh [path/to/kiln]   (default target/debug/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${1:-target/debug/kiln}
cores=$(nproc)
mpi=(mpirun --allow-run-as-root --oversubscribe -np "$cores" -x RAYON_NUM_THREADS=1)
row() { # label, then the kiln bench arguments
  local label=$1; shift
  python3 -c '
import json, sys
r = json.loads(sys.stdin.readline())
sync, raw = r.get("sync_ms_median"), r.get("allreduce_ms_median")
exchange = "%.1f ms vs %.1f ms (%.2fx)" % (sync, raw, sync / raw) if sync else ""
print("| %s | %d x %d | %.1f | %s |" % (sys.argv[1], r["ranks"], r["batch"], r["images_per_s"], exchange))
' "$label" < <("$@" --mode train --json)
}
echo "| model | ranks x batch | images/s | exchange per step vs MPI all-reduce |"
echo "|---|---|---|---|"
row "quickstart, 1 rank x $cores threads" "$kiln" bench --config configs/quickstart.toml --warmup 2 --steps 8
row "quickstart, $cores ranks x 1 thread" "${mpi[@]}" "$kiln" bench --config configs/quickstart.toml --warmup 2 --steps 8 --batch $((128 / cores))
row "Swin-T 224, 1 rank x $cores threads" "$kiln" bench --model swin_tiny_patch4_window7_224 --batch 16 --warmup 1 --steps 5
row "Swin-T 224, $cores ranks x 1 thread" "${mpi[@]}" "$kiln" bench --model swin_tiny_patch4_window7_224 --batch $((16 / cores)) --warmup 1 --steps 5
