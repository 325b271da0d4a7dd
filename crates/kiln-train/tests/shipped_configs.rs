//! Every experiment shipped under `configs/` (all but `_base_/`) loads, resolves and passes
//! validation, and every `_base_` file is used by some experiment.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_train::config::{self, DatasetKind, GrayscaleMode, OptimizerName};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(toml_files(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn experiments() -> Vec<PathBuf> {
    let base = configs_dir().join("_base_");
    toml_files(&configs_dir()).into_iter().filter(|p| !p.starts_with(&base)).collect()
}

#[test]
fn every_shipped_experiment_is_valid() {
    let experiments = experiments();
    assert!(experiments.len() >= 6, "found only {experiments:?}");
    let mut failures = Vec::new();
    let mut fully_checked = 0;
    for path in &experiments {
        match config::load(path, &[]) {
            Ok(resolved) => {
                fully_checked += 1;
                // what goes into the run directory loads back to the same experiment
                let dir = std::env::temp_dir().join(format!("kiln-shipped-{}-{}", std::process::id(), fully_checked));
                let written = resolved.write_to_run_dir(&dir).unwrap();
                let again = config::load(&written, &[]).unwrap_or_else(|e| panic!("{}: rendered config: {e}", path.display()));
                assert_eq!(again.experiment, resolved.experiment, "{}", path.display());
                fs::remove_dir_all(&dir).unwrap();
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    assert!(failures.is_empty(), "shipped configs that do not validate:\n{}", failures.join("\n"));
    assert_eq!(fully_checked, experiments.len(), "every shipped experiment resolves fully");
}

#[test]
fn every_base_file_is_used_by_an_experiment() {
    fn bases_of(file: &Path, used: &mut Vec<PathBuf>) {
        let table: toml::Table = fs::read_to_string(file).unwrap().parse().unwrap();
        let listed: Vec<String> = match table.get("_base_") {
            Some(toml::Value::String(one)) => vec![one.clone()],
            Some(toml::Value::Array(many)) => many.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            _ => Vec::new(),
        };
        for relative in listed {
            let base = fs::canonicalize(file.parent().unwrap().join(relative)).unwrap();
            used.push(base.clone());
            bases_of(&base, used);
        }
    }
    let mut used = Vec::new();
    for experiment in experiments() {
        bases_of(&experiment, &mut used);
    }
    for base in toml_files(&configs_dir().join("_base_")) {
        let base = fs::canonicalize(base).unwrap();
        assert!(used.contains(&base), "{} is not listed by any experiment", base.display());
    }
}

#[test]
fn quickstart_is_what_the_readme_promises() {
    let resolved = config::load(configs_dir().join("quickstart.toml"), &[]).unwrap();
    let e = &resolved.experiment;
    let arch = resolved.model.to_json();
    for field in [
        "\"embed_dim\":48",
        "\"depths\":[2,2,2]",
        "\"num_heads\":[3,6,12]",
        "\"window_size\":4",
        "\"patch_size\":2",
        "\"in_chans\":1",
        "\"img_size\":[32,32]",
        "\"num_classes\":10",
        "\"drop_path_rate\":0.1",
    ] {
        assert!(arch.contains(field), "{field} not in {arch}");
    }
    assert_eq!(e.data.dataset, DatasetKind::FashionMnist);
    assert_eq!(e.data.pad_to, Some(32));
    assert_eq!(e.data.grayscale, Some(GrayscaleMode::Luma));
    assert_eq!(e.data.batch_size, 128);
    assert_eq!((e.optim.name, resolved.lr(), e.optim.weight_decay), (OptimizerName::Adamw, 2e-3, 0.05));
    assert_eq!((e.schedule.epochs, e.schedule.warmup_epochs), (3, Some(1)));
    assert_eq!((e.augmentation.hflip, e.augmentation.label_smoothing), (0.5, 0.1));
    assert_eq!(e.augmentation.auto_augment, None);
    assert_eq!(resolved.output_dir(), Path::new("runs/quickstart"));
}

#[test]
fn finetune_replaces_the_head_and_decays_by_layer() {
    let resolved = config::load(configs_dir().join("finetune/swin_tiny_from_timm.toml"), &[]).unwrap();
    let e = &resolved.experiment;
    assert!(e.model.pretrained.is_some());
    assert_eq!(resolved.model.num_classes(), 10);
    assert_ne!(resolved.pretrained_cfg.num_classes, 10, "the checkpoint's head is another size");
    assert_eq!(e.optim.layer_decay, Some(0.75));
    assert_eq!(e.model.in_chans, Some(3));
    assert_eq!(e.data.grayscale, Some(GrayscaleMode::ExpandRgb));
}

#[test]
fn imagenet100_lists_100_imagenet_classes() {
    let dir = std::env::temp_dir().join(format!("kiln-in100-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let probe = dir.join("probe.toml");
    let base = fs::canonicalize(configs_dir().join("_base_/datasets/imagenet100.toml")).unwrap();
    fs::write(&probe, format!("_base_ = {:?}\n[model]\nname = \"swin_tiny_patch4_window7_224\"\n", base.display().to_string())).unwrap();
    let resolved = config::load(&probe, &[]).unwrap();
    fs::remove_dir_all(&dir).unwrap();

    let Some(config::ClassList::Names(classes)) = &resolved.experiment.data.class_list else {
        panic!("ImageNet-100 lists its classes inline")
    };
    assert_eq!(classes.len(), 100);
    assert_eq!(resolved.model.num_classes(), 100, "the head follows the class list");
    let imagenet: Vec<String> =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-data/data/imagenet1k_wnids.txt"))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
    assert_eq!(imagenet.len(), 1000);
    for wnid in classes {
        assert!(imagenet.contains(wnid), "{wnid} is not an ImageNet-1k class");
    }
}
