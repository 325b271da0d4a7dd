#!/usr/bin/env python3
"""Export the kiln-data parity fixtures: small images and what Pillow / torchvision / timm make of them.

Run by hand (needs Pillow, numpy, torch, torchvision, timm; deterministic, CPU only):

    python3 scripts/export_resize_fixtures.py

Outputs, all under crates/kiln-data/tests/fixtures/:

    images/*.png, images/*.jpg   the source images (written by this script, no randomness)
    manifest.json                every case below, with the offsets of its bytes in the .bin files
    decoded.bin                  per image: Image.open(p).convert('RGB') and .convert('L') as raw uint8 (HWC)
    resize.bin                   per case: img.resize((w, h), filter) of the converted image as raw uint8 (HWC)
    eval.bin                     per case: timm transforms_imagenet_eval(...)(img) as little-endian f32 (CHW)

The 16-bit PNGs are written with a tiny PNG encoder below, since Pillow cannot save 16-bit RGB.
"""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import timm
import torch
import torchvision
from PIL import Image
from timm.data.transforms_factory import transforms_imagenet_eval

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / 'crates/kiln-data/tests/fixtures'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FILTERS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'box': Image.Resampling.BOX,
    'hamming': Image.Resampling.HAMMING,
    'lanczos': Image.Resampling.LANCZOS,
}


def lcg_bytes(n, seed):
    """Deterministic pseudo-random bytes (Numerical Recipes LCG), independent of numpy's RNG."""
    out = np.empty(n, dtype=np.uint32)
    state = seed
    for i in range(n):
        state = (1664525 * state + 1013904223) & 0xFFFFFFFF
        out[i] = state >> 16
    return out


