#!/usr/bin/env python3
"""Export small timm Swin / MaxViT / DaViT parity fixtures, the model registry data and the ImageNet-1k
label files.

Run by hand (needs torch, timm, safetensors; CPU only, deterministic):

    python3 scripts/export_timm_fixtures.py                # everything
    python3 scripts/export_timm_fixtures.py --only swin    # only the Swin parity fixtures
    python3 scripts/export_timm_fixtures.py --only maxvit  # only the MaxViT (*_tf_*) parity fixtures
    python3 scripts/export_timm_fixtures.py --only maxvit_resize  # only maxvit/resize (reads maxvit/tiny)
    python3 scripts/export_timm_fixtures.py --only davit   # only the DaViT parity fixtures
    python3 scripts/export_timm_fixtures.py --only registry
    python3 scripts/export_timm_fixtures.py --only labels
    (--only is repeatable)

Outputs (paths relative to the repository root):

    crates/kiln-models/tests/fixtures/swin/<case>/
        weights.safetensors   full timm state_dict(), timm key names, contiguous f32
                              (timm >= 1.0 registers relative_position_index and attn_mask as
                              non-persistent buffers, so they are NOT in state_dict())
        io.safetensors        input [2,C,H,W] f32, logits [2,num_classes] f32,
                              features.{i} = output of model.layers[i] as NCHW (before the final norm)
        config.json           exact SwinTransformer constructor kwargs (+ derived per-block info)
      shift/weights.pth                      same state dict via torch.save (tests the .pth import path)
      shift/weights_with_buffers.safetensors state dict + relative_position_index (i64) and attn_mask (f32)
                                             buffers as older checkpoints carry them (loader must skip them)
      resize/resized_tables.safetensors      relative_position_bias_table tensors as produced by timm's
                                             checkpoint_filter_fn for the target model (target key names)
    crates/kiln-models/tests/fixtures/maxvit/<case>/   (cases tiny, rect, odd)
      maxvit/resize/          the tiny checkpoint (partition 4) loaded through timm's checkpoint_filter_fn into
                              the same model built at 80x80 (partition 5): config.json (target model),
                              io.safetensors (target outputs), resized_tables.safetensors (the tables timm made);
                              the source weights are maxvit/tiny/weights.safetensors, not copied
    crates/kiln-models/tests/fixtures/davit/<case>/    (cases tiny, pad)
        weights.safetensors   full timm state_dict(), timm key names, f32 (+ the int64 0-d BatchNorm
                              '*.num_batches_tracked' buffers MaxViT's state_dict carries)
        io.safetensors        input, logits, features.{i} = output of model.stages[i] (NCHW, before the
                              head), plus 'stem' = output of model.stem (NCHW)
        config.json           timm constructor arguments (MaxViT: the full MaxxVitCfg dataclass with its
                              nested conv/transformer cfgs), resolved partition sizes, per-block details
    crates/kiln-models/tests/fixtures/registry.json
    crates/kiln-data/data/imagenet1k_labels.txt, imagenet1k_wnids.txt

The script also checks its own understanding of the timm semantics with independent float64
re-implementations of the Swin, MaxViT and DaViT forward passes and of the relative-position-table resize
(see scripts/NOTES_timm_{swin,maxvit,davit}.txt); the export aborts if they disagree with timm. For MaxViT
and DaViT it also prints how far plausible porting mistakes (tanh vs erf GELU, symmetric vs TF 'SAME'
padding, relative-position sign, channel-attention roles, masking pad tokens, ...) move the logits.
"""
import argparse
import dataclasses
import gc
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import timm
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
from timm.models.maxxvit import (MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg,
                                 cfg_window_size, model_cfgs as MAXXVIT_MODEL_CFGS,
                                 checkpoint_filter_fn as maxxvit_checkpoint_filter_fn)
from timm.models.davit import DaVit
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
SWIN_DIR = REPO / 'crates/kiln-models/tests/fixtures/swin'
MAXVIT_DIR = REPO / 'crates/kiln-models/tests/fixtures/maxvit'
DAVIT_DIR = REPO / 'crates/kiln-models/tests/fixtures/davit'
REGISTRY_PATH = REPO / 'crates/kiln-models/tests/fixtures/registry.json'
DATA_DIR = REPO / 'crates/kiln-data/data'

REGISTRY_MODELS = [
    'swin_tiny_patch4_window7_224', 'swin_small_patch4_window7_224', 'swin_base_patch4_window7_224',
    'swin_base_patch4_window12_384', 'swin_large_patch4_window7_224', 'swin_large_patch4_window12_384',
    'maxvit_tiny_tf_224', 'maxvit_tiny_tf_384', 'maxvit_tiny_tf_512',
    'maxvit_small_tf_224', 'maxvit_small_tf_384', 'maxvit_small_tf_512',
    'maxvit_base_tf_224', 'maxvit_base_tf_384', 'maxvit_base_tf_512',
    'maxvit_large_tf_224', 'maxvit_large_tf_384', 'maxvit_large_tf_512',
    'davit_tiny', 'davit_small', 'davit_base', 'davit_large', 'davit_huge',
]

# Fixture cases. All kwargs go to timm.models.swin_transformer.SwinTransformer verbatim.
# drop_path_rate=0 is irrelevant in eval mode but keeps the config self-explanatory.
COMMON = dict(mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0)
CASES = {
    'shift': dict(img_size=32, patch_size=2, in_chans=3, num_classes=10, embed_dim=16,
                  depths=(2, 2), num_heads=(2, 4), window_size=4, **COMMON),
    'pad': dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=16,
                depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4, **COMMON),
}
RESIZE_SRC = dict(img_size=24, patch_size=2, in_chans=3, num_classes=10, embed_dim=16,
                  depths=(2, 2), num_heads=(2, 4), window_size=3, **COMMON)
