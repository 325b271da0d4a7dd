#!/usr/bin/env python3
"""Acceptance check by hand: `kiln predict` vs timm on a randomly initialised model.

    python3 scripts/check_predict_parity.py \
        --weights /tmp/swin_tiny.safetensors --image /tmp/img.png \
        [--model swin_tiny_patch4_window7_224] [--crop-pct 1.0] [--seed 0] \
        [--image-size H W] [--kiln target/release/kiln]

1. builds timm `--model` (pretrained=False) with a fixed seed and overwrites every parameter with random
   values of a meaningful scale (same scheme as export_timm_fixtures.randomize_: matrices N(0,1)/sqrt(fan_in),
   norm weights 1+0.1N, biases 0.1N, relative position tables N(0,1)), so position biases / masks matter;
2. saves its state_dict() (timm key names, contiguous f32; int buffers keep their dtype) with safetensors
   to --weights;
3. writes a deterministic, smooth random-ish RGB PNG of the model's input size (or --image-size H W; a
   non-square one makes the model's crop_mode matter, e.g. 'squash' for maxvit_*_tf_384) to --image;
4. runs timm's eval preprocessing (timm.data.resolve_data_config with crop_pct overridden + create_transform)
   and prints timm's top-5 as one JSON line;
5. with --kiln BIN also runs `BIN predict --model M --weights W --crop-pct P --json IMG`, parses its JSON line
   {"image": path, "top": [{"index": i, "label": s, "logit": f, "prob": p}, ...]} and checks the same top-5
   indices (same order) and logits within --atol (1e-3). Prints PASS or FAIL (exit code 1 on FAIL).
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import timm
from timm.data import resolve_data_config, create_transform
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_timm_fixtures import f32_state_dict, randomize_  # noqa: E402  (same directory)


def make_image(path: Path, height: int, width: int, seed: int) -> None:
    """Smooth, deterministic RGB content: a sum of random low-frequency sinusoids plus a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width), indexing='ij')
    img = np.zeros((height, width, 3), dtype=np.float64)
    for c in range(3):
        acc = 0.3 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
        for _ in range(6):
            fy, fx = rng.uniform(0.5, 6.0, size=2)
            ph = rng.uniform(0, 2 * math.pi)
            acc = acc + rng.uniform(0.1, 0.4) * np.sin(2 * math.pi * (fy * yy + fx * xx) + ph)
        acc = (acc - acc.min()) / (acc.max() - acc.min() + 1e-12)
        img[..., c] = acc
    arr = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format='PNG')


def parse_kiln_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            return json.loads(line)
    raise ValueError(f'no JSON line in kiln output:\n{stdout}')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default='swin_tiny_patch4_window7_224')
    ap.add_argument('--weights', default='/tmp/swin_tiny.safetensors')
    ap.add_argument('--image', default='/tmp/img.png')
    ap.add_argument('--crop-pct', type=float, default=1.0)
    ap.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                    help="size of the test image (default: the model's input size)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--topk', type=int, default=5)
    ap.add_argument('--atol', type=float, default=1e-3)
    ap.add_argument('--kiln', default=None, help='path to the kiln binary; if omitted only timm runs')
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=False)
    randomize_(model, args.seed)
    model.eval()

    weights = Path(args.weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(f32_state_dict(model), str(weights))

    data_cfg = resolve_data_config({'crop_pct': args.crop_pct}, model=model)
    _, in_h, in_w = data_cfg['input_size']
    image = Path(args.image)
    image.parent.mkdir(parents=True, exist_ok=True)
    img_h, img_w = args.image_size or (in_h, in_w)
    make_image(image, img_h, img_w, args.seed)

    transform = create_transform(**data_cfg)
    x = transform(Image.open(image).convert('RGB')).unsqueeze(0)
    with torch.no_grad():
        logits = model(x)[0].float()
    probs = logits.softmax(-1)
    top = torch.topk(logits, k=args.topk + 1)
    idx = top.indices.tolist()
    margin = (top.values[args.topk - 1] - top.values[args.topk]).item()
    timm_top = [{'index': i, 'logit': logits[i].item(), 'prob': probs[i].item()} for i in idx[:args.topk]]
    print(json.dumps({'source': 'timm', 'timm_version': timm.__version__, 'model': args.model,
                      'weights': str(weights), 'image': str(image), 'data_cfg': {
                          k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
                      'top': timm_top}))
    if margin < 10 * args.atol:
        print(f'warning: gap between logit #{args.topk} and #{args.topk + 1} is only {margin:.2e}; '
              f'top-{args.topk} order may be fragile, try another --seed', file=sys.stderr)

    if not args.kiln:
        return 0

    cmd = [args.kiln, 'predict', '--model', args.model, '--weights', str(weights),
           '--crop-pct', str(args.crop_pct), '--json', str(image)]
    print('running: ' + ' '.join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print(f'FAIL: kiln exited with {proc.returncode}')
        return 1
    kiln = parse_kiln_json(proc.stdout)
    ktop = kiln['top'][:args.topk]
    k_idx = [int(t['index']) for t in ktop]
    t_idx = [t['index'] for t in timm_top]
    errors = []
    if k_idx != t_idx:
        errors.append(f'top-{args.topk} indices differ: timm {t_idx} vs kiln {k_idx}')
    max_err = 0.0
    for t in ktop:
        err = abs(float(t['logit']) - logits[int(t['index'])].item())
        max_err = max(max_err, err)
    if max_err > args.atol:
        errors.append(f'logit max abs err {max_err:.3e} > {args.atol}')
    print(json.dumps({'source': 'kiln', **kiln}))
    if errors:
        for e in errors:
            print('  ' + e)
        print('FAIL')
        return 1
    print(f'PASS (top-{args.topk} {t_idx}, logit max abs err {max_err:.2e})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
