#!/usr/bin/env python3
"""Writes crates/kiln-models/tests/fixtures/layer_decay.json: timm's layer-wise lr decay for
Swin-T, DaViT-T and MaxViT-T, parameter name -> lr scale, as timm's optimizer factory computes
it (`param_groups_layer_decay` over the model's `group_matcher`) with layer_decay 0.75.

Kiln's `layer_ordinal` functions must reproduce these scales (crates/kiln-models/tests/registry.rs).

    python3 scripts/export_layer_decay.py      # needs torch and timm
"""
import json
from pathlib import Path

import timm
from timm.optim._param_groups import param_groups_layer_decay

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / 'crates/kiln-models/tests/fixtures/layer_decay.json'
MODELS = ['swin_tiny_patch4_window7_224', 'davit_tiny', 'maxvit_tiny_tf_224']
DECAY = 0.75


def scales(name: str) -> dict:
    model = timm.create_model(name, pretrained=False)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=DECAY)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g['lr_scale'] for g in groups for p in g['params']}


def main() -> None:
    out = {'timm_version': timm.__version__, 'layer_decay': DECAY, 'models': {m: scales(m) for m in MODELS}}
    OUT.write_text(json.dumps(out, indent=0, sort_keys=True) + '\n')
    print(f'wrote {OUT} ({OUT.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
