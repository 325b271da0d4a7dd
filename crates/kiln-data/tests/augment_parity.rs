//! Parity of the augmentation ops with Pillow, torchvision and timm, on the fixtures of
//! `scripts/export_augment_fixtures.py`: every case must match to the byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_data::image_ops::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, adjust_sharpness, affine, autocontrast,
    equalize, invert, posterize, rotate, solarize, solarize_add,
};
use kiln_data::{AugmentOp, Interpolation, OpParams, RandomResizedCrop, RgbImage, Rng, TrainInterpolation, resize};
use serde_json::Value;

const FILL: [u8; 3] = [124, 116, 104];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Fixtures {
    manifest: Value,
    blob: Vec<u8>,
}

impl Fixtures {
    fn load() -> Self {
        let text = std::fs::read_to_string(fixtures().join("augment.json")).expect("augment.json fixture");
        let blob = std::fs::read(fixtures().join("augment.bin")).expect("augment.bin fixture");
        Fixtures { manifest: serde_json::from_str(&text).expect("augment.json is JSON"), blob }
    }

    fn image(&self, span: &Value) -> RgbImage {
        let offset = span["offset"].as_u64().unwrap() as usize;
        let len = span["len"].as_u64().unwrap() as usize;
        let (w, h) = (span["width"].as_u64().unwrap() as u32, span["height"].as_u64().unwrap() as u32);
        RgbImage::from_raw(w, h, self.blob[offset..offset + len].to_vec()).expect("span holds w * h * 3 bytes")
    }

    fn sources(&self) -> HashMap<String, RgbImage> {
        self.manifest["sources"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, span)| (name.clone(), self.image(span)))
            .collect()
    }
}

fn f64_arg(case: &Value, name: &str) -> f64 {
    case["args"][name].as_f64().unwrap_or_else(|| panic!("case {case} lacks {name}"))
}

fn u32_arg(case: &Value, name: &str) -> u32 {
    case["args"][name].as_u64().unwrap_or_else(|| panic!("case {case} lacks {name}")) as u32
}

fn filter(case: &Value) -> Interpolation {
    Interpolation::from_timm(case["args"]["filter"].as_str().unwrap()).unwrap()
}

fn augment_op(name: &str) -> AugmentOp {
    AugmentOp::RAND_TRANSFORMS
        .into_iter()
        .chain(AugmentOp::RAND_INCREASING_TRANSFORMS)
        .find(|op| op.timm_name() == name)
        .unwrap_or_else(|| panic!("no op {name}"))
}

/// Kiln's result for one fixture case.
fn run(case: &Value, source: &RgbImage) -> RgbImage {
    let op = case["op"].as_str().unwrap();
    match op {
        "rotate" => rotate(source, f64_arg(case, "degrees"), filter(case), FILL),
        "shear_x" => affine(source, [1.0, f64_arg(case, "factor"), 0.0, 0.0, 1.0, 0.0], filter(case), FILL),
        "shear_y" => affine(source, [1.0, 0.0, 0.0, f64_arg(case, "factor"), 1.0, 0.0], filter(case), FILL),
        "translate_x_rel" => {
            let pixels = f64_arg(case, "pct") * source.width() as f64;
            affine(source, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], filter(case), FILL)
        }
        "translate_y_rel" => {
            let pixels = f64_arg(case, "pct") * source.height() as f64;
            affine(source, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], filter(case), FILL)
        }
        "auto_contrast" => autocontrast(source),
        "equalize" => equalize(source),
        "invert" => invert(source),
        "posterize" => posterize(source, u32_arg(case, "bits")),
        "solarize" => solarize(source, u32_arg(case, "threshold")),
        "solarize_add" => solarize_add(source, u32_arg(case, "add"), u32_arg(case, "threshold")),
        "color" => adjust_saturation(source, f64_arg(case, "factor")),
        "contrast" => adjust_contrast(source, f64_arg(case, "factor")),
        "brightness" => adjust_brightness(source, f64_arg(case, "factor")),
        "sharpness" => adjust_sharpness(source, f64_arg(case, "factor")),
        "adjust_hue" => adjust_hue(source, f64_arg(case, "hue")),
        "augment_op" => {
            let params = OpParams { fill: FILL, interpolation: TrainInterpolation::Random, translate_pct: 0.45 };
            let op = augment_op(case["args"]["name"].as_str().unwrap());
            op.apply(source, f64_arg(case, "magnitude"), &params, &mut Rng::seed_from_u64(0))
        }
        "resized_crop" => {
            let (top, left) = (u32_arg(case, "top"), u32_arg(case, "left"));
            let (h, w) = (u32_arg(case, "crop_height"), u32_arg(case, "crop_width"));
            let size = case["args"]["size"].as_array().unwrap();
            let (out_h, out_w) = (size[0].as_u64().unwrap() as u32, size[1].as_u64().unwrap() as u32);
            let crop = image::imageops::crop_imm(source, left, top, w, h).to_image();
            resize(&crop, out_w, out_h, filter(case))
        }
        other => panic!("unknown fixture op {other}"),
    }
}

#[test]
fn every_op_matches_pillow_to_the_byte() {
    let fixtures = Fixtures::load();
    let sources = fixtures.sources();
    let cases = fixtures.manifest["cases"].as_array().unwrap();
    assert!(cases.len() > 200, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut per_op: HashMap<&str, usize> = HashMap::new();
    for case in cases {
        let source = &sources[case["source"].as_str().unwrap()];
        let expected = fixtures.image(case);
        let got = run(case, source);
        *per_op.entry(case["op"].as_str().unwrap()).or_default() += 1;
        if got != expected {
            let differing = got.as_raw().iter().zip(expected.as_raw()).filter(|(a, b)| a != b).count();
            let max = got.as_raw().iter().zip(expected.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            failures.push(format!(
                "{} on {} {}: {differing} bytes differ (max {max})",
                case["op"], case["source"], case["args"]
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // Every op of the fixture was exercised.
    for op in
        ["rotate", "shear_x", "translate_y_rel", "equalize", "sharpness", "adjust_hue", "augment_op", "resized_crop"]
    {
        assert!(per_op.get(op).copied().unwrap_or(0) > 0, "no {op} case");
    }
}

#[test]
fn crop_fallback_matches_torchvision() {
    let fixtures = Fixtures::load();
    let cases = fixtures.manifest["crop_fallback"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let ratio = case["ratio"].as_array().unwrap();
        let crop = RandomResizedCrop {
            size: [8, 8],
            scale: [2.0, 3.0],
            ratio: [ratio[0].as_f64().unwrap(), ratio[1].as_f64().unwrap()],
            interpolation: TrainInterpolation::Random,
        };
        let got = crop.params(get("width"), get("height"), &mut Rng::seed_from_u64(0));
        assert_eq!(
            (got.top, got.left, got.height, got.width),
            (get("top"), get("left"), get("crop_height"), get("crop_width")),
            "{case}"
        );
    }
}
