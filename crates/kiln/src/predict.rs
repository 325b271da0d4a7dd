//! `kiln predict`: timm's evaluation preprocessing, a forward pass, the top-k classes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_data::{CropMode, EvalTransform, Interpolation, imagenet1k_labels, load_image};
use kiln_models::{Backbone, LoadedModel, find};
use serde::Serialize;

use crate::device;

#[derive(clap::Args)]
pub struct Args {
    /// Registered model name (see `kiln models`).
    #[arg(long)]
    model: String,
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
    let entry = find(&args.model)?;
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
    let transform = EvalTransform {
        img_size: model.config.img_size(),
        crop_pct,
        interpolation: Interpolation::from_timm(pretrained.interpolation)?,
        mean: pretrained.mean.map(|v| v as f32),
        std: pretrained.std.map(|v| v as f32),
        channels: model.config.in_chans(),
        // timm's pretrained cfg: 'squash' for the 384/512 MaxViT weights
        crop_mode: CropMode::from_timm(pretrained.crop_mode)?,
    };
    transform.validate().context("--crop-pct / --img-size")?;
    let imagenet = imagenet1k_labels();
    let generic: Vec<String> = (0..num_classes).map(|i| format!("class_{i}")).collect();
    let labels: Vec<&str> = if num_classes == imagenet.len() {
        imagenet
    } else {
        generic.iter().map(String::as_str).collect()
    };

    for path in &args.images {
        let image = load_image(path)?;
        let input = transform.apply(&image);
        let [channels, height, width] = input.shape();
        let x = Tensor::<1>::from_data(TensorData::new(input.data, [channels * height * width]), &device)
            .reshape([1, channels, height, width]);
        let logits = model.model.forward(x);
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
