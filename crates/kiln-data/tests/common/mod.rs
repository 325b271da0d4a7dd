//! Helpers shared by the integration tests: scratch directories and tiny generated data.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-data-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` (creating parent directories) and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small picture whose content depends on `seed`: a gradient, a block and a seeded level.
pub fn picture(width: u32, height: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let block = (x > width / 3 && x < width / 2 && y > height / 4) as u8 * 200;
        Rgb([(x * 9) as u8 ^ seed, (y * 13) as u8 ^ block, seed.wrapping_mul(37).wrapping_add((x + y) as u8)])
    })
}

/// Writes `image` at `path` in the format of its extension (PNG, JPEG, ...).
pub fn save(image: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let format = image::ImageFormat::from_path(path).unwrap();
    image.save_with_format(path, format).unwrap();
}

/// An idx file: magic `00 00 08 <dims>`, big-endian sizes, data.
pub fn idx_bytes(sizes: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, sizes.len() as u8];
    for s in sizes {
        bytes.extend_from_slice(&s.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The repository's shipped data sets.
pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets").join(name)
}
