"""Writes tests/fixtures/atlas/r2048: a tiny Atlas at 2048 px, where the official layout has
three scales and the middle one has 2x2 windows, so the official raster pairing of fine and
coarse windows (spec section 5.2), the Gauss-Seidel order over three scales and the bottom-up
regrouping over several windows are all exercised; the committed 512-px fixture has one
coarse window only.

Needs the official code on PYTHONPATH (a checkout of YalaLab/atlas @ 9915894, providing
`sandstone.models.atlas.Atlas`), torch, timm, einops and safetensors:

    PYTHONPATH=/path/to/atlas python scripts/export_atlas_fixtures.py

The input is a closed-form pattern (`input_pattern`, mirrored in tests/atlas_parity.rs) so
the 2048-px image need not be stored; only logits and a part of the tokens are.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sandstone.models.atlas import Atlas

OUT = Path(__file__).resolve().parent.parent / "crates/kiln-models/tests/fixtures/atlas/r2048"
SIZE, DIM, HEADS, CLASSES, DEPTHS = 2048, 32, 2, 10, (1, 1)


def stage_kwargs(img, patch, depth):
    return dict(img_size=[img, img, 1], patch_size=patch, local2global=4, merge_ratio=16, in_dim=64, dim=DIM,
                num_features=DIM // 4, num_classes=CLASSES, drop_path_rate=0.0, depths=depth, qkv_bias=True,
                num_heads=HEADS, mlp_ratio=4, embed_dim=DIM, embed_op="convstem" if patch == 16 else "conv2d",
                layer_args=dict(qkv_bias=True, qk_scale=None, input_resolution=SIZE))


def input_pattern(batch):
    b, c, i, j = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (batch, 3, SIZE, SIZE)), indexing="ij")
    return torch.sin(0.0137 * i * (c + 1.0) + 0.0291 * j + 0.5 * b) + 0.3 * torch.cos(0.0071 * (i + 2.0 * j) * (b + 1.0))


def main():
    torch.manual_seed(0)
    # stage 1 holds the 32x32 token grid left after dropping scale 0 (patch 1), as the
    # official configs must spell out by hand
    kwargs = dict(num_classes=CLASSES, embed_dim=DIM,
                  kwargs_list=[stage_kwargs(SIZE, 16, DEPTHS[0]), stage_kwargs(SIZE // 64, 1, DEPTHS[1])])
    model = Atlas(None, **kwargs).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            n = torch.randn(t.shape, generator=g) * 0.05
            if key.endswith("running_var"):
                t.copy_(1 + 4 * n.abs())
            elif key.endswith(".weight") and t.dim() == 1:
                t.copy_(1 + n)
            else:
                t.add_(n)
    x = input_pattern(2)
    trace = []
    with torch.no_grad():
        stem = model.atlas_models[0].patch_embed(x)
        logits = model(x, trace=trace)["logit"]
    layouts = [s.multiscale_layout for s in model.atlas_models]
    OUT.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    save_file(state, OUT / "weights.safetensors")
    out = {"logits": logits, "stem_rows_0_8": stem[:, :, :8].contiguous()}
    for stage, scales in enumerate(trace):
        first = 1 if stage == 0 else 0  # scale 0 (2 x 64 windows) is large: keep its first 8 windows
        if stage == 0:
            out["stage0_scale0_windows_0_8"] = scales[0][:8].contiguous()
        for l, tokens in enumerate(scales[first:], start=first):
            out[f"stage{stage}_scale{l + stage}"] = tokens.contiguous()
    save_file(out, OUT / "output.safetensors")
    (OUT / "config.json").write_text(json.dumps({
        "source": "YalaLab/atlas @ 9915894, sandstone.models.atlas.Atlas(None, **model_kwargs), eval, float32, CPU",
        "model_kwargs": kwargs, "multiscale_layout_per_stage": layouts,
        "param_count_total": sum(p.numel() for p in model.parameters()),
        "input": "input_pattern(2) in scripts/export_atlas_fixtures.py, [2, 3, 2048, 2048]",
        "weights": "torch.manual_seed(0) default init, then the 512-px fixture's perturbation (Generator seed 0)",
        "outputs": {k: list(v.shape) for k, v in out.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
