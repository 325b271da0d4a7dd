#!/usr/bin/env bash
# The GPU path on a machine with a GPU, in one prepared run: `kiln bench` (train and infer,
# Swin-T / DaViT-T / MaxViT-T at batch 64 and 224 px, f32 and bf16), each family's logits and training
# gradients on the GPU against the CPU's (the wgpu test binary), and the quickstart trained for
# 200 steps on the GPU; one summary table at the end.
#
# Build here, carry to the GPU machine (it has no registry access):
#   cargo build --release -p kiln --features wgpu          # target/release/kiln
#   cargo test --release -p kiln --features wgpu --test wgpu --no-run   # prints the test binary
# Usage: scripts/gpu_check.sh DEVICE KILN [WGPU_TEST_BINARY]   e.g. wgpu target/release/kiln
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:?device: wgpu or cuda}
kiln=${2:?path to the kiln binary}
test_binary=${3:-}
out=${OUT:-/tmp}/gpu_check
mkdir -p "$out"
summary=()
for model in swin_tiny_patch4_window7_224 davit_tiny maxvit_tiny_tf_224; do
  for mode in train infer; do
    for precision in f32 bf16; do
      line=$("$kiln" bench --device "$device" --model "$model" --batch 64 --mode "$mode" --precision "$precision" --warmup 2 --steps 5 --json)
      summary+=("$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %s | %s | %s | %.1f |" % (r["model"], r["mode"], r["precision"], r["images_per_s"]))' "$line")")
    done
  done
done
if [ -n "$test_binary" ]; then
  "$test_binary" --test-threads 1 2>&1 | tee "$out/parity.log"
  summary+=("| every family | logits and gradients vs CPU | f32 | $(grep -c '\.\.\. ok' "$out/parity.log") of $(grep -c '^test ' "$out/parity.log") tests passed |")
fi
for precision in f32 bf16; do
  run="$out/quickstart_$precision"
  rm -rf "$run"
  started=$(date +%s)
  "$kiln" train configs/quickstart.toml --set train.device="$device" --set train.precision="$precision" --max-steps 200 \
    --output-dir "$run" --set logging.plots=false
  summary+=("| quickstart | 200 training steps | $precision | $(( $(date +%s) - started )) s, last loss $(grep '"kind":"train"' "$run/metrics.jsonl" | tail -1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["loss"], 4))') |")
done
echo
echo "| model | what | precision | images/s or result |"
echo "|---|---|---|---|"
printf '%s\n' "${summary[@]}"
