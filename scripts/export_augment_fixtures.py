#!/usr/bin/env python3
"""Export the kiln-data augmentation parity fixtures: what Pillow, torchvision and timm's
RandAugment ops make of small RGB images, for arguments fixed here (no randomness).

Run by hand (needs Pillow, numpy, torch, torchvision, timm; deterministic, CPU only):

    python3 scripts/export_augment_fixtures.py

Outputs, under crates/kiln-data/tests/fixtures/:

    augment.json   the source images and every case (op, arguments, output size, byte span)
    augment.bin    the raw RGB bytes (HWC, uint8) of the sources and of each case's output

The sources are derived from images/rgb_37x23.png (written by export_resize_fixtures.py), so the
Rust side reads raw bytes and does not depend on PNG decoding. Cases:

    timm auto_augment op functions (rotate, shear_x/y, translate_x/y_rel with nearest, bilinear
    and bicubic and timm's ImageNet fill; auto_contrast, equalize, invert, posterize, solarize,
    solarize_add, color, contrast, brightness, sharpness)
    timm AugmentOp(name, prob=1, magnitude=m) for the ops that draw no random number, so the
    magnitude-to-argument mapping is timm's own
    torchvision adjust_hue; torchvision resized_crop; torchvision RandomResizedCrop.get_params
    in its deterministic fallback (scale above 1, so every attempt fails)
"""
import json
from pathlib import Path

import numpy as np
import PIL
import timm
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from timm.data import auto_augment as aa
from torchvision.transforms import RandomResizedCrop

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / 'crates/kiln-data/tests/fixtures'
FILL = (124, 116, 104)  # timm's img_mean for the ImageNet mean
FILTERS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
}
RESIZE_FILTERS = {
    'bilinear': TF.InterpolationMode.BILINEAR,
    'bicubic': TF.InterpolationMode.BICUBIC,
    'lanczos': TF.InterpolationMode.LANCZOS,
}


class Blob:
    def __init__(self):
        self.data = bytearray()

    def add(self, img):
        raw = np.asarray(img.convert('RGB'), dtype=np.uint8).tobytes()
        span = {'offset': len(self.data), 'len': len(raw), 'width': img.width, 'height': img.height}
        self.data += raw
        return span


