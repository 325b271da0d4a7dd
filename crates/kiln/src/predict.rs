//! `kiln predict`: timm's evaluation preprocessing, a forward pass, the top-k classes; or, with
//! `--config` of a segmentation experiment, a colourised label map, an overlay and the class
//! areas of each image.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_data::{imagenet1k_labels, load_image};
use kiln_models::{LoadedModel, find};
use kiln_train::data::eval_transform;
use kiln_train::tasks::classify::predict_image;
use serde::Serialize;

use crate::device;

#[derive(clap::Args)]
pub struct Args {
    /// Registered model name (see `kiln models`).
    #[arg(long, required_unless_present = "config")]
    model: Option<String>,
    /// A segmentation experiment (TOML): predict label maps with its preprocessing and classes;
    /// `--weights` is then a Kiln segmenter checkpoint.
    #[arg(long, conflicts_with_all = ["model", "num_classes", "img_size", "crop_pct"])]
    config: Option<PathBuf>,
    /// With --config: override a value, e.g. --set data.root=... (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    set: Vec<String>,
    /// Where segmentation outputs go: `<stem>_mask.png`, `<stem>_overlay.png`, `<stem>.json`.
    #[arg(long, default_value = "predictions")]
    output_dir: PathBuf,
    /// Weights: a timm state dict (.safetensors / .pth) or a Kiln checkpoint. Without it the
    /// model is randomly initialised.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Classes of the head, when the weights are not for the default class count.
    #[arg(long)]
    num_classes: Option<usize>,
    /// Input size (square); the model is built for it.
    #[arg(long)]
    img_size: Option<usize>,
    /// Fraction of the resized image kept by the centre crop (model default otherwise).
    #[arg(long)]
    crop_pct: Option<f64>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// One JSON object per image per line.
    #[arg(long)]
    json: bool,
    /// flex (CPU) or wgpu (GPU).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Prediction<'a> {
    image: String,
    top: Vec<Class<'a>>,
}

#[derive(Serialize)]
struct Class<'a> {
    index: usize,
    label: &'a str,
    logit: f64,
    prob: f64,
}

