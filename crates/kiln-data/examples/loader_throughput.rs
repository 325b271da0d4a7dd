//! Images per second of the data loader alone (decode + timm train transform + Mixup), on an
//! image folder you point it at or on a synthetic one it writes.
//!
//! ```sh
//! cargo run --release -p kiln-data --example loader_throughput -- [<train folder>] [workers] [img_size]
//! ```

use std::sync::Arc;

use kiln_data::{DataLoader, Dataset, ImageFolder, LoaderConfig, Mixup, RgbImage, TrainTransformConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workers = args.get(1).map_or(Ok(std::thread::available_parallelism()?.get()), |w| w.parse())?;
    let img_size: usize = args.get(2).map_or(Ok(224), |s| s.parse())?;
    let root = match args.first() {
        Some(root) => std::path::PathBuf::from(root),
        None => synthetic_folder()?,
    };
    let data: Arc<dyn Dataset> = Arc::new(ImageFolder::open(&root)?);
    let mut cfg = TrainTransformConfig::imagenet([img_size, img_size]);
    cfg.auto_augment = Some("rand-m9-mstd0.5-inc1".into());
    cfg.re_prob = 0.25;
    let config = LoaderConfig { workers, ..LoaderConfig::train(32, 0) };
    let mixup = Mixup { mixup_alpha: 0.8, cutmix_alpha: 1.0, ..Mixup::new(data.num_classes()) };
    let loader = DataLoader::new(data.clone(), Arc::new(cfg.build()?), config)?.with_mixup(mixup, None)?;
    let batches = loader.batches_per_epoch().min(8);
    let t = loader.measure_throughput(0, batches)?;
    println!(
        "{}: {} images in {} batches of {img_size}x{img_size} on {workers} workers: {:.1} s, {:.0} images/s",
        root.display(),
        t.images,
        t.batches,
        t.seconds,
        t.images_per_second()
    );
    Ok(())
}

/// 256 ImageNet-sized JPEGs (500x375) in 4 classes, under the system's temporary directory.
fn synthetic_folder() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join("kiln-loader-throughput");
    for class in 0..4u32 {
        let dir = root.join(format!("class{class}"));
        std::fs::create_dir_all(&dir)?;
        for i in 0..64u32 {
            let path = dir.join(format!("{i}.JPEG"));
            if !path.exists() {
                let image = RgbImage::from_fn(500, 375, |x, y| {
                    image::Rgb([(x + i) as u8, (y * 2 + class) as u8, ((x * y) >> 6) as u8])
                });
                image.save_with_format(&path, image::ImageFormat::Jpeg)?;
            }
        }
    }
    Ok(root)
}