def main():
    base = Image.open(OUT / 'images/rgb_37x23.png').convert('RGB')
    sources = {
        'rgb': base,                                         # 37x23
        'square': base.crop((3, 0, 26, 23)),                 # 23x23: rotate's 90-degree fast path
        'low_contrast': base.point(lambda v: 70 + v // 4),   # 70..133: autocontrast and equalize work
        'small': base.crop((10, 4, 27, 17)),                 # 17x13
        'tiny': base.crop((5, 5, 7, 10)),                    # 2x5: filters copy images under 3x3
    }
    blob = Blob()
    manifest = {
        'generator': {'pillow': PIL.__version__, 'torch': torch.__version__,
                      'torchvision': torchvision.__version__, 'timm': timm.__version__},
        'sources': {name: blob.add(img) for name, img in sources.items()},
        'cases': [],
        'crop_fallback': [],
    }

    def case(op, source, out, **args):
        manifest['cases'].append({'op': op, 'source': source, 'args': args, **blob.add(out)})

    # Geometric ops, through timm's own functions (fillcolor + resample as AugmentOp passes them).
    for name, resample in FILTERS.items():
        kw = dict(fillcolor=FILL, resample=resample)
        for source in ('rgb', 'tiny'):
            img = sources[source]
            for degrees in (27.0, -13.5, 90.0, 180.0, 3.3, 0.0):
                case('rotate', source, aa.rotate(img, degrees, **kw), degrees=degrees, filter=name)
            for factor in (0.27, -0.3, 0.05):
                case('shear_x', source, aa.shear_x(img, factor, **kw), factor=factor, filter=name)
                case('shear_y', source, aa.shear_y(img, factor, **kw), factor=factor, filter=name)
            for pct in (0.405, -0.2, 0.013):
                case('translate_x_rel', source, aa.translate_x_rel(img, pct, **kw), pct=pct, filter=name)
                case('translate_y_rel', source, aa.translate_y_rel(img, pct, **kw), pct=pct, filter=name)
        for degrees in (90.0, -270.0, 27.0):
            case('rotate', 'square', aa.rotate(sources['square'], degrees, **kw), degrees=degrees, filter=name)

    # Colour and lookup-table ops.
    for source in ('rgb', 'tiny'):
        img = sources[source]
        case('invert', source, aa.invert(img))
        for bits in (1, 3, 4, 8):
            case('posterize', source, aa.posterize(img, bits), bits=bits)
        for threshold in (0, 77, 128, 256):
            case('solarize', source, aa.solarize(img, threshold), threshold=threshold)
        for add in (40, 110):
            case('solarize_add', source, aa.solarize_add(img, add), add=add, threshold=128)
        for factor in (0.0, 0.55, 1.3, 1.9, 2.5):
            case('color', source, aa.color(img, factor), factor=factor)
            case('brightness', source, aa.brightness(img, factor), factor=factor)
            case('sharpness', source, aa.sharpness(img, factor), factor=factor)
    for source in ('rgb', 'low_contrast', 'tiny'):
        img = sources[source]
        case('auto_contrast', source, aa.auto_contrast(img))
        case('equalize', source, aa.equalize(img))
        for factor in (0.0, 0.55, 1.3, 1.9, 2.5):
            case('contrast', source, aa.contrast(img, factor), factor=factor)
        for hue in (-0.5, -0.21, 0.1, 0.37, 0.5):
            case('adjust_hue', source, TF.adjust_hue(img, hue), hue=hue)

    # timm's AugmentOp end to end, for the ops without random draws (no sign, no filter choice).
    hparams = dict(translate_const=100, img_mean=FILL)
    deterministic = ['AutoContrast', 'Equalize', 'Invert', 'Posterize', 'PosterizeIncreasing', 'Solarize',
                     'SolarizeIncreasing', 'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness']
    for name in deterministic:
        for magnitude in (0.0, 3.0, 5.5, 9.0, 10.0):
            op = aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
            try:
                out = op(sources['small'])
            except ValueError:
                continue  # Pillow 13 rejects posterize(0 bits); Kiln documents its choice
            case('augment_op', 'small', out, name=name, magnitude=magnitude)

    # torchvision resized_crop (RandomResizedCrop's crop then resize).
    for (top, left, height, width) in ((0, 0, 23, 37), (3, 5, 11, 17), (10, 20, 13, 17), (0, 30, 2, 7)):
        for name, mode in RESIZE_FILTERS.items():
            out = TF.resized_crop(sources['rgb'], top, left, height, width, [9, 7], mode)
            case('resized_crop', 'rgb', out, top=top, left=left, crop_height=height, crop_width=width,
                 size=[9, 7], filter=name)

    # RandomResizedCrop.get_params fallback: scale > 1 never fits, so the result is deterministic.
    for (w, h) in ((100, 10), (10, 100), (40, 35), (37, 23), (5, 97), (97, 5), (64, 48)):
        for ratio in ((3 / 4, 4 / 3), (0.5, 0.5), (1.0, 2.0)):
            top, left, height, width = RandomResizedCrop.get_params(Image.new('RGB', (w, h)), (2.0, 3.0), ratio)
            manifest['crop_fallback'].append({'width': w, 'height': h, 'ratio': list(ratio),
                                              'top': top, 'left': left, 'crop_height': height, 'crop_width': width})

    (OUT / 'augment.bin').write_bytes(bytes(blob.data))
    (OUT / 'augment.json').write_text(json.dumps(manifest, indent=1) + '\n')
    print(f"{len(manifest['cases'])} cases, {len(blob.data)} bytes")


if __name__ == '__main__':
    main()