RESIZE_DST = dict(RESIZE_SRC, window_size=6)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with random values of a meaningful scale (deterministic).

    - relative position bias tables: N(0, 1)   (so they visibly matter, timm's own init is std 0.02)
    - 1-D '*weight' (norm scales):    1 + 0.1 * N(0, 1)
    - 1-D biases / other 1-D params:  0.1 * N(0, 1)
    - >=2-D weights (linear, conv):   N(0, 1) / sqrt(fan_in), fan_in = prod(shape[1:])
    Buffers (e.g. BatchNorm running stats) are left alone.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if 'relative_position_bias_table' in name:
            v = r
        elif p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            v = r / math.sqrt(fan_in)
        elif name.endswith('weight'):
            v = 1.0 + 0.1 * r
        else:
            v = 0.1 * r
        p.copy_(v.to(p.dtype))


def f32_state_dict(model: torch.nn.Module) -> dict:
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()
        out[k] = v.contiguous().clone()
    return out


@torch.no_grad()
def run_with_features(model: torch.nn.Module, x: torch.Tensor, stages=None, nhwc: bool = True,
                      inter_offset: int = 0, capture_stem: bool = False):
    """Eval forward; returns logits and the NCHW outputs of each stage (default: Swin's model.layers).

    stages: the stage modules to hook (default model.layers); nhwc: the stages return NHWC (Swin) and are
    permuted to NCHW, else they already return NCHW (MaxViT, DaViT); inter_offset: index of the first stage
    in model.forward_intermediates (MaxViT lists the stem first); capture_stem: also return model.stem's
    output (NCHW) as a third value.
    """
    stages = model.layers if stages is None else stages
    feats = {}
    hooks = []
    for i, stage in enumerate(stages):
        hooks.append(stage.register_forward_hook(
            lambda _m, _inp, out, i=i: feats.__setitem__(
                i, (out.permute(0, 3, 1, 2) if nhwc else out).contiguous())))
    if capture_stem:
        hooks.append(model.stem.register_forward_hook(
            lambda _m, _inp, out: feats.__setitem__('stem', out.contiguous())))
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    # cross-check with timm's own intermediates API
    inter = model.forward_intermediates(x, intermediates_only=True)
    assert len(inter) == len(stages) + inter_offset, (len(inter), len(stages))
    for i, t in enumerate(inter[inter_offset:]):
        assert torch.equal(t, feats[i]), f'stage {i} hook output differs from forward_intermediates'
    if inter_offset and capture_stem:
        assert torch.equal(inter[0], feats['stem']), 'stem hook output differs from forward_intermediates'
    out = [feats[i] for i in range(len(stages))]
    if capture_stem:
        return logits, out, feats['stem']
    return logits, out


def buffers_state(model: torch.nn.Module) -> dict:
    """Non-persistent buffers timm keeps out of state_dict() (as older checkpoints carry them)."""
    out = {}
    for name, b in model.named_buffers():
        if b is None:
            continue
        if name.endswith('relative_position_index') or name.endswith('attn_mask'):
            out[name] = b.detach().cpu().contiguous().clone()
    return out


def block_info(model: SwinTransformer) -> list:
    info = []
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            info.append(dict(
                stage=i, block=j, input_resolution=list(blk.input_resolution),
                window_size=list(blk.window_size), shift_size=list(blk.shift_size),
                has_attn_mask=blk.attn_mask is not None,
                dim=blk.dim, num_heads=blk.attn.num_heads,
                relative_position_bias_table_shape=list(blk.attn.relative_position_bias_table.shape),
            ))
    return info


def jsonable(cfg: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def print_dir_total(root: Path, tag: str) -> int:
    total = 0
    for f in sorted(root.rglob('*')):
        if f.is_file():
            total += f.stat().st_size
            print(f'  {f.relative_to(REPO)}  {f.stat().st_size} B')
    print(f'{tag} fixtures total: {total} B ({total / 2**20:.3f} MiB)')
    return total


# ----------------------------------------------------------------------------------------------
# independent float64 reference (the semantics written down in scripts/NOTES_timm_swin.txt)
# ----------------------------------------------------------------------------------------------

def _ln(x, sd, prefix, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) / torch.sqrt(var + eps) * sd[prefix + '.weight'] + sd[prefix + '.bias']


def _lin(x, sd, prefix, bias=True):
    y = x @ sd[prefix + '.weight'].T
    return y + sd[prefix + '.bias'] if bias else y


def _rel_index(wh, ww):
    idx = torch.empty(wh * ww, wh * ww, dtype=torch.long)
    for i in range(wh * ww):
        yi, xi = divmod(i, ww)
        for j in range(wh * ww):
            yj, xj = divmod(j, ww)
            idx[i, j] = (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
    return idx


def _region_mask(Hp, Wp, wh, ww, sh, sw):
    """[nW, N, N] with 0 (same region) / -100 (different region); regions labelled on the padded grid."""
    def region(c, size, win, shift):
        if shift == 0:  # slice(-0, None) selects the whole axis and overwrites: no split along it
            return 2
        if c < size - win:
            return 0
        if c < size - shift:
            return 1
        return 2
    ids = torch.empty(Hp, Wp, dtype=torch.long)
    for y in range(Hp):
        for x in range(Wp):
            ids[y, x] = region(y, Hp, wh, sh) * 3 + region(x, Wp, ww, sw)
    win = ids.view(Hp // wh, wh, Wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    same = win[:, :, None] == win[:, None, :]
    return torch.where(same, 0.0, -100.0).double()


def ref_swin_forward(sd, cfg, x):
    """Swin eval forward written from scratch in float64. x: [B, C, H, W]. Returns (logits, [NCHW feats])."""
    sd = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    x = x.double()
    B, C, H, W = x.shape
    p = cfg['patch_size']
    E = cfg['embed_dim']
    ws_cfg = cfg['window_size']
    # patch embed: stride=kernel conv == patchify (C, ky, kx order) + matmul
    Hg, Wg = H // p, W // p
    patches = x.reshape(B, C, Hg, p, Wg, p).permute(0, 2, 4, 1, 3, 5).reshape(B, Hg, Wg, C * p * p)
    x = patches @ sd['patch_embed.proj.weight'].reshape(E, -1).T + sd['patch_embed.proj.bias']
    x = _ln(x, sd, 'patch_embed.norm')
    feats = []
    for i, depth in enumerate(cfg['depths']):
        if i > 0:  # PatchMerging at the start of stages 1..
            B, H, W, C = x.shape
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            x = _ln(x, sd, f'layers.{i}.downsample.norm')
            x = _lin(x, sd, f'layers.{i}.downsample.reduction', bias=False)
        B, H, W, C = x.shape
        nh = cfg['num_heads'][i]
        hd = C // nh
        for j in range(depth):
            pre = f'layers.{i}.blocks.{j}'
            wh = H if H <= ws_cfg else ws_cfg
            ww = W if W <= ws_cfg else ws_cfg
            tgt_shift = 0 if j % 2 == 0 else ws_cfg // 2
            sh = 0 if H <= wh else tgt_shift
            sw = 0 if W <= ww else tgt_shift
            N = wh * ww
            h = _ln(x, sd, pre + '.norm1')
            if sh or sw:
                h = torch.roll(h, shifts=(-sh, -sw), dims=(1, 2))
            ph, pw = (wh - H % wh) % wh, (ww - W % ww) % ww
            h = F.pad(h, (0, 0, 0, pw, 0, ph))  # zeros AFTER norm1, bottom/right
            Hp, Wp = H + ph, W + pw
            nW = (Hp // wh) * (Wp // ww)
            win = h.reshape(B, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nW, N, C)
            qkv = _lin(win, sd, pre + '.attn.qkv').reshape(B * nW, N, 3, nh, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * hd ** -0.5) @ k.transpose(-2, -1)
            table = sd[pre + '.attn.relative_position_bias_table']
            bias = table[_rel_index(wh, ww).view(-1)].view(N, N, nh).permute(2, 0, 1)
            attn = attn + bias[None]
            if sh or sw:
                m = _region_mask(Hp, Wp, wh, ww, sh, sw)  # [nW, N, N]
                attn = (attn.view(B, nW, nh, N, N) + m[None, :, None]).view(B * nW, nh, N, N)
            attn = attn.softmax(-1)
            o = (attn @ v).transpose(1, 2).reshape(B * nW, N, nh * hd)
            o = _lin(o, sd, pre + '.attn.proj')
            o = o.view(B, Hp // wh, Wp // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
            o = o[:, :H, :W]
            if sh or sw:
                o = torch.roll(o, shifts=(sh, sw), dims=(1, 2))
            x = x + o
            y = _lin(_ln(x, sd, pre + '.norm2'), sd, pre + '.mlp.fc1')
            y = 0.5 * y * (1.0 + torch.erf(y / math.sqrt(2.0)))  # exact (erf) GELU
            x = x + _lin(y, sd, pre + '.mlp.fc2')
        feats.append(x.permute(0, 3, 1, 2))
    x = _ln(x, sd, 'norm')
    x = x.mean(dim=(1, 2))
    return _lin(x, sd, 'head.fc'), feats


def _gp_positions(src: int, dst: int) -> list:
    """timm resize_rel_pos_bias_table._calc: non-uniform source coordinates (python floats, f64)."""
    left, right = 1.01, 1.5
    q = None
    while right - left > 1e-6:
        q = (left + right) / 2.0
        gp = (1.0 - q ** (src // 2)) / (1.0 - q)  # 1 + q + ... + q^(src//2 - 1)
        if gp > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0] + dis


def _interp1d_weights(pts, t):
    """(i0, i1, w0, w1) for timm's RegularGridInterpolator along one axis (clamped at both ends)."""
    n = len(pts)
    i1 = next((i for i, p in enumerate(pts) if t <= p), n)  # torch.bucketize(right=False)
    i1 = min(i1, n - 1)
    i0 = min(max(i1 - 1, 0), n - 1)
    dl = max(t - pts[i0], 0.0)
    dr = max(pts[i1] - t, 0.0)
    if dl == 0.0 and dr == 0.0:
        dl = dr = 1.0
    # value = (v[i0] * dr + v[i1] * dl) / (dl + dr)
    return i0, i1, dr / (dl + dr), dl / (dl + dr)


def ref_resize_table(table: torch.Tensor, src_win, dst_win) -> torch.Tensor:
    """Independent re-implementation of timm.layers.resize_rel_pos_bias_table for flat
    [(2Wh-1)*(2Ww-1), nH] Swin tables with TIMM_USE_SCIPY_INTERP unset (the default)."""
    src = (2 * src_win[0] - 1, 2 * src_win[1] - 1)
    dst = (2 * dst_win[0] - 1, 2 * dst_win[1] - 1)
    if src == dst:
        return table.clone()
    ys = [float(v) for v in torch.tensor(_gp_positions(src[0], dst[0])).tolist()]  # rounded to f32 like timm
    xs = [float(v) for v in torch.tensor(_gp_positions(src[1], dst[1])).tolist()]
    ty, tx = dst[0] // 2, dst[1] // 2
    nh = table.shape[1]
    z = table.double().view(src[0], src[1], nh)
    out = torch.empty(dst[0], dst[1], nh, dtype=torch.float64)
    for a in range(dst[0]):
        y0, y1, wy0, wy1 = _interp1d_weights(ys, float(a - ty))
        for b in range(dst[1]):
            x0, x1, wx0, wx1 = _interp1d_weights(xs, float(b - tx))
            out[a, b] = (z[y0, x0] * wy0 * wx0 + z[y0, x1] * wy0 * wx1
                         + z[y1, x0] * wy1 * wx0 + z[y1, x1] * wy1 * wx1)
    return out.view(dst[0] * dst[1], nh)


# ----------------------------------------------------------------------------------------------
# Swin fixtures
# ----------------------------------------------------------------------------------------------

def build(cfg: dict, seed: int) -> SwinTransformer:
    torch.manual_seed(seed)
    model = SwinTransformer(**cfg)
    randomize_(model, seed)
    return model.eval()


@torch.no_grad()
def report_model(tag: str, model: SwinTransformer, x: torch.Tensor, logits: torch.Tensor, feats, cfg, sd):
    print(f'[{tag}] logits {tuple(logits.shape)} std={logits.std():.3f} max|.|={logits.abs().max():.3f}')
    for i, f in enumerate(feats):
        print(f'[{tag}]   features.{i} {tuple(f.shape)} std={f.std():.3f}')
    # rel-pos tables must matter
    saved = {n: p.clone() for n, p in model.named_parameters() if 'relative_position_bias_table' in n}
    for n, p in model.named_parameters():
        if n in saved:
            p.zero_()
    z = model(x)
    for n, p in model.named_parameters():
        if n in saved:
            p.copy_(saved[n])
    print(f'[{tag}] zeroing relative_position_bias_table changes logits by max {(z - logits).abs().max():.3f} '
          f'(mean {(z - logits).abs().mean():.3f})')
    assert (z - logits).abs().max() > 0.05, 'relative position tables have no visible effect'
    # masks must matter (only if the model has any)
    blocks = [b for s in model.layers for b in s.blocks if b.attn_mask is not None]
    if blocks:
        masks = [b.attn_mask for b in blocks]
        for b in blocks:
            b.attn_mask = torch.zeros_like(b.attn_mask)
        z = model(x)
        for b, m in zip(blocks, masks):
            b.attn_mask = m
        print(f'[{tag}] zeroing the shifted-window attn_mask changes logits by max {(z - logits).abs().max():.3f}')
        assert (z - logits).abs().max() > 0.05, 'attention masks have no visible effect'
    # independent reference
    rl, rf = ref_swin_forward(sd, cfg, x)
    err = (rl - logits.double()).abs().max().item()
    ferr = max((a - b.double()).abs().max().item() for a, b in zip(rf, feats))
    print(f'[{tag}] float64 reference vs timm: logits max abs err {err:.2e}, features {ferr:.2e}')
    assert err < 1e-4 and ferr < 1e-4, 'reference implementation disagrees with timm'


def write_case(name: str, cfg: dict, weights_sd: dict, x, logits, feats, extra_cfg=None,
               base_dir: Path = None, extra_io=None):
    d = (base_dir or SWIN_DIR) / name
    d.mkdir(parents=True, exist_ok=True)
    save_file(weights_sd, str(d / 'weights.safetensors'))
    io = {'input': x.float().contiguous(), 'logits': logits.float().contiguous()}
    for i, f in enumerate(feats):
        io[f'features.{i}'] = f.float().contiguous()
    for k, v in (extra_io or {}).items():
        io[k] = v.float().contiguous()
    save_file(io, str(d / 'io.safetensors'))
    meta = {'timm_version': timm.__version__, 'torch_version': torch.__version__.split('+')[0]}
    meta.update(extra_cfg or {'model': jsonable(cfg)})
    (d / 'config.json').write_text(json.dumps(meta, indent=2) + '\n')
    return d


def export_swin():
    torch.set_grad_enabled(False)
    for idx, (name, cfg) in enumerate(CASES.items()):
        seed = 1000 + idx
        model = build(cfg, seed)
        torch.manual_seed(seed + 1)
        x = torch.randn(2, cfg['in_chans'], cfg['img_size'], cfg['img_size'])
        logits, feats = run_with_features(model, x)
        sd = f32_state_dict(model)
        report_model(name, model, x, logits, feats, cfg, sd)
        extra = {'model': jsonable(cfg), 'input_seed': seed + 1, 'param_seed': seed,
                 'blocks': block_info(model)}
        d = write_case(name, cfg, sd, x, logits, feats, extra)
        if name == 'shift':
            torch.save(sd, str(d / 'weights.pth'))
            save_file({**sd, **buffers_state(model)}, str(d / 'weights_with_buffers.safetensors'))
        del model

    # ---- resize: source window 3 -> target window 6 through timm's checkpoint_filter_fn
    seed = 1100
    src = build(RESIZE_SRC, seed)
    src_sd = f32_state_dict(src)
    torch.manual_seed(seed + 7)
    dst = SwinTransformer(**RESIZE_DST).eval()  # its own init is irrelevant, everything is overwritten
    filtered = checkpoint_filter_fn(dict(src_sd), dst)
    dst.load_state_dict(filtered, strict=True)  # no buffers in timm state dicts, so strict works
    resized = {k: v.float().contiguous() for k, v in filtered.items() if k.endswith('relative_position_bias_table')}
    for k, v in resized.items():
        assert v.shape != src_sd[k].shape, k
        mod = dst.get_submodule(k[:-len('.relative_position_bias_table')])
        r = ref_resize_table(src_sd[k], src.get_submodule(k[:-len('.relative_position_bias_table')]).window_size,
                             mod.window_size)
        err = (r - v.double()).abs().max().item()
        assert err < 1e-5, f'resize reference disagrees with timm for {k}: {err}'
    print(f'[resize] {len(resized)} tables resized {tuple(next(iter(src_sd[k] for k in resized)).shape)} -> '
          f'{tuple(next(iter(resized.values())).shape)}; float64 reference resize matches timm')
    torch.manual_seed(seed + 1)
    x = torch.randn(2, RESIZE_SRC['in_chans'], RESIZE_SRC['img_size'], RESIZE_SRC['img_size'])
    src_logits, _ = run_with_features(src, x)
    logits, feats = run_with_features(dst, x)
    print(f'[resize] source logits differ from target logits by max {(src_logits - logits).abs().max():.3f}')
    report_model('resize/target', dst, x, logits, feats, RESIZE_DST, f32_state_dict(dst))
    extra = {
        'model': jsonable(RESIZE_DST),
        'source_model': jsonable(RESIZE_SRC),
        'target_model': jsonable(RESIZE_DST),
        'note': ('weights.safetensors holds the SOURCE (window_size=3) state dict; logits/features in '
                 'io.safetensors come from the TARGET (window_size=6) model after '
                 'target.load_state_dict(checkpoint_filter_fn(source_sd, target), strict=True). '
                 'resized_tables.safetensors holds the tables checkpoint_filter_fn produced '
                 '(timm resize_rel_pos_bias_table, geometric-progression grid + bilinear, NOT plain bicubic).'),
        'input_seed': seed + 1, 'param_seed': seed,
        'source_blocks': block_info(src), 'blocks': block_info(dst),
    }
    d = write_case('resize', RESIZE_DST, src_sd, x, logits, feats, extra)
    save_file(resized, str(d / 'resized_tables.safetensors'))

    total = print_dir_total(SWIN_DIR, 'swin')
    assert total < 5 * 2**20


# ----------------------------------------------------------------------------------------------
# shared float64 building blocks for the MaxViT / DaViT references
# ----------------------------------------------------------------------------------------------

def _gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _ln2d(x, sd, prefix, eps):
    """LayerNorm over C of an NCHW tensor (timm LayerNorm2d)."""
    return _ln(x.permute(0, 2, 3, 1), sd, prefix, eps).permute(0, 3, 1, 2)


def _pad_same(x, k: int, s: int, value: float = 0.0):
    """TF 'SAME' padding (timm pad_same): total = max((ceil(n/s)-1)*s + k - n, 0), the extra one at the end."""
    H, W = x.shape[-2:]
    ph = max((math.ceil(H / s) - 1) * s + k - H, 0)
    pw = max((math.ceil(W / s) - 1) * s + k - W, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


def _pad_bottom_right(x, mh: int, mw: int):
    """Zero-pad an NCHW tensor at the bottom/right up to multiples of (mh, mw)."""
    H, W = x.shape[-2:]
    return F.pad(x, (0, (mw - W % mw) % mw, 0, (mh - H % mh) % mh))


def _partition_index(H: int, W: int, ph: int, pw: int, grid: bool) -> torch.Tensor:
    """[num_partitions, ph*pw] flat positions (y*W + x) of the tokens of each partition, in timm's order.

    block/window (grid=False): partition (i, j), i < H/ph, j < W/pw, token (a, b): y = i*ph + a, x = j*pw + b
    grid         (grid=True):  partition (i, j), i < H/ph, j < W/pw, token (a, b): y = a*(H/ph) + i,
                                                                                     x = b*(W/pw) + j
    partitions are numbered i*(W/pw) + j, tokens a*pw + b.
    """
    assert H % ph == 0 and W % pw == 0, (H, W, ph, pw)
    nh, nw = H // ph, W // pw
    ids = torch.empty(nh * nw, ph * pw, dtype=torch.long)
    for i in range(nh):
        for j in range(nw):
            for a in range(ph):
                for b in range(pw):
                    y, x = (a * nh + i, b * nw + j) if grid else (i * ph + a, j * pw + b)
                    ids[i * nw + j, a * pw + b] = y * W + x
    return ids


def _mhsa(t, sd, prefix, num_heads, bias=None, head_first=False, key_mask=None):
    """Multi-head self-attention over the second-to-last axis of t [..., N, C] (qkv Linear C->3C, proj)."""
    *lead, N, C = t.shape
    hd = C // num_heads
    qkv = _lin(t, sd, prefix + '.qkv')
    if head_first:  # per head [q_h | k_h | v_h]  (timm head_first=True; NOT what the tf configs use)
        qkv = qkv.reshape(*lead, N, num_heads, 3, hd).movedim(-2, 0)
    else:           # [q | k | v], each head-major
        qkv = qkv.reshape(*lead, N, 3, num_heads, hd).movedim(-3, 0)
    q, k, v = (u.movedim(-3, -2) for u in qkv)  # [..., nH, N, hd]
    attn = (q * hd ** -0.5) @ k.transpose(-1, -2)
    if bias is not None:
        attn = attn + bias
    if key_mask is not None:
        attn = attn.masked_fill(~key_mask[..., None, :], float('-inf'))
    o = attn.softmax(-1) @ v
    o = o.movedim(-3, -2).reshape(*lead, N, C)
    return _lin(o, sd, prefix + '.proj')


@torch.no_grad()
def randomize_bn_stats_(model: torch.nn.Module, seed: int) -> None:
    """BatchNorm running stats: mean 0.3*N(0,1), var exp(0.5*N(0,1)) (positive), so eval-mode BN matters."""
    g = torch.Generator().manual_seed(seed)
    for _name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.exp(0.5 * torch.randn(m.running_var.shape, generator=g)))


@torch.no_grad()
def _check_variants(tag, ref_fn, ref_out, must_matter: dict, may_matter=()):
    """Run the float64 reference with deliberate porting mistakes and print how far each moves the logits
    and the stage outputs (max abs over features.* / stem); assert that the ones listed in must_matter
    (name -> minimum) move logits or features by more than that. ref_fn(variant) and ref_out are
    (logits, [features], stem) triples."""
    rl, rf, rs = ref_out
    for v in list(must_matter) + list(may_matter):
        vl, vf, vs = ref_fn(frozenset([v]))
        dl = (vl - rl).abs().max().item()
        df = max((a - b).abs().max().item() for a, b in zip(vf + [vs], rf + [rs]))
        flag = ''
        if v in must_matter:
            assert max(dl, df) > must_matter[v], f'[{tag}] variant {v} changes logits/features by only {dl:.2e}/{df:.2e}'
            flag = ' (asserted)'
        print(f'[{tag}]   wrong variant {v:<27s} changes logits by max {dl:.2e}, features by max {df:.2e}{flag}')


@torch.no_grad()
def _record_block_shapes(model, blocks, x):
    """Input / output shapes of the given modules during one forward (list of (in_shape, out_shape))."""
    shapes = {}
    hooks = [b.register_forward_hook(
        lambda _m, inp, out, i=i: shapes.__setitem__(i, (list(inp[0].shape), list(out.shape))))
        for i, b in enumerate(blocks)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return [shapes[i] for i in range(len(blocks))]


# ----------------------------------------------------------------------------------------------
# MaxViT (timm/models/maxxvit.py, the *_tf_* configs; see scripts/NOTES_timm_maxvit.txt)
# ----------------------------------------------------------------------------------------------

# Every case is model_cfgs['maxvit_tiny_tf'] (the config class instance timm uses for maxvit_tiny_tf_224)
# with only sizes changed: embed_dim, depths (block_type follows: 'M' per stage), stem_width,
# head_hidden_size (= embed_dim[-1], as in every *_tf config) and, in transformer_cfg, dim_head
# (8 instead of 32 so that 16-channel stages have 2 heads) and the partition sizes.
MAXVIT_CASES = {
    # img 64 -> stem 32x32 -> stage0 16x16 -> stage1 8x8. window = grid = 64 // partition_ratio(16) = 4
    # (derived like the real models derive 7 = 224 // 32). stage0: 16 windows, grid stride 4;
    # stage1: 4 windows, grid stride 2. Two blocks in stage 0 (second one: stride 1, identity shortcut).
    'tiny': dict(cfg=dict(embed_dim=(16, 32), depths=(2, 1), stem_width=16, head_hidden_size=32,
                          transformer=dict(dim_head=8, partition_ratio=16)),
                 img_size=(64, 64), in_chans=3, num_classes=10),
    # non-square input and partitions, window != grid: img 48x32 -> stem 24x16 -> 12x8 -> 6x4,
    # window (3, 2), grid (2, 4): tables [nH, 5, 3] (block) and [nH, 3, 7] (grid); catches H/W swaps.
    'rect': dict(cfg=dict(embed_dim=(16, 32), depths=(1, 1), stem_width=16, head_hidden_size=32,
                          transformer=dict(dim_head=8, window_size=(3, 2), grid_size=(2, 4))),
                 img_size=(48, 32), in_chans=3, num_classes=10),
    # odd sizes: img 27x24 -> stem 14x12 (27 odd: SAME pads 1 top + 1 bottom; 24 even: 0 left, 1 right)
    # -> stage0 7x6 -> stage1 4x3 (7 odd: the stride-2 dw conv pads 1/1 and the AvgPool2dSame shortcut
    # pads one zero row at the bottom that IS counted in the average). The partition must divide 7 and 4
    # along H, hence window = grid = (1, 3) (legal in timm, tables [nH, 1, 5]).
    'odd': dict(cfg=dict(embed_dim=(16, 32), depths=(1, 1), stem_width=16, head_hidden_size=32,
                         transformer=dict(dim_head=8, window_size=(1, 3))),
                img_size=(27, 24), in_chans=3, num_classes=10),
}


def maxvit_cfg(embed_dim, depths, stem_width, head_hidden_size, transformer) -> MaxxVitCfg:
    base = MAXXVIT_MODEL_CFGS['maxvit_tiny_tf']
    return dataclasses.replace(
        base, embed_dim=tuple(embed_dim), depths=tuple(depths), block_type=('M',) * len(depths),
        stem_width=stem_width, head_hidden_size=head_hidden_size,
        transformer_cfg=dataclasses.replace(base.transformer_cfg, **transformer))


def _tuplify(d: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}


def maxvit_from_json(model_json: dict) -> MaxxVit:
    """Rebuild the timm model from config.json's "model" entry (the inverse of what export_maxvit writes)."""
    c = dict(model_json['cfg'])
    conv_cfg = MaxxVitConvCfg(**_tuplify(c.pop('conv_cfg')))
    transformer_cfg = MaxxVitTransformerCfg(**_tuplify(c.pop('transformer_cfg')))
    cfg = MaxxVitCfg(**_tuplify(c), conv_cfg=conv_cfg, transformer_cfg=transformer_cfg)
    kw = {k: v for k, v in model_json.items() if k not in ('class', 'cfg')}
    kw['img_size'] = tuple(kw['img_size'])
    return MaxxVit(cfg=cfg, **kw)


def _assert_tf_style(cfg: MaxxVitCfg) -> None:
    """The reference below implements exactly these settings (those of every maxvit_*_tf model)."""
    cc, tc = cfg.conv_cfg, cfg.transformer_cfg
    assert cc.block_type == 'mbconv' and cc.expand_ratio == 4.0 and cc.expand_output and cc.kernel_size == 3
    assert cc.group_size == 1 and not cc.pre_norm_act and cc.output_bias and cc.stride_mode == 'dw'
    assert cc.pool_type == 'avg2' and cc.padding == 'same' and not cc.attn_early and cc.attn_layer == 'se'
    assert cc.attn_act_layer == 'silu' and cc.attn_ratio == 0.25 and cc.act_layer == 'gelu_tanh'
    assert cc.norm_layer == 'batchnorm2d' and cc.norm_eps == 1e-3
    assert not tc.head_first and tc.expand_ratio == 4.0 and tc.attn_bias and tc.rel_pos_type == 'bias_tf'
    assert not tc.no_block_attn and not tc.use_nchw_attn and tc.init_values is None
    assert tc.act_layer == 'gelu_tanh' and tc.norm_layer == 'layernorm2d' and tc.norm_layer_cl == 'layernorm'
    assert tc.norm_eps == 1e-5 and cfg.stem_bias and cfg.head_hidden_size
    assert all(b == 'M' for b in cfg.block_type)


def ref_maxvit_forward(sd, rc, x, variant=frozenset()):
    """MaxViT (tf-style) eval forward from scratch in float64. rc = config.json "reference" entry.
    Returns (logits, [NCHW stage outputs], stem output). `variant` switches on deliberate mistakes."""
    sd = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    x = x.double()
    act = _gelu_erf if 'gelu_erf' in variant else _gelu_tanh
    ceps, teps = rc['conv_norm_eps'], rc['transformer_norm_eps']
    wsz, gsz = tuple(rc['window_size']), tuple(rc['grid_size'])

    def conv(h, p, stride=1, groups=1):
        w = sd[p + '.weight']
        k = w.shape[-1]
        if k > 1:
            h = F.pad(h, (k // 2,) * 4) if 'symmetric_pad' in variant else _pad_same(h, k, stride)
        return F.conv2d(h, w, sd.get(p + '.bias'), stride, 0, 1, groups)

    def bn(h, p, apply_act):  # eval BatchNorm (+ GELU-tanh); eps 1e-3 in the tf configs
        eps = 1e-5 if 'bn_eps_1e-5' in variant else ceps
        sh = (1, -1, 1, 1)
        h = ((h - sd[p + '.running_mean'].view(sh)) / torch.sqrt(sd[p + '.running_var'].view(sh) + eps)
             * sd[p + '.weight'].view(sh) + sd[p + '.bias'].view(sh))
        return act(h) if apply_act else h

    # stem: conv3x3/2 SAME (+bias) -> BN(eps 1e-3) + GELU-tanh -> conv3x3/1 (+bias), no norm after
    h = conv(x, 'stem.conv1', 2)
    h = bn(h, 'stem.norm1', True)
    h = conv(h, 'stem.conv2')
    stem = h
    feats = []
    for i, depth in enumerate(rc['depths']):
        for j in range(depth):
            p = f'stages.{i}.blocks.{j}'
            c = p + '.conv'
            stride = 2 if j == 0 else 1
            # ---- MbConvBlock (pre-norm inverted bottleneck)
            if stride == 2:
                sc = _pad_same(h, 2, 2)                       # AvgPool2dSame(2, 2): zero pad at the end
                if 'pool_exclude_pad' in variant:
                    ones = _pad_same(torch.ones_like(h[:, :1]), 2, 2)
                    sc = F.avg_pool2d(sc, 2, 2) / F.avg_pool2d(ones, 2, 2)
                else:
                    sc = F.avg_pool2d(sc, 2, 2)               # the pad zeros count (divide by 4)
                if c + '.shortcut.expand.weight' in sd:       # only when in_chs != out_chs
                    sc = conv(sc, c + '.shortcut.expand')
            else:
                sc = h
            y = bn(h, c + '.pre_norm', 'pre_norm_act' in variant)
            y = bn(conv(y, c + '.conv1_1x1'), c + '.norm1', True)
            y = bn(conv(y, c + '.conv2_kxk', stride, groups=y.shape[1]), c + '.norm2', True)
            s = y.mean((2, 3), keepdim=True)
            s = conv(s, c + '.se.fc1')
            s = s * torch.sigmoid(s)                          # SiLU
            s = conv(s, c + '.se.fc2')
            y = y * torch.sigmoid(s)
            h = conv(y, c + '.conv3_1x1') + sc
            # ---- block (window) attention + MLP, then grid attention + MLP, channels-last
            t = h.permute(0, 2, 3, 1)
            B, H, W, C = t.shape
            nh = C // rc['dim_head']
            for part, psize, grid in (('attn_block', wsz, False), ('attn_grid', gsz, True)):
                if 'swap_partition_layout' in variant:
                    grid = not grid
                q = f'{p}.{part}'
                u = _ln(t, sd, q + '.norm1', teps).reshape(B, H * W, C)
                ids = _partition_index(H, W, psize[0], psize[1], grid)
                bias = ref_tf_rel_bias(sd[q + '.attn.rel_pos.relative_position_bias_table'], psize,
                                       swin_sign='relpos_query_minus_key' in variant)
                o = _mhsa(u[:, ids], sd, q + '.attn', nh, bias, head_first='qkv_head_first' in variant)
                out = torch.empty_like(u)
                out[:, ids] = o
                t = t + out.reshape(B, H, W, C)
                m = act(_lin(_ln(t, sd, q + '.norm2', teps), sd, q + '.mlp.fc1'))
                t = t + _lin(m, sd, q + '.mlp.fc2')
            h = t.permute(0, 3, 1, 2)
        feats.append(h)
    # NormMlpClassifierHead: avg pool -> LayerNorm(eps 1e-5) -> Linear + tanh (pre_logits) -> Linear
    v = h.mean((2, 3))
    v = _ln(v, sd, 'head.norm', teps)
    v = torch.tanh(_lin(v, sd, 'head.pre_logits.fc'))
    return _lin(v, sd, 'head.fc'), feats, stem


def ref_tf_rel_bias(table, psize, swin_sign=False):
    """RelPosBiasTf.get_bias(): table [nH, 2*ph-1, 2*pw-1] -> bias [nH, N, N], N = ph*pw, tokens n = a*pw + b.
    bias[h, (ai,bi), (aj,bj)] = table[h, aj - ai + ph - 1, bj - bi + pw - 1]   (KEY minus QUERY)."""
    ph, pw = psize
    N = ph * pw
    rows = torch.empty(N, N, dtype=torch.long)
    cols = torch.empty(N, N, dtype=torch.long)
    for i in range(N):
        ai, bi = divmod(i, pw)
        for j in range(N):
            aj, bj = divmod(j, pw)
            dy, dx = (ai - aj, bi - bj) if swin_sign else (aj - ai, bj - bi)
            rows[i, j] = dy + ph - 1
            cols[i, j] = dx + pw - 1
    return table[:, rows, cols]


def maxvit_block_info(model: MaxxVit, x) -> list:
    blocks = [b for s in model.stages for b in s.blocks]
    shapes = _record_block_shapes(model, blocks, x)
    info = []
    k = 0
    for i, stage in enumerate(model.stages):
        for j, blk in enumerate(stage.blocks):
            (in_shape, out_shape) = shapes[k]
            k += 1
            conv = blk.conv
            H, W = in_shape[2:]
            stride = conv.conv2_kxk.stride[0]
            kk = conv.conv2_kxk.kernel_size[0]
            ph = max((math.ceil(H / stride) - 1) * stride + kk - H, 0)
            pw = max((math.ceil(W / stride) - 1) * stride + kk - W, 0)
            oh, ow = out_shape[2:]
            wsz, gsz = blk.attn_block.partition_size, blk.attn_grid.partition_size
            info.append(dict(
                stage=i, block=j, in_chs=in_shape[1], out_chs=out_shape[1], stride=stride,
                input_hw=[H, W], output_hw=[oh, ow],
                mid_chs=conv.conv1_1x1.out_channels, se_rd_channels=conv.se.fc1.out_channels,
                shortcut=('avgpool2x2_same' + ('+expand1x1' if isinstance(conv.shortcut.expand, torch.nn.Conv2d)
                                                else '')) if stride == 2 else 'identity',
                conv2_kxk=dict(cls=type(conv.conv2_kxk).__name__, kernel=kk, stride=stride,
                               groups=conv.conv2_kxk.groups,
                               pad_left_right_top_bottom=[pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]),
                num_heads=blk.attn_block.attn.num_heads, dim_head=blk.attn_block.attn.dim_head,
                window_size=list(wsz), grid_size=list(gsz),
                num_windows=(oh // wsz[0]) * (ow // wsz[1]), num_grid_partitions=(oh // gsz[0]) * (ow // gsz[1]),
                grid_stride=[oh // gsz[0], ow // gsz[1]],
                block_table_shape=list(blk.attn_block.attn.rel_pos.relative_position_bias_table.shape),
                grid_table_shape=list(blk.attn_grid.attn.rel_pos.relative_position_bias_table.shape),
                mlp_hidden=blk.attn_block.mlp.fc1.out_features,
            ))
    return info


def print_output_scales(tag, logits, feats, stem):
    print(f'[{tag}] logits {tuple(logits.shape)} std={logits.std():.3f} max|.|={logits.abs().max():.3f}')
    print(f'[{tag}]   stem {tuple(stem.shape)} std={stem.std():.3f}')
    for i, f in enumerate(feats):
        print(f'[{tag}]   features.{i} {tuple(f.shape)} std={f.std():.3f}')


@torch.no_grad()
def report_maxvit(tag, model, x, logits, feats, stem, sd, rc):
    print_output_scales(tag, logits, feats, stem)
    # relative position tables must matter
    tables = {n: p.clone() for n, p in model.named_parameters() if n.endswith('relative_position_bias_table')}
    for n, p in model.named_parameters():
        if n in tables:
            p.zero_()
    z = model(x)
    for n, p in model.named_parameters():
        if n in tables:
            p.copy_(tables[n])
    print(f'[{tag}] zeroing relative_position_bias_table changes logits by max {(z - logits).abs().max():.3f}')
    assert (z - logits).abs().max() > 0.02, 'relative position tables have no visible effect'
    # BatchNorm running stats must matter
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    for m in bns:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    z = model(x)
    for m, (rm, rv) in zip(bns, saved):
        m.running_mean.copy_(rm)
        m.running_var.copy_(rv)
    assert torch.equal(model(x), logits)
    print(f'[{tag}] resetting BatchNorm running stats to (0, 1) changes logits by max {(z - logits).abs().max():.3f}')
    assert (z - logits).abs().max() > 0.05, 'BatchNorm running stats have no visible effect'
    # independent reference
    rl, rf, rs = ref_maxvit_forward(sd, rc, x)
    err = (rl - logits.double()).abs().max().item()
    ferr = max((a - b.double()).abs().max().item() for a, b in zip(rf + [rs], feats + [stem]))
    print(f'[{tag}] float64 reference vs timm: logits max abs err {err:.2e}, features/stem {ferr:.2e}')
    assert err < 1e-4 and ferr < 1e-4, 'MaxViT reference implementation disagrees with timm'
    # plausible porting mistakes
    must = {'symmetric_pad': 1e-3, 'relpos_query_minus_key': 1e-3, 'qkv_head_first': 1e-3,
            'swap_partition_layout': 1e-3, 'pre_norm_act': 1e-3, 'bn_eps_1e-5': 1e-3, 'gelu_erf': 1e-3}
    if tag == 'odd':
        must['pool_exclude_pad'] = 1e-3
    _check_variants(tag, lambda v: ref_maxvit_forward(sd, rc, x, v), (rl, rf, rs), must,
                    [] if 'pool_exclude_pad' in must else ['pool_exclude_pad'])


@torch.no_grad()
def check_maxvit_table_resize(tag, model_json, sd, new_window, new_grid):
    """timm's MaxViT checkpoint_filter_fn resizes the [nH, 2h-1, 2w-1] tables with the same geometric-progression
    + bilinear scheme as Swin (per head). Check that against ref_resize_table (no fixture is written)."""
    mj = json.loads(json.dumps(model_json))
    mj['cfg']['transformer_cfg'].update(window_size=list(new_window), grid_size=list(new_grid))
    dst = maxvit_from_json(mj).eval()   # never run forward: the sizes need not divide the feature maps
    filtered = maxxvit_checkpoint_filter_fn(dict(sd), dst)
    dst.load_state_dict(filtered, strict=True)
    n = 0
    for k, v in filtered.items():
        if not k.endswith('relative_position_bias_table'):
            continue
        src = sd[k]
        nh, sh, sw = src.shape
        dst_win = new_grid if '.attn_grid.' in k else new_window
        ref = ref_resize_table(src.permute(1, 2, 0).reshape(-1, nh), ((sh + 1) // 2, (sw + 1) // 2), dst_win)
        ref = ref.view(2 * dst_win[0] - 1, 2 * dst_win[1] - 1, nh).permute(2, 0, 1)
        assert v.shape == ref.shape, (k, v.shape, ref.shape)
        err = (ref - v.double()).abs().max().item()
        assert err < 1e-5, f'MaxViT table resize reference disagrees with timm for {k}: {err}'
        n += 1
    print(f'[{tag}] checkpoint_filter_fn table resize to window {tuple(new_window)} / grid {tuple(new_grid)}: '
          f'{n} tables match the float64 reference')


def export_maxvit():
    torch.set_grad_enabled(False)
    for idx, (name, case) in enumerate(MAXVIT_CASES.items()):
        seed = 2000 + idx
        cfg = maxvit_cfg(**case['cfg'])
        _assert_tf_style(cfg)
        model_json = {
            'class': 'timm.models.maxxvit.MaxxVit',
            'cfg': dataclasses.asdict(cfg),
            'img_size': list(case['img_size']), 'in_chans': case['in_chans'], 'num_classes': case['num_classes'],
            'global_pool': 'avg', 'drop_rate': 0.0, 'drop_path_rate': 0.0,
        }
        model_json = json.loads(json.dumps(model_json))  # exactly what config.json will hold
        torch.manual_seed(seed)
        model = maxvit_from_json(model_json)
        randomize_(model, seed)
        randomize_bn_stats_(model, seed + 2)
        model.eval()
        H, W = case['img_size']
        torch.manual_seed(seed + 1)
        x = torch.randn(2, case['in_chans'], H, W)
        logits, feats, stem = run_with_features(model, x, stages=model.stages, nhwc=False, inter_offset=1,
                                                capture_stem=True)
        sd = f32_state_dict(model)
        resolved = cfg_window_size(cfg.transformer_cfg, (H, W))
        rc = {
            'depths': list(cfg.depths), 'embed_dim': list(cfg.embed_dim), 'stem_width': cfg.stem_width,
            'dim_head': resolved.dim_head, 'window_size': list(resolved.window_size),
            'grid_size': list(resolved.grid_size), 'conv_norm_eps': cfg.conv_cfg.norm_eps,
            'transformer_norm_eps': cfg.transformer_cfg.norm_eps, 'head_hidden_size': cfg.head_hidden_size,
        }
        for blk in (b for s in model.stages for b in s.blocks):
            assert tuple(blk.attn_block.partition_size) == tuple(rc['window_size'])
            assert tuple(blk.attn_grid.partition_size) == tuple(rc['grid_size'])
        report_maxvit(name, model, x, logits, feats, stem, sd, rc)
        # rebuilding from the recorded config reproduces the model exactly
        rebuilt = maxvit_from_json(json.loads(json.dumps(model_json))).eval()
        rebuilt.load_state_dict(sd, strict=True)
        assert torch.equal(rebuilt(x), logits), 'model rebuilt from config.json differs'
        w, g = rc['window_size'], rc['grid_size']
        check_maxvit_table_resize(name, model_json, sd, (w[0] + 2, w[1] + 2), (g[0] + 1, g[1] + 3))
        extra = {
            'model': model_json,
            'rebuild': ('m = config["model"]; c = m["cfg"] (JSON lists -> tuples); '
                        'cfg = MaxxVitCfg(**{c minus conv_cfg/transformer_cfg}, '
                        'conv_cfg=MaxxVitConvCfg(**c["conv_cfg"]), '
                        'transformer_cfg=MaxxVitTransformerCfg(**c["transformer_cfg"])); '
                        'timm.models.maxxvit.MaxxVit(cfg=cfg, img_size=tuple(m["img_size"]), '
                        '**{the other entries of m except "class" and "cfg"}) '
                        '-- maxvit_from_json in scripts/export_timm_fixtures.py'),
            'reference': rc,
            'resolved_transformer_cfg': json.loads(json.dumps(dataclasses.asdict(resolved))),
            'stem_output_hw': list(stem.shape[2:]),
            'stage_output_hw': [list(f.shape[2:]) for f in feats],
            'input_seed': seed + 1, 'param_seed': seed, 'bn_stats_seed': seed + 2,
            'note': ('eval mode. BatchNorm running_mean ~ 0.3*N(0,1), running_var ~ exp(0.5*N(0,1)); '
                     '*.num_batches_tracked are int64 0-d tensors (value 0) and play no role in eval. '
                     'io "stem" = model.stem output, "features.{i}" = model.stages[i] output, both NCHW.'),
            'blocks': maxvit_block_info(model, x),
        }
        write_case(name, None, sd, x, logits, feats, extra, base_dir=MAXVIT_DIR, extra_io={'stem': stem})
        del model, rebuilt
    return print_dir_total(MAXVIT_DIR, 'maxvit')


MAXVIT_RESIZE_IMG = (80, 80)  # the tiny case at 80 px: partition 80 // 16 = 5 where the checkpoint has 4


@torch.no_grad()
def export_maxvit_resize():
    """maxvit/resize: timm's checkpoint_filter_fn resizing [nH, 2h-1, 2w-1] tables (7x7 -> 11x11) when the tiny
    checkpoint is loaded into the same model built for a larger input, with the resulting model's outputs
    (one image, to keep the fixture small)."""
    src_dir = MAXVIT_DIR / 'tiny'
    src_json = json.loads((src_dir / 'config.json').read_text())
    src_sd = load_file(str(src_dir / 'weights.safetensors'))
    mj = json.loads(json.dumps(src_json['model']))
    mj['img_size'] = list(MAXVIT_RESIZE_IMG)
    dst = maxvit_from_json(mj).eval()
    filtered = maxxvit_checkpoint_filter_fn(dict(src_sd), dst)
    dst.load_state_dict(filtered, strict=True)
    resized = {k: v.float().contiguous() for k, v in filtered.items()
               if k.endswith('relative_position_bias_table') and v.shape != src_sd[k].shape}
    window = tuple(dst.stages[0].blocks[0].attn_block.partition_size)
    src_window = tuple(src_json['reference']['window_size'])
    assert len(resized) == 6 and window == (5, 5), (len(resized), window)
    for k, v in resized.items():  # the float64 reference agrees with timm here too
        nh, sh, sw = src_sd[k].shape
        ref = ref_resize_table(src_sd[k].permute(1, 2, 0).reshape(-1, nh), src_window, window)
        ref = ref.view(2 * window[0] - 1, 2 * window[1] - 1, nh).permute(2, 0, 1)
        assert (ref - v.double()).abs().max().item() < 1e-5, k
    seed = 2100
    torch.manual_seed(seed)
    x = torch.randn(1, mj['in_chans'], *MAXVIT_RESIZE_IMG)
    logits, feats, stem = run_with_features(dst, x, stages=dst.stages, nhwc=False, inter_offset=1, capture_stem=True)
    d = MAXVIT_DIR / 'resize'
    d.mkdir(parents=True, exist_ok=True)
    io = {'input': x.contiguous(), 'logits': logits.contiguous(), 'stem': stem}
    io.update({f'features.{i}': f for i, f in enumerate(feats)})
    save_file(io, str(d / 'io.safetensors'))
    save_file(resized, str(d / 'resized_tables.safetensors'))
    meta = {
        'timm_version': timm.__version__, 'torch_version': torch.__version__.split('+')[0],
        'model': mj, 'source_weights': 'maxvit/tiny/weights.safetensors',
        'source_window_size': list(src_window), 'window_size': list(window),
        'grid_size': list(dst.stages[0].blocks[0].attn_grid.partition_size), 'input_seed': seed,
        'note': ('io.safetensors holds the outputs of the TARGET model (this config.json, img_size 80) after '
                 'target.load_state_dict(checkpoint_filter_fn(tiny_sd, target), strict=True); '
                 'resized_tables.safetensors holds the tables checkpoint_filter_fn produced.'),
    }
    # non-square tables, resized along each axis on its own: the rect checkpoint (window (3, 2), grid (2, 4)) into
    # window (5, 4) / grid (3, 7); img 120x224 makes every stage map divisible (tables only, no forward)
    rect_json = json.loads((MAXVIT_DIR / 'rect' / 'config.json').read_text())
    rect_sd = load_file(str(MAXVIT_DIR / 'rect' / 'weights.safetensors'))
    rj = json.loads(json.dumps(rect_json['model']))
    rj['img_size'] = [120, 224]
    rj['cfg']['transformer_cfg'].update(window_size=[5, 4], grid_size=[3, 7])
    rect_dst = maxvit_from_json(rj).eval()
    rect_filtered = maxxvit_checkpoint_filter_fn(dict(rect_sd), rect_dst)
    rect_dst.load_state_dict(rect_filtered, strict=True)
    rect_resized = {k: v.float().contiguous() for k, v in rect_filtered.items()
                    if k.endswith('relative_position_bias_table')}
    assert {tuple(v.shape[1:]) for v in rect_resized.values()} == {(9, 7), (5, 13)}
    save_file(rect_resized, str(d / 'resized_tables_rect.safetensors'))
    meta['rect_target_model'] = rj
    meta['note'] += (' resized_tables_rect.safetensors: the tables of maxvit/rect/weights.safetensors after '
                     'checkpoint_filter_fn into rect_target_model (window (5, 4), grid (3, 7); never run).')
    (d / 'config.json').write_text(json.dumps(meta, indent=2) + '\n')
    print(f'[maxvit/resize] {len(resized)} tables {tuple(next(iter(src_sd[k] for k in resized)).shape)} -> '
          f'{tuple(next(iter(resized.values())).shape)}; logits {tuple(logits.shape)}')
    return print_dir_total(MAXVIT_DIR, 'maxvit')


# ----------------------------------------------------------------------------------------------
# DaViT (timm/models/davit.py; see scripts/NOTES_timm_davit.txt)
# ----------------------------------------------------------------------------------------------

# All DaVit constructor arguments spelled out (values = timm defaults = what davit_tiny uses, except sizes).
DAVIT_COMMON = dict(mlp_ratio=4.0, qkv_bias=True, norm_layer='layernorm2d', norm_layer_cl='layernorm',
                    norm_eps=1e-5, attn_types=('spatial', 'channel'), ffn=True, cpe_act=False,
                    down_kernel_size=2, channel_attn_v2=False, named_blocks=False, drop_rate=0.0,
                    drop_path_rate=0.0, global_pool='avg', head_norm_first=False)
DAVIT_CASES = {
    # input 64x64 -> stem 16x16 -> 8x8 -> 4x4 -> 2x2; window 2 divides every stage (a window of 4 would
    # need a 128x128 input to do that, too large for a fixture; the window size has no other role in DaViT:
    # no relative position bias, no shift). Stage 2 has two dual blocks (key naming blocks.{j}.{0,1}).
    'tiny': dict(model=dict(in_chans=3, num_classes=10, depths=(1, 1, 2, 1), embed_dims=(12, 16, 24, 32),
                            num_heads=(2, 2, 3, 4), window_size=2, **DAVIT_COMMON),
                 input_size=(64, 64)),
    # input 54x40 (not a multiple of 4: the stem pads to 56x40) -> 14x10 (window 4: padded to 16x12)
    # -> 7x5 (padded to 8x8) -> Downsample pads 7x5 to 8x6 -> 4x3 (padded to 4x4) -> 2x2 (window 4 is
    # NOT clamped to the map: padded to 4x4, 12 of 16 tokens are padding).
    'pad': dict(model=dict(in_chans=3, num_classes=10, depths=(1, 1, 1, 1), embed_dims=(12, 16, 24, 32),
                           num_heads=(2, 2, 3, 4), window_size=4, **DAVIT_COMMON),
                input_size=(54, 40)),
}


def ref_davit_forward(sd, mc, x, variant=frozenset()):
    """DaViT eval forward from scratch in float64. mc = DaVit constructor kwargs (config.json "model")."""
    sd = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    x = x.double()
    act = _gelu_tanh if 'gelu_tanh' in variant else _gelu_erf
    eps = mc['norm_eps']
    ws = mc['window_size']

    def cpe(h, p):  # ConvPosEnc: x + depthwise conv3x3 (pad 1, bias), no activation (cpe_act=False)
        return h + F.conv2d(h, sd[p + '.proj.weight'], sd[p + '.proj.bias'], 1, 1, 1, h.shape[1])

    def mlp(t, p):
        return t + _lin(act(_lin(_ln(t, sd, p + '.norm2', eps), sd, p + '.mlp.fc1')), sd, p + '.mlp.fc2')

    h = x if 'no_stem_prepad' in variant else _pad_bottom_right(x, 4, 4)
    h = F.conv2d(h, sd['stem.conv.weight'], sd['stem.conv.bias'], 4, 3)
    h = _ln2d(h, sd, 'stem.norm', eps)
    stem = h
    feats = []
    for i, depth in enumerate(mc['depths']):
        if i > 0:
            p = f'stages.{i}.downsample'
            if 'downsample_pad_before_norm' in variant:
                h = _ln2d(_pad_bottom_right(h, 2, 2), sd, p + '.norm', eps)
            else:
                h = _pad_bottom_right(_ln2d(h, sd, p + '.norm', eps), 2, 2)
            h = F.conv2d(h, sd[p + '.conv.weight'], sd[p + '.conv.bias'], 2, 0)
        nh = mc['num_heads'][i]
        for j in range(depth):
            # ---- SpatialBlock: cpe1, window MHSA (no rel-pos bias, no shift, pads unmasked), cpe2, MLP
            p = f'stages.{i}.blocks.{j}.0'
            h = cpe(h, p + '.cpe1')
            t = h.permute(0, 2, 3, 1)
            B, H, W, C = t.shape
            u = _ln(t, sd, p + '.norm1', eps)
            u = _pad_bottom_right(u.permute(0, 3, 1, 2), ws, ws).permute(0, 2, 3, 1)  # zeros AFTER norm1
            Hp, Wp = u.shape[1:3]
            ids = _partition_index(Hp, Wp, ws, ws, False)
            key_mask = None
            if 'mask_pad_tokens' in variant:
                valid = torch.zeros(Hp, Wp, dtype=torch.bool)
                valid[:H, :W] = True
                key_mask = valid.reshape(-1)[ids][:, None, :]  # [nW, 1(head), N] -> broadcast
            u = u.reshape(B, Hp * Wp, C)
            o = _mhsa(u[:, ids], sd, p + '.attn', nh, key_mask=key_mask)
            out = torch.empty_like(u)
            out[:, ids] = o
            t = t + out.reshape(B, Hp, Wp, C)[:, :H, :W]
            h = cpe(t.permute(0, 3, 1, 2), p + '.cpe2')
            h = mlp(h.permute(0, 2, 3, 1), p).permute(0, 3, 1, 2)
            # ---- ChannelBlock: cpe1, channel attention (per head, over channels), cpe2, MLP
            p = f'stages.{i}.blocks.{j}.1'
            h = cpe(h, p + '.cpe1')
            t = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
            u = _ln(t, sd, p + '.norm1', eps)
            hd = C // nh
            qkv = _lin(u, sd, p + '.attn.qkv').reshape(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]                  # [B, nH, N, hd]
            if 'channel_attn_conventional' in variant:      # softmax(q^T k) applied to v: NOT timm
                a = ((q * hd ** -0.5).transpose(-1, -2) @ k).softmax(-1)
                o = v @ a.transpose(-1, -2)
            else:                                           # timm: softmax((k*s)^T v) applied to q
                a = ((k * hd ** -0.5).transpose(-1, -2) @ v).softmax(-1)  # [B, nH, hd, hd]
                o = q @ a.transpose(-1, -2)                 # o[n, c] = sum_c' a[c, c'] q[n, c']
            o = _lin(o.permute(0, 2, 1, 3).reshape(B, H * W, C), sd, p + '.attn.proj')
            t = t + o
            h = cpe(t.reshape(B, H, W, C).permute(0, 3, 1, 2), p + '.cpe2')
            h = mlp(h.permute(0, 2, 3, 1), p).permute(0, 3, 1, 2)
        feats.append(h)
    v = h.mean((2, 3))
    v = _ln(v, sd, 'head.norm', eps)
    return _lin(v, sd, 'head.fc'), feats, stem


def davit_block_info(model: DaVit, x) -> list:
    blocks = [b for s in model.stages for dual in s.blocks for b in dual]
    shapes = _record_block_shapes(model, blocks, x)
    info = []
    k = 0
    for i, stage in enumerate(model.stages):
        for j, dual in enumerate(stage.blocks):
            for m, blk in enumerate(dual):
                (in_shape, _out) = shapes[k]
                k += 1
                H, W = in_shape[2:]
                d = dict(stage=i, block=j, sub=m, prefix=f'stages.{i}.blocks.{j}.{m}',
                         type=type(blk).__name__, dim=in_shape[1], hw=[H, W],
                         mlp_hidden=blk.mlp.fc1.out_features)
                if type(blk).__name__ == 'SpatialBlock':
                    wh, ww = blk.window_size
                    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
                    d.update(num_heads=blk.attn.num_heads, head_dim=blk.dim // blk.attn.num_heads,
                             window_size=[wh, ww], padded_hw=[Hp, Wp], num_windows=(Hp // wh) * (Wp // ww))
                else:
                    d.update(num_heads=blk.attn.num_heads, head_dim=in_shape[1] // blk.attn.num_heads)
                info.append(d)
    return info


@torch.no_grad()
def report_davit(tag, model, x, logits, feats, stem, sd, mc):
    print_output_scales(tag, logits, feats, stem)
    rl, rf, rs = ref_davit_forward(sd, mc, x)
    err = (rl - logits.double()).abs().max().item()
    ferr = max((a - b.double()).abs().max().item() for a, b in zip(rf + [rs], feats + [stem]))
    print(f'[{tag}] float64 reference vs timm: logits max abs err {err:.2e}, features/stem {ferr:.2e}')
    assert err < 1e-4 and ferr < 1e-4, 'DaViT reference implementation disagrees with timm'
    must = {'channel_attn_conventional': 1e-3, 'gelu_tanh': 1e-3}
    may = ['no_stem_prepad']
    if tag == 'pad':
        must.update({'mask_pad_tokens': 1e-3, 'downsample_pad_before_norm': 1e-3})
    else:
        may += ['mask_pad_tokens', 'downsample_pad_before_norm']
    _check_variants(tag, lambda v: ref_davit_forward(sd, mc, x, v), (rl, rf, rs), must, may)


def export_davit():
    torch.set_grad_enabled(False)
    for idx, (name, case) in enumerate(DAVIT_CASES.items()):
        seed = 3000 + idx
        mc = json.loads(json.dumps(case['model']))  # exactly what config.json will hold (tuples -> lists)
        torch.manual_seed(seed)
        model = DaVit(**mc)
        randomize_(model, seed)
        model.eval()
        H, W = case['input_size']
        torch.manual_seed(seed + 1)
        x = torch.randn(2, mc['in_chans'], H, W)
        logits, feats, stem = run_with_features(model, x, stages=model.stages, nhwc=False, inter_offset=0,
                                                capture_stem=True)
        sd = f32_state_dict(model)
        report_davit(name, model, x, logits, feats, stem, sd, mc)
        rebuilt = DaVit(**json.loads(json.dumps(mc))).eval()
        rebuilt.load_state_dict(sd, strict=True)
        assert torch.equal(rebuilt(x), logits), 'model rebuilt from config.json differs'
        extra = {
            'model': mc,
            'rebuild': 'timm.models.davit.DaVit(**config["model"]) (DaVit has no img_size argument)',
            'input_size': [H, W],
            'stem_output_hw': list(stem.shape[2:]),
            'stage_output_hw': [list(f.shape[2:]) for f in feats],
            'input_seed': seed + 1, 'param_seed': seed,
            'note': ('io "stem" = model.stem output, "features.{i}" = model.stages[i] output, both NCHW. '
                     'state_dict has no buffers.'),
            'blocks': davit_block_info(model, x),
        }
        write_case(name, None, sd, x, logits, feats, extra, base_dir=DAVIT_DIR, extra_io={'stem': stem})
        del model, rebuilt
    return print_dir_total(DAVIT_DIR, 'davit')


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def export_registry():
    entries = []
    for name in REGISTRY_MODELS:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
        cfg = model.pretrained_cfg
        e = {
            'name': name,
            'params': int(sum(p.numel() for p in model.parameters())),
            'input_size': list(cfg['input_size']),
            'crop_pct': cfg['crop_pct'],
            'interpolation': cfg['interpolation'],
            'mean': list(cfg['mean']),
            'std': list(cfg['std']),
            'num_classes': cfg['num_classes'],
            'crop_mode': cfg.get('crop_mode', 'center'),  # 'squash' for maxvit *_384/_512
            'pretrained_tag': cfg.get('tag'),
        }
        if isinstance(model, SwinTransformer):
            ws = model._ref_window_sizes
            assert all(w == ws[0] for w in ws) and ws[0][0] == ws[0][1], ws
            e['swin'] = {
                'embed_dim': model.embed_dim,
                'depths': [len(s.blocks) for s in model.layers],
                'num_heads': [s.blocks[0].attn.num_heads for s in model.layers],
                'window_size': ws[0][0],
                'img_size': list(model.patch_embed.img_size),
                'patch_size': list(model.patch_embed.patch_size)[0],
            }
            assert model.patch_embed.patch_size[0] == model.patch_embed.patch_size[1]
        print(f"  {name}: {e['params']} params, {e['input_size']}, crop_pct={e['crop_pct']}, "
              f"{e['interpolation']}, pretrained_tag={cfg.get('tag')}")
        entries.append(e)
        del model, cfg
        gc.collect()
    REGISTRY_PATH.parent.mkdir(parents=True, exist_ok=True)
    doc = {'timm_version': timm.__version__, 'models': entries}
    REGISTRY_PATH.write_text(json.dumps(doc, indent=2) + '\n')
    print(f'wrote {REGISTRY_PATH.relative_to(REPO)} ({REGISTRY_PATH.stat().st_size} B)')


# ----------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------

def export_labels():
    from timm.data import ImageNetInfo
    info = ImageNetInfo('imagenet-1k')
    n = info.num_classes()
    assert n == 1000, n
    labels = [info.index_to_description(i) for i in range(n)]
    wnids = [info.index_to_label_name(i) for i in range(n)]
    assert labels[285] == 'Egyptian cat', labels[285]
    assert all('\n' not in s and s.strip() == s and s for s in labels)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / 'imagenet1k_labels.txt').write_text('\n'.join(labels) + '\n')
    (DATA_DIR / 'imagenet1k_wnids.txt').write_text('\n'.join(wnids) + '\n')
    print(f'wrote {DATA_DIR.relative_to(REPO)}/imagenet1k_labels.txt and imagenet1k_wnids.txt '
          f'(285: {wnids[285]} {labels[285]!r})')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', choices=['swin', 'maxvit', 'maxvit_resize', 'davit', 'registry', 'labels'],
                    action='append', help='run only these steps (repeatable); default: all')
    args = ap.parse_args()
    steps = args.only or ['swin', 'maxvit', 'maxvit_resize', 'davit', 'registry', 'labels']
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f'torch {torch.__version__}, timm {timm.__version__}')
    if 'swin' in steps:
        export_swin()
    totals = {}
    if 'maxvit' in steps:
        totals['maxvit'] = export_maxvit()
    if 'maxvit_resize' in steps:
        totals['maxvit'] = export_maxvit_resize()
    if 'davit' in steps:
        totals['davit'] = export_davit()
    if totals:
        t = sum(totals.values())
        if len(totals) > 1:
            print(f'{" + ".join(totals)} fixtures total: {t} B ({t / 2**20:.3f} MiB)')
        assert t < 2.5 * 2**20, 'MaxViT/DaViT fixtures grew too large'
    if 'labels' in steps:
        export_labels()
    if 'registry' in steps:
        export_registry()


if __name__ == '__main__':
    sys.exit(main())