def pattern(h, w, channels, seed, depth=8):
    """Gradients, a hard-edged block of 0/max (bicubic and lanczos overshoot there) and noise."""
    top = (1 << depth) - 1
    y, x = np.mgrid[0:h, 0:w]
    noise = lcg_bytes(h * w * channels, seed).reshape(h, w, channels) % (top + 1)
    img = np.empty((h, w, channels), dtype=np.int64)
    for c in range(channels):
        grad = (x * (c + 1) * top // max(w - 1, 1) + y * top // max(h - 1, 1)) % (top + 1)
        img[..., c] = (grad + noise[..., c]) // 2
    img[h // 4: h // 2, w // 3: w // 2] = top
    img[h // 2: 3 * h // 4, w // 3: w // 2] = 0
    return img.astype(np.uint16 if depth == 16 else np.uint8)


def write_png16(path, array):
    """A 16-bit PNG (gray when 2-D, RGB when HxWx3), filter type 0 on every row."""
    h, w = array.shape[:2]
    color_type = 0 if array.ndim == 2 else 2
    raw = b''.join(b'\x00' + array[row].astype('>u2').tobytes() for row in range(h))

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    ihdr = struct.pack('>IIBBBBB', w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw, 9))
                     + chunk(b'IEND', b''))


def make_images(image_dir):
    """Writes the source images; returns their file names."""
    image_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(23, 37, 3, 1)).save(image_dir / 'rgb_37x23.png')
    Image.fromarray(pattern(37, 23, 1, 2)[..., 0]).save(image_dir / 'gray_23x37.png')
    Image.fromarray(pattern(17, 21, 4, 3)).save(image_dir / 'rgba_21x17.png')
    Image.fromarray(pattern(13, 15, 2, 4), mode='LA').save(image_dir / 'gray_alpha_15x13.png')
    Image.fromarray(pattern(20, 26, 3, 5)).convert('P', palette=Image.Palette.ADAPTIVE, colors=16) \
        .save(image_dir / 'palette_26x20.png')
    write_png16(image_dir / 'rgb16_19x13.png', pattern(13, 19, 3, 6, depth=16))
    # Smooth content: JPEG decoders differ most on noise, and photographs are not noise.
    y, x = np.mgrid[0:24, 0:32]
    smooth = np.stack([x * 8, y * 10, (x + y) * 4], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(smooth).save(image_dir / 'smooth_32x24.jpg', quality=90)
    return ['rgb_37x23.png', 'gray_23x37.png', 'rgba_21x17.png', 'gray_alpha_15x13.png',
            'palette_26x20.png', 'rgb16_19x13.png', 'smooth_32x24.jpg']


class Blob:
    """Appends byte strings to one file and remembers where each starts."""

    def __init__(self):
        self.parts = []
        self.size = 0

    def add(self, data):
        offset = self.size
        self.parts.append(data)
        self.size += len(data)
        return {'offset': offset, 'len': len(data)}

    def write(self, path):
        path.write_bytes(b''.join(self.parts))


# (width, height) targets for a w x h source: downscales, upscales, one side only, mixed.
def resize_targets(w, h):
    return [(w // 2, h // 2 + 1), (5, 5), (w + 11, h + 6), (w, h // 3), (w + 5, h), (9, h + 7), (1, 1)]


# Which images are resized in which mode. PNG only: their pixels decode bit for bit in Kiln too.
RESIZE_MODES = {'rgb_37x23.png': ['RGB'], 'gray_23x37.png': ['L']}

EVAL_CASES = [
    # (name, img_size, crop_pct, interpolation, mean, std, mode, crop_mode)
    ('imagenet_bicubic_16', 16, 0.875, 'bicubic', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'center'),
    ('bilinear_10_crop1', 10, 1.0, 'bilinear', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'center'),
    ('nearest_11', 11, 0.9, 'nearest', (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 'RGB', 'center'),
    ('keep_ratio_12x20', (12, 20), 0.9, 'bicubic', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'center'),
    ('keep_ratio_18x7_lanczos', (18, 7), 0.95, 'lanczos', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'center'),
    ('padded_16_crop2', 16, 2.0, 'bicubic', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'center'),
    ('luma_bicubic_14', 14, 0.875, 'bicubic', (0.5,), (0.25,), 'L', 'center'),
    # the maxvit_*_tf_384/512 pretrained cfg (crop_pct 1, inception mean/std), and a squash that crops
    ('squash_inception_16', 16, 1.0, 'bicubic', (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 'RGB', 'squash'),
    ('squash_12x20_crop09', (12, 20), 0.9, 'bilinear', IMAGENET_MEAN, IMAGENET_STD, 'RGB', 'squash'),
]


def main():
    image_dir = OUT / 'images'
    names = make_images(image_dir)
    decoded, resized, evals = Blob(), Blob(), Blob()
    manifest = {
        'generator': {'pillow': PIL.__version__, 'torch': torch.__version__,
                      'torchvision': torchvision.__version__, 'timm': timm.__version__},
        'images': [], 'resize': [], 'eval': [],
    }
    for name in names:
        src = Image.open(image_dir / name)
        rgb, luma = src.convert('RGB'), src.convert('L')
        manifest['images'].append({
            'file': f'images/{name}', 'pil_mode': src.mode, 'width': rgb.width, 'height': rgb.height,
            'rgb': decoded.add(np.asarray(rgb).tobytes()), 'luma': decoded.add(np.asarray(luma).tobytes()),
        })
        for mode in RESIZE_MODES.get(name, []):
            img = rgb if mode == 'RGB' else luma
            for filter_name, filt in FILTERS.items():
                for w, h in resize_targets(img.width, img.height):
                    out = np.asarray(img.resize((w, h), filt))
                    assert out.shape[:2] == (h, w)
                    manifest['resize'].append({
                        'image': f'images/{name}', 'mode': mode, 'filter': filter_name,
                        'width': w, 'height': h, **resized.add(out.tobytes()),
                    })
        for case, img_size, crop_pct, interp, mean, std, mode, crop_mode in EVAL_CASES:
            if name != 'rgb_37x23.png' and case not in ('imagenet_bicubic_16', 'luma_bicubic_14'):
                continue  # every case on one image, the common ones on all
            transform = transforms_imagenet_eval(img_size=img_size, crop_pct=crop_pct, interpolation=interp,
                                                 mean=mean, std=std, crop_mode=crop_mode)
            x = transform(src.convert(mode))
            assert x.dtype == torch.float32
            channels, height, width = x.shape
            manifest['eval'].append({
                'image': f'images/{name}', 'case': case,
                'img_size': list(img_size) if isinstance(img_size, tuple) else [img_size, img_size],
                'crop_pct': crop_pct, 'crop_mode': crop_mode, 'interpolation': interp, 'mean': list(mean),
                'std': list(std), 'channels': channels, 'height': height, 'width': width,
                **evals.add(x.contiguous().numpy().astype('<f4').tobytes()),
            })
    decoded.write(OUT / 'decoded.bin')
    resized.write(OUT / 'resize.bin')
    evals.write(OUT / 'eval.bin')
    # One case per line: readable diffs, a small file.
    lines = [f'  {json.dumps(key)}: [\n' + ',\n'.join(f'    {json.dumps(c)}' for c in manifest[key]) + '\n  ]'
             for key in ('images', 'resize', 'eval')]
    (OUT / 'manifest.json').write_text('{\n  "generator": ' + json.dumps(manifest['generator']) + ',\n'
                                       + ',\n'.join(lines) + '\n}\n')
    total = sum(p.stat().st_size for p in OUT.rglob('*') if p.is_file())
    print(f'wrote {len(manifest["resize"])} resize and {len(manifest["eval"])} eval cases, '
          f'{total / 1024:.1f} KiB under {OUT.relative_to(REPO)}')


if __name__ == '__main__':
    main()
