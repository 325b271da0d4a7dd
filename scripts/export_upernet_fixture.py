"""Reference outputs for Kiln's segmentation heads (crates/kiln-models/src/heads/).

mmsegmentation cannot be installed here, so the heads are rebuilt in plain PyTorch from
mmseg's documented structure (decode_heads/uper_head.py, psp_head.py's PPM, fcn_head.py,
segformer_head.py; mmcv's ConvModule with norm_cfg=dict(type='BN'), act ReLU), with
mmseg's module names, so the state-dict keys are mmseg's. BatchNorm in eval mode with
random running statistics; align_corners=False everywhere.

Run by hand (torch + safetensors, CPU, deterministic):
    python scripts/export_upernet_fixture.py
Writes crates/kiln-models/tests/fixtures/upernet/:
    config.json          widths, classes, pool scales, the cases' map and output sizes
    uper.safetensors     UPerHead state dict (mmseg keys: psp_modules.{i}.1.conv.weight, ...)
    fcn.safetensors      FCNHead (auxiliary: in_index 2, num_convs 1, concat_input False)
    mlp.safetensors      SegformerHead (convs.{i}, fusion_conv, conv_seg)
    <case>.safetensors   features.{i} [B,C_i,H_i,W_i]; uper_raw (finest resolution);
                         uper, fcn, mlp: logits resized to the case's output size
"""
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "crates/kiln-models/tests/fixtures/upernet"
IN_CHANNELS = [8, 16, 32, 64]  # a Swin with embed_dim 8: strides 4, 8, 16, 32
CHANNELS, AUX_CHANNELS, NUM_CLASSES, POOL_SCALES = 8, 8, 5, (1, 2, 3, 6)
CASES = {
    # 32x32 input, batch 2: maps 8, 4, 2, 1 (pool scales 2, 3, 6 upsample the 1x1 map)
    "even": {"batch": 2, "maps": [[8, 8], [4, 4], [2, 2], [1, 1]], "size": [32, 32]},
    # odd, non-square maps (a padded backbone's ceil sizes), output not a multiple of them;
    # pool scale 3 on the 3x3 map is the identity, 2 overlaps windows, 6 upsamples
    "odd": {"batch": 1, "maps": [[6, 5], [3, 3], [3, 2], [2, 2]], "size": [23, 19]},
}


def resize(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """mmcv ConvModule: conv (no bias before a norm) -> BN -> ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class PPM(nn.ModuleList):
    def __init__(self, scales, cin, c):
        super().__init__([nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(cin, c, 1)) for s in scales])

    def forward(self, x):
        return [resize(m(x), x.shape[2:]) for m in self]


class Head(nn.Module):
    def __init__(self, channels, num_classes):
        super().__init__()
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def cls_seg(self, x):
        return self.conv_seg(self.dropout(x))


class UPerHead(Head):
    def __init__(self, in_channels, c, num_classes, pool_scales):
        super().__init__(c, num_classes)
        self.psp_modules = PPM(pool_scales, in_channels[-1], c)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * c, c, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(ci, c, 1) for ci in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(c, c, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * c, c, 3)

    def forward(self, inputs):
        x = inputs[-1]
        top = self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1))
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)] + [top]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        outs = [outs[0]] + [resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class FCNHead(Head):
    def __init__(self, cin, c, num_classes, in_index, num_convs=1):
        super().__init__(c, num_classes)
        self.in_index = in_index
        self.convs = nn.Sequential(*[ConvModule(cin if j == 0 else c, c, 3) for j in range(num_convs)])

    def forward(self, inputs):
        return self.cls_seg(self.convs(inputs[self.in_index]))


class SegformerHead(Head):
    def __init__(self, in_channels, c, num_classes):
        super().__init__(c, num_classes)
        self.convs = nn.ModuleList(ConvModule(ci, c, 1) for ci in in_channels)
        self.fusion_conv = ConvModule(len(in_channels) * c, c, 1)

    def forward(self, inputs):
        outs = [resize(conv(x), inputs[0].shape[2:]) for conv, x in zip(self.convs, inputs)]
        return self.cls_seg(self.fusion_conv(torch.cat(outs, dim=1)))


def randomise_norms(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def state(module):
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    heads = {
        "uper": randomise_norms(UPerHead(IN_CHANNELS, CHANNELS, NUM_CLASSES, POOL_SCALES)),
        "fcn": randomise_norms(FCNHead(IN_CHANNELS[2], AUX_CHANNELS, NUM_CLASSES, 2)),
        "mlp": randomise_norms(SegformerHead(IN_CHANNELS, CHANNELS, NUM_CLASSES)),
    }
    for name, head in heads.items():
        save_file(state(head), str(OUT / f"{name}.safetensors"))
    for case, spec in CASES.items():
        features = [torch.randn(spec["batch"], c, h, w) for c, (h, w) in zip(IN_CHANNELS, spec["maps"])]
        io = {f"features.{i}": f for i, f in enumerate(features)}
        with torch.no_grad():
            io["uper_raw"] = heads["uper"](features)
            for name, head in heads.items():
                io[name] = resize(head(features), spec["size"])
        save_file({k: v.contiguous() for k, v in io.items()}, str(OUT / f"{case}.safetensors"))
    config = {
        "in_channels": IN_CHANNELS,
        "channels": CHANNELS,
        "aux_channels": AUX_CHANNELS,
        "num_classes": NUM_CLASSES,
        "pool_scales": list(POOL_SCALES),
        "cases": CASES,
    }
    (OUT / "config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()
