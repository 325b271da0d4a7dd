//! `load_image`: decoding by content, the layouts it converts, and the errors it reports.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, LumaA, Rgb};
use kiln_data::{DataError, load_image, load_luma_image};

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-data-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

/// The error's message names the file.
fn assert_names(err: &DataError, path: &Path) {
    assert!(err.to_string().contains(&path.display().to_string()), "message does not name {}: {err}", path.display());
}

#[test]
fn missing_file() {
    let dir = Scratch::new("missing");
    let path = dir.join("no_such.png");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert_names(&err, &path);
    assert!(err.to_string().contains("does not exist"));
}

#[test]
fn directory_is_unreadable() {
    let dir = Scratch::new("directory");
    let err = load_image(&dir.0).unwrap_err();
    assert!(matches!(err, DataError::Unreadable { .. }), "{err:?}");
    assert_names(&err, &dir.0);
}

#[test]
fn text_file_is_not_an_image() {
    let dir = Scratch::new("text");
    let path = dir.join("notes.png");
    std::fs::write(&path, "these are not pixels\n").unwrap();
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::NotAnImage { .. }), "{err:?}");
    assert_names(&err, &path);
    let empty = path.with_file_name("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(load_image(&empty).unwrap_err(), DataError::NotAnImage { .. }));
}

#[test]
fn truncated_png_is_corrupt() {
    let bytes = std::fs::read(fixture("rgb_37x23.png")).unwrap();
    let dir = Scratch::new("truncated");
    let path = dir.join("cut.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn garbled_jpeg_does_not_panic() {
    let bytes = std::fs::read(fixture("smooth_32x24.jpg")).unwrap();
    let dir = Scratch::new("garbled");
    // Keep the header (so the content is recognised as JPEG), break the entropy-coded data.
    for (i, cut) in [40, 200, bytes.len() - 10].into_iter().enumerate() {
        let mut broken = bytes[..cut].to_vec();
        broken.extend(std::iter::repeat_n(0xFFu8, 7));
        let path = dir.join(&format!("broken{i}.jpg"));
        std::fs::write(&path, &broken).unwrap();
        // Some decoders fill missing data with gray; either outcome is fine, a panic is not.
        if let Err(err) = load_image(&path) {
            assert_names(&err, &path);
        }
    }
}

#[test]
fn gif_is_recognised_but_unsupported() {
    let dir = Scratch::new("gif");
    let path = dir.join("anim.png");
    std::fs::write(&path, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::UnsupportedFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("Gif") && err.to_string().contains("convert it"), "{err}");
}

#[test]
fn format_comes_from_content_not_extension() {
    let dir = Scratch::new("extension");
    let disguised = dir.join("photo.jpg");
    std::fs::copy(fixture("rgb_37x23.png"), &disguised).unwrap();
    let no_extension = dir.join("image");
    std::fs::copy(fixture("smooth_32x24.jpg"), &no_extension).unwrap();
    assert_eq!(load_image(&disguised).unwrap(), load_image(fixture("rgb_37x23.png")).unwrap());
    assert_eq!(load_image(&no_extension).unwrap().dimensions(), (32, 24));
}

#[test]
fn sixteen_bit_grayscale_png_keeps_its_levels() {
    let dir = Scratch::new("gray16");
    let path = dir.join("depth.png");
    let levels: Vec<u16> = vec![0, 255, 256, 0x8000, 0xfffe, 0xffff];
    ImageBuffer::<Luma<u16>, _>::from_raw(6, 1, levels).unwrap().save(&path).unwrap();
    let rgb = load_image(&path).unwrap();
    // High byte per level, replicated; Pillow would give 0, 255, 255, 255, 255, 255.
    let expected: Vec<u8> = [0u8, 0, 1, 128, 255, 255].iter().flat_map(|&v| [v; 3]).collect();
    assert_eq!(rgb.into_raw(), expected);
}

#[test]
fn gray_alpha_and_bmp_decode() {
    let dir = Scratch::new("layouts");
    let la = dir.join("la.png");
    ImageBuffer::<LumaA<u8>, _>::from_raw(2, 1, vec![10, 0, 200, 255]).unwrap().save(&la).unwrap();
    assert_eq!(load_image(&la).unwrap().into_raw(), vec![10, 10, 10, 200, 200, 200]);
    let bmp = dir.join("pixels.bmp");
    ImageBuffer::<Rgb<u8>, Vec<u8>>::from_raw(2, 2, (0..12).map(|v| v * 20).collect()).unwrap().save(&bmp).unwrap();
    assert_eq!(load_image(&bmp).unwrap().into_raw(), (0..12).map(|v| v * 20).collect::<Vec<u8>>());
}

#[test]
fn luma_loader_matches_pillow_on_rgba() {
    // The RGBA fixture's L conversion ignores alpha; decoding.bin holds Pillow's, checked in
    // pil_parity; here: the convenience loader is the same function of the same pixels.
    let path = fixture("rgba_21x17.png");
    let luma = load_luma_image(&path).unwrap();
    assert_eq!(luma, kiln_data::to_luma(&load_image(&path).unwrap()));
    assert_eq!(luma.dimensions(), (21, 17));
}