pub fn run(args: Args) -> Result<()> {
    let device = device::parse(&args.device)?;
    if let Some(config) = &args.config {
        return segment(&args, config, &device);
    }
    let entry = find(args.model.as_deref().expect("clap requires --model without --config"))?;
    let mut config = (entry.config)();
    if let Some(size) = args.img_size {
        config.set_img_size([size, size]);
    }
    if let Some(n) = args.num_classes {
        config.set_num_classes(n);
    }
    let mut model = LoadedModel::build(entry.name, config, &device)?;
    if let Some(weights) = &args.weights {
        let report = model.load_weights(weights)?;
        if report.head_reinitialized {
            bail!(
                "the classifier in {} has another number of classes than the model ({}); pass --num-classes with the checkpoint's count",
                weights.display(),
                model.config.num_classes()
            );
        }
    }
    let num_classes = model.config.num_classes();
    if args.topk == 0 || args.topk > num_classes {
        bail!("--topk {} is out of range: the model has {num_classes} classes", args.topk);
    }
    let crop_pct = args.crop_pct.unwrap_or(entry.pretrained.crop_pct);
    let pretrained = &entry.pretrained;
    let (mean, std) = (pretrained.mean.map(|v| v as f32), pretrained.std.map(|v| v as f32));
    let transform = eval_transform(pretrained, model.config.img_size(), model.config.in_chans(), crop_pct, mean, std)
        .context("--crop-pct / --img-size")?;
    let imagenet = imagenet1k_labels();
    let generic: Vec<String> = (0..num_classes).map(|i| format!("class_{i}")).collect();
    let labels: Vec<&str> = if num_classes == imagenet.len() {
        imagenet
    } else {
        generic.iter().map(String::as_str).collect()
    };

    for path in &args.images {
        let image = load_image(path)?;
        let logits = predict_image(&model.model, &transform, &image, &device);
        let probs = softmax(logits.clone(), 1);
        let logits = logits.into_data().try_to_vec::<f32>().context("reading logits")?;
        let probs = probs.into_data().try_to_vec::<f32>().context("reading probabilities")?;
        let mut order: Vec<usize> = (0..num_classes).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<Class> = order[..args.topk]
            .iter()
            .map(|&i| Class { index: i, label: labels[i], logit: logits[i] as f64, prob: probs[i] as f64 })
            .collect();
        if args.json {
            println!("{}", serde_json::to_string(&Prediction { image: path.display().to_string(), top })?);
        } else {
            println!("{}", path.display());
            for c in top {
                println!("  {:>5}  {:<32} logit {:>9.4}  prob {:>6.2}%", c.index, c.label, c.logit, 100.0 * c.prob);
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Area<'a> {
    index: usize,
    class: &'a str,
    pixels: usize,
    fraction: f64,
}

#[derive(Serialize)]
struct Segmentation<'a> {
    image: String,
    width: u32,
    height: u32,
    mask: String,
    overlay: String,
    classes: Vec<Area<'a>>,
}

/// Label maps of a segmenter: PNGs of the colourised map and of its blend with the image, and
/// the area of every predicted class.
fn segment(args: &Args, config: &std::path::Path, device: &Device) -> Result<()> {
    let resolved = kiln_train::config::load(config, &args.set)?;
    if resolved.experiment.task != kiln_train::config::Task::Segmentation {
        bail!("{} is a classification experiment; predict with --model NAME --weights W", config.display());
    }
    let Some(weights) = &args.weights else {
        bail!("--config needs --weights: a Kiln segmenter checkpoint (checkpoints/best/model.bpk of a run)");
    };
    let classes = kiln_train::tasks::segment::experiment_classes(&resolved)?;
    let net = kiln_train::tasks::segment::load_segmenter(weights, classes.len(), device)?;
    std::fs::create_dir_all(&args.output_dir).with_context(|| format!("creating {}", args.output_dir.display()))?;
    for path in &args.images {
        let image = load_image(path)?;
        let labels = kiln_train::tasks::segment::predict_image(&net.model, &resolved, &image, device)?;
        let colour = |label: u8| classes.palette.get(label as usize).copied().unwrap_or([0, 0, 0]);
        let mask = image::RgbImage::from_fn(labels.width(), labels.height(), |x, y| image::Rgb(colour(labels.get_pixel(x, y)[0])));
        let overlay = image::RgbImage::from_fn(labels.width(), labels.height(), |x, y| {
            let (a, b) = (image.get_pixel(x, y).0, mask.get_pixel(x, y).0);
            image::Rgb(std::array::from_fn(|c| ((a[c] as u16 + b[c] as u16) / 2) as u8))
        });
        let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        let mask_path = args.output_dir.join(format!("{stem}_mask.png"));
        let overlay_path = args.output_dir.join(format!("{stem}_overlay.png"));
        mask.save(&mask_path).with_context(|| format!("writing {}", mask_path.display()))?;
        overlay.save(&overlay_path).with_context(|| format!("writing {}", overlay_path.display()))?;
        let mut counts = vec![0usize; classes.len()];
        for label in labels.as_raw() {
            counts[*label as usize] += 1;
        }
        let total = labels.as_raw().len().max(1);
        let mut areas: Vec<Area> = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| Area { index: i, class: &classes.names[i], pixels: n, fraction: n as f64 / total as f64 })
            .collect();
        areas.sort_by(|a, b| b.pixels.cmp(&a.pixels));
        let summary = Segmentation {
            image: path.display().to_string(),
            width: labels.width(),
            height: labels.height(),
            mask: mask_path.display().to_string(),
            overlay: overlay_path.display().to_string(),
            classes: areas,
        };
        let json_path = args.output_dir.join(format!("{stem}.json"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&summary)?).with_context(|| format!("writing {}", json_path.display()))?;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!("{} -> {}, {}", path.display(), mask_path.display(), overlay_path.display());
            for a in &summary.classes {
                println!("  {:>3}  {:<24} {:>6.2}%", a.index, a.class, 100.0 * a.fraction);
            }
        }
    }
    Ok(())
}
