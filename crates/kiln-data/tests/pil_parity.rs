//! Parity with Pillow, torchvision and timm on the fixtures of `scripts/export_resize_fixtures.py`.

use std::path::{Path, PathBuf};

use kiln_data::{CropMode, EvalTransform, GrayImage, Interpolation, load_image, resize, to_luma};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("fixture manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// The bytes of one case: `{"offset", "len"}` into a .bin file.
fn slice<'a>(blob: &'a [u8], span: &Value) -> &'a [u8] {
    let offset = span["offset"].as_u64().unwrap() as usize;
    &blob[offset..offset + span["len"].as_u64().unwrap() as usize]
}

fn read_blob(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

#[test]
fn decoding_matches_pillow_convert_rgb_and_l() {
    let blob = read_blob("decoded.bin");
    let m = manifest();
    let images = m["images"].as_array().unwrap();
    assert_eq!(images.len(), 7);
    for image in images {
        let file = image["file"].as_str().unwrap();
        let rgb = load_image(fixtures().join(file)).unwrap();
        assert_eq!(
            (rgb.width() as usize, rgb.height() as usize),
            (usize_of(&image["width"]), usize_of(&image["height"]))
        );
        let luma = to_luma(&rgb);
        let (pil_rgb, pil_luma) = (slice(&blob, &image["rgb"]), slice(&blob, &image["luma"]));
        if file.ends_with(".jpg") {
            // libjpeg-turbo (Pillow) and zune-jpeg (image) do not share their IDCT and chroma
            // upsampling; on smooth content they agree to a few levels.
            let max_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
            assert!(max_diff(rgb.as_raw(), pil_rgb) <= 3, "{file}: rgb differs by {}", max_diff(rgb.as_raw(), pil_rgb));
            assert!(max_diff(luma.as_raw(), pil_luma) <= 3, "{file}: luma differs");
        } else {
            assert_eq!(rgb.as_raw().as_slice(), pil_rgb, "{file} ({}): RGB", image["pil_mode"]);
            assert_eq!(luma.as_raw().as_slice(), pil_luma, "{file} ({}): L", image["pil_mode"]);
        }
    }
}

#[test]
fn resize_is_bit_exact_with_pillow() {
    let blob = read_blob("resize.bin");
    let m = manifest();
    let cases = m["resize"].as_array().unwrap();
    assert_eq!(cases.len(), 84);
    let mut filters_seen = std::collections::HashSet::new();
    for case in cases {
        let file = case["image"].as_str().unwrap();
        let filter = Interpolation::from_timm(case["filter"].as_str().unwrap()).unwrap();
        filters_seen.insert(filter);
        let (w, h) = (usize_of(&case["width"]) as u32, usize_of(&case["height"]) as u32);
        let rgb = load_image(fixtures().join(file)).unwrap();
        let expected = slice(&blob, case);
        let got = match case["mode"].as_str().unwrap() {
            "RGB" => resize(&rgb, w, h, filter).into_raw(),
            "L" => resize(&to_luma(&rgb), w, h, filter).into_raw(),
            mode => panic!("unexpected mode {mode}"),
        };
        let mismatches = got.iter().zip(expected).filter(|(a, b)| a != b).count();
        assert!(
            got.len() == expected.len() && mismatches == 0,
            "{file} {} -> {w}x{h} {filter}: {mismatches} of {} bytes differ",
            case["mode"],
            expected.len()
        );
    }
    assert_eq!(filters_seen.len(), Interpolation::ALL.len());
}

#[test]
fn eval_transform_matches_timm() {
    let blob = read_blob("eval.bin");
    let m = manifest();
    let cases = m["eval"].as_array().unwrap();
    assert_eq!(cases.len(), 21);
    let mut exact = 0;
    let mut total = 0;
    for case in cases {
        let file = case["image"].as_str().unwrap();
        let name = case["case"].as_str().unwrap();
        // timm gives one-channel cases a one-element mean/std; Kiln reads element 0 for them.
        let three = |key: &str| -> [f32; 3] {
            let v: Vec<f32> = case[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            if v.len() == 1 { [v[0]; 3] } else { v.try_into().unwrap() }
        };
        let transform = EvalTransform {
            img_size: [usize_of(&case["img_size"][0]), usize_of(&case["img_size"][1])],
            crop_pct: case["crop_pct"].as_f64().unwrap(),
            interpolation: Interpolation::from_timm(case["interpolation"].as_str().unwrap()).unwrap(),
            mean: three("mean"),
            std: three("std"),
            channels: usize_of(&case["channels"]),
            crop_mode: CropMode::from_timm(case["crop_mode"].as_str().unwrap()).unwrap(),
        };
        let out = transform.apply(&load_image(fixtures().join(file)).unwrap());
        assert_eq!(
            out.shape(),
            [usize_of(&case["channels"]), usize_of(&case["height"]), usize_of(&case["width"])],
            "{file} {name}"
        );
        let expected: Vec<f32> =
            slice(&blob, case).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(out.data.len(), expected.len(), "{file} {name}");
        let tolerance = if file.ends_with(".jpg") { 3.0 / 255.0 / 0.224 } else { 1e-6 };
        for (i, (a, b)) in out.data.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= tolerance, "{file} {name}: value {i} is {a}, timm has {b}");
            exact += (a == b) as usize;
            total += 1;
        }
    }
    eprintln!("{exact} of {total} values bit-identical to timm");
}

#[test]
fn gray_fixture_resizes_as_luma() {
    // The gray PNG decodes to equal channels, so its luma is the file's own pixels.
    let rgb = load_image(fixtures().join("images/gray_23x37.png")).unwrap();
    let luma: GrayImage = to_luma(&rgb);
    assert!(rgb.pixels().zip(luma.pixels()).all(|(p, l)| p.0 == [l.0[0]; 3]));
}
