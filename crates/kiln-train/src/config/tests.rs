//! Loading experiments end to end: inheritance, overrides, errors and their locations, defaults,
//! rendering.

use super::test_files::TestDir;
use super::*;

const SWIN_T: &str = "swin_tiny_patch4_window7_224";

fn set(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The problems of an invalid configuration (panics on success or another error).
fn problems(result: Result<ResolvedConfig, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected an invalid configuration, got: {other}"),
        Ok(_) => panic!("expected an invalid configuration, got a valid one"),
    }
}

fn at(path: &Path, line: usize) -> Option<Origin> {
    Some(Origin::File { path: path.to_path_buf(), line })
}

/// A small valid model on the shipped Fashion-MNIST: a Swin cut down to 32 px.
const SMALL_SWIN: &str = "[model]\nname = \"swin_tiny_patch4_window7_224\"\nin_chans = 1\nimg_size = 32\n\
    [model.arch]\nembed_dim = 48\ndepths = [2, 2, 2]\nnum_heads = [3, 6, 12]\nwindow_size = 4\npatch_size = 2\n\
    [data]\npad_to = 32\n[augmentation]\nmean = [0.2860]\nstd = [0.3530]\n";

/// Writes `small_swin.toml` and an experiment `name` inheriting it; `extra` starts on line 2.
fn small_swin(dir: &TestDir, name: &str, extra: &str) -> PathBuf {
    dir.write("small_swin.toml", SMALL_SWIN);
    dir.write(name, &format!("_base_ = \"small_swin.toml\"\n{extra}"))
}

#[test]
fn inheritance_deep_merges_bases_in_order_then_the_file() {
    let dir = TestDir::new();
    dir.write(
        "_base_/models/swin.toml",
        &format!("[model]\nname = \"{SWIN_T}\"\ndrop_path_rate = 0.2\n[model.arch]\nwindow_size = 7\nembed_dim = 96\n"),
    );
    dir.write("_base_/schedules/a.toml", "[optim]\nname = \"adamw\"\nlr = 1e-3\nweight_decay = 0.05\n[schedule]\nepochs = 300\nwarmup_epochs = 20\n");
    dir.write("_base_/schedules/b.toml", "[optim]\nlr = 5e-4\n[schedule]\nepochs = 100\n");
    let exp = dir.write(
        "exp/x.toml",
        "_base_ = [\"../_base_/models/swin.toml\", \"../_base_/schedules/a.toml\", \"../_base_/schedules/b.toml\"]\n\
         [model.arch]\nembed_dim = 128\n[schedule]\nepochs = 50\n",
    );
    let resolved = load(&exp, &[]).unwrap();
    let e = &resolved.experiment;
    assert_eq!(e.optim.lr, Some(5e-4), "the later base wins");
    assert_eq!(e.optim.weight_decay, 0.05, "what only the earlier base sets survives");
    assert_eq!(e.optim.name, OptimizerName::Adamw);
    assert_eq!(e.schedule.epochs, 50, "the file itself wins over every base");
    assert_eq!(e.schedule.warmup_epochs, Some(20));
    assert_eq!(e.model.drop_path_rate, Some(0.2));
    assert_eq!(e.model.arch["embed_dim"].as_integer(), Some(128), "tables merge key by key");
    assert_eq!(e.model.arch["window_size"].as_integer(), Some(7));
    let arch = resolved.model.to_json();
    assert!(arch.contains("\"embed_dim\":128") && arch.contains("\"window_size\":7"), "{arch}");
    assert_eq!(resolved.origin("schedule.epochs"), at(&exp, 5).as_ref());
    assert_eq!(resolved.origin("optim.lr"), at(&dir.path("_base_/schedules/b.toml"), 2).as_ref());
}

#[test]
fn overrides_set_nested_typed_values_after_every_file() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "[optim]\nname = \"adamw\"\nlr = 2e-3\n");
    let resolved = load(
        &exp,
        &set(&[
            "optim.lr=1e-3",
            "data.batch_size=64",
            "train.ema=true",
            "model.arch.depths=[2, 2, 4]",
            "augmentation.auto_augment=rand-m9-mstd0.5-inc1",
            "logging.output_dir=/tmp/run one",
        ]),
    )
    .unwrap();
    let e = &resolved.experiment;
    assert_eq!(e.optim.lr, Some(1e-3));
    assert_eq!(e.data.batch_size, 64);
    assert!(e.train.ema);
    assert_eq!(e.augmentation.auto_augment.as_deref(), Some("rand-m9-mstd0.5-inc1"));
    assert_eq!(e.logging.output_dir.as_deref(), Some(Path::new("/tmp/run one")));
    assert!(resolved.model.to_json().contains("\"depths\":[2,2,4]"));
    assert_eq!(e.model.arch["embed_dim"].as_integer(), Some(48), "siblings of an overridden key stay");
    assert_eq!(resolved.origin("optim.lr"), Some(&Origin::CommandLine { arg: "optim.lr=1e-3".into() }));
    assert_eq!(resolved.overrides.len(), 6);
}

#[test]
fn unknown_key_names_file_key_line_and_the_likely_key() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "[optim]\nname = \"adamw\"\nweight_decy = 0.05\n");
    let found = problems(load(&exp, &[]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "optim.weight_decy");
    assert_eq!(found[0].origin, at(&exp, 4));
    assert!(found[0].message.contains("did you mean `weight_decay`?"), "{}", found[0].message);
    let text = ConfigError::Invalid { file: exp.clone(), problems: found }.to_string();
    assert!(text.contains(&format!("{}:4: optim.weight_decy: unknown key", exp.display())), "{text}");
}

#[test]
fn unknown_key_in_a_base_points_into_the_base() {
    let dir = TestDir::new();
    let base = dir.write("_base_/s.toml", "[schedule]\nepochs = 3\nwarmup_epoch = 1\n");
    dir.write("small_swin.toml", SMALL_SWIN);
    let exp = dir.write("exp.toml", "_base_ = [\"small_swin.toml\", \"_base_/s.toml\"]\n");
    let found = problems(load(&exp, &[]));
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("schedule.warmup_epoch", &at(&base, 3)));
}

#[test]
fn unknown_section_and_unknown_key_from_the_command_line() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "\n[optimizer]\nlr = 1.0\n");
    let found = problems(load(&exp, &[]));
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("optimizer", &at(&exp, 3)));
    assert!(found[0].message.contains("did you mean `optim`?"), "{}", found[0].message);

    let exp = small_swin(&dir, "ok.toml", "");
    let found = problems(load(&exp, &set(&["optim.lrr=1e-3"])));
    assert_eq!(found[0].key, "optim.lrr");
    assert_eq!(found[0].origin, Some(Origin::CommandLine { arg: "optim.lrr=1e-3".into() }));
    assert!(found[0].to_string().starts_with("command line `--set optim.lrr=1e-3`: optim.lrr: unknown key"), "{}", found[0]);
}

#[test]
fn wrong_types_name_file_key_and_line() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "\n[train]\nseed = 1\naccum_steps = \"two\"\n");
    let found = problems(load(&exp, &[]));
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("train.accum_steps", &at(&exp, 5)));
    assert!(found[0].message.contains("invalid type: string \"two\""), "{}", found[0].message);

    let exp = small_swin(&dir, "enum.toml", "[optim]\nname = \"adam\"\n");
    let found = problems(load(&exp, &[]));
    assert_eq!(found[0].origin, at(&exp, 3));
    assert!(found[0].message.contains("`adamw`"), "{}", found[0].message);

    let exp = small_swin(&dir, "ok.toml", "");
    let found = problems(load(&exp, &set(&["data.batch_size=big"])));
    assert_eq!(found[0].key, "data.batch_size");
    assert_eq!(found[0].origin, Some(Origin::CommandLine { arg: "data.batch_size=big".into() }));
}

#[test]
fn impossible_values_name_file_key_and_line_all_at_once() {
    let dir = TestDir::new();
    let exp = small_swin(
        &dir,
        "exp.toml",
        "[optim]\nname = \"adamw\"\nlr = -1e-3\n[data]\nbatch_size = 0\n[schedule]\nepochs = 3\nwarmup_epochs = 3\n",
    );
    let found = problems(load(&exp, &[]));
    let keys: Vec<(&str, Option<Origin>)> = found.iter().map(|p| (p.key.as_str(), p.origin.clone())).collect();
    assert!(keys.contains(&("optim.lr", at(&exp, 4))), "{found:#?}");
    assert!(keys.contains(&("data.batch_size", at(&exp, 6))), "{found:#?}");
    assert!(keys.contains(&("schedule.warmup_epochs", at(&exp, 9))), "{found:#?}");
    let lr = found.iter().find(|p| p.key == "optim.lr").unwrap();
    assert!(lr.message.contains("positive") && lr.message.contains("-0.001"), "{}", lr.message);
    let warmup = found.iter().find(|p| p.key == "schedule.warmup_epochs").unwrap();
    assert!(warmup.message.contains(&format!("set at {}:8", exp.display())), "{}", warmup.message);
}

#[test]
fn a_negative_lr_from_the_command_line_says_so() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "");
    let found = problems(load(&exp, &set(&["optim.lr=-0.1"])));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to_string(), "command line `--set optim.lr=-0.1`: optim.lr: the learning rate must be a positive number, got -0.1");
}

#[test]
fn an_unknown_model_names_file_line_and_suggestions() {
    let dir = TestDir::new();
    let exp = dir.write("exp.toml", "# exp\n[model]\nname = \"swin_tiny_patch4_window7\"\n");
    let found = problems(load(&exp, &[]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("model.name", &at(&exp, 3)));
    assert!(found[0].message.contains("did you mean swin_tiny_patch4_window7_224"), "{}", found[0].message);
}

#[test]
fn a_missing_model_name_is_required() {
    let dir = TestDir::new();
    let exp = dir.write("exp.toml", "[model]\nin_chans = 3\n");
    let found = problems(load(&exp, &[]));
    assert_eq!(found[0].key, "model.name");
    assert!(found[0].message.contains("required"), "{}", found[0].message);
    let exp = dir.write("none.toml", "[data]\nbatch_size = 3\n");
    assert_eq!(problems(load(&exp, &[]))[0].key, "model.name");
}

#[test]
fn architecture_fields_are_checked_against_the_family() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "[model.arch]\nembed_dimm = 64\n");
    let found = problems(load(&exp, &[]));
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("model.arch.embed_dimm", &at(&exp, 3)));
    assert!(found[0].message.contains("did you mean `embed_dim`?"), "{}", found[0].message);

    let found = problems(load(small_swin(&dir, "type.toml", ""), &set(&["model.arch.depths=two"])));
    assert_eq!(found[0].key, "model.arch.depths");
    assert!(found[0].message.contains("expected a list of whole numbers"), "{}", found[0].message);

    let found = problems(load(small_swin(&dir, "neg.toml", ""), &set(&["model.arch.window_size=-4"])));
    assert_eq!(found[0].key, "model.arch.window_size");

    let found = problems(load(small_swin(&dir, "dedicated.toml", ""), &set(&["model.arch.num_classes=5"])));
    assert!(found[0].message.contains("set `model.num_classes`"), "{}", found[0].message);
}

#[test]
fn defaults_are_filled_from_the_model_the_data_and_timm() {
    let dir = TestDir::new();
    let exp = dir.write("my_run.toml", &format!("[model]\nname = \"{SWIN_T}\"\n"));
    let resolved = load(&exp, &[]).unwrap();
    let e = &resolved.experiment;
    assert_eq!(e.model.num_classes, Some(10), "Fashion-MNIST has 10 classes");
    assert_eq!(resolved.model.num_classes(), 10);
    assert_eq!(e.model.in_chans, Some(3));
    assert_eq!(e.model.img_size, Some(ImgSize { height: 224, width: 224 }));
    assert_eq!(e.model.drop_path_rate, Some(0.1));
    assert_eq!(e.data.grayscale, Some(GrayscaleMode::ExpandRgb));
    assert_eq!(e.data.root.as_deref(), Some(Path::new("datasets/fashion-mnist")));
    assert_eq!((e.data.train_split.as_deref(), e.data.val_split.as_deref()), (Some("train"), Some("test")));
    assert_eq!(e.augmentation.crop_pct, Some(0.9));
    assert_eq!(e.augmentation.mean.as_deref(), Some(&kiln_models::registry::IMAGENET_MEAN[..]));
    assert_eq!(resolved.lr(), 0.1 * 128.0 / 256.0, "timm: SGD scales linearly with the batch");
    assert_eq!(e.schedule.warmup_epochs, Some(5));
    assert_eq!(resolved.output_dir(), Path::new("runs/my_run"));

    let adamw = load(&exp, &set(&["optim.name=adamw", "data.batch_size=64", "train.accum_steps=16"])).unwrap();
    assert_eq!(adamw.global_batch_size(), 1024);
    assert!((adamw.lr() - 0.2).abs() < 1e-12, "timm: adaptive optimisers scale with the square root");
}

#[test]
fn one_input_channel_needs_its_own_normalisation() {
    let dir = TestDir::new();
    let exp = dir.write("exp.toml", &format!("[model]\nname = \"{SWIN_T}\"\nin_chans = 1\n"));
    let found = problems(load(&exp, &[]));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["augmentation.mean", "augmentation.std"]);
    assert!(found[0].message.contains("[0.2860]"), "{}", found[0].message);

    let found = problems(load(&exp, &set(&["augmentation.mean=[0.5, 0.5]", "augmentation.std=[0.5]", "data.grayscale=expand_rgb"])));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["data.grayscale", "augmentation.mean"], "{found:#?}");
}

#[test]
fn warmup_is_counted_one_way() {
    let dir = TestDir::new();
    let base = dir.write("_base_/s.toml", "[schedule]\nepochs = 300\nwarmup_epochs = 20\n");
    dir.write("small_swin.toml", SMALL_SWIN);
    let exp = dir.write("exp.toml", "_base_ = [\"small_swin.toml\", \"_base_/s.toml\"]\n[schedule]\nwarmup_iters = 10000\n");
    let found = problems(load(&exp, &[]));
    assert_eq!(found[0].key, "schedule.warmup_iters");
    assert!(found[0].message.contains(&format!("set at {}:3", base.display())), "{}", found[0].message);
    assert!(found[0].message.contains("warmup_epochs = 0"), "{}", found[0].message);
    let resolved = load(&exp, &set(&["schedule.warmup_epochs=0"])).unwrap();
    assert_eq!(resolved.experiment.schedule.warmup_iters, Some(10000));
}

#[test]
fn class_counts_must_agree() {
    let dir = TestDir::new();
    let exp = dir.write(
        "exp.toml",
        &format!(
            "[model]\nname = \"{SWIN_T}\"\nnum_classes = 5\n[data]\ndataset = \"image_folder\"\nroot = \"data/x\"\n\
             class_list = [\"cat\", \"dog\"]\n"
        ),
    );
    let found = problems(load(&exp, &[]));
    assert_eq!(found[0].key, "model.num_classes");
    assert!(found[0].message.contains("data.class_list lists 2 classes"), "{}", found[0].message);
    let resolved = load(&exp, &set(&["model.num_classes=2"])).unwrap();
    assert_eq!(resolved.model.num_classes(), 2);

    let folder = dir.write("folder.toml", &format!("[model]\nname = \"{SWIN_T}\"\n[data]\ndataset = \"image_folder\"\n"));
    let found = problems(load(&folder, &[]));
    assert_eq!(found[0].key, "data.root");
    let resolved = load(&folder, &set(&["data.root=/data/imagenet"])).unwrap();
    assert_eq!(resolved.experiment.model.num_classes, None, "taken from the folder at training time");
}

#[test]
fn resolved_config_round_trips_through_its_rendering() {
    let dir = TestDir::new();
    let exp = small_swin(
        &dir,
        "exp.toml",
        "[augmentation]\nhflip = 0.25\nauto_augment = \"rand-m9-mstd0.5-inc1\"\n[optim]\nname = \"adamw\"\nlr = 2e-3\n\
         clip_grad = 5.0\n[schedule]\nwarmup_iters = 100\nwarmup_epochs = 0\n[model]\nimg_size = [32, 32]\n",
    );
    let resolved = load(&exp, &set(&["train.seed=7", "data.class_list=[\"Bag\", \"Coat\"]"])).unwrap();
    let text = resolved.to_toml();
    assert!(text.starts_with(&format!("# Resolved by Kiln from {} --set train.seed=7", exp.display())), "{text}");
    assert!(text.contains("[model.arch]") && text.contains("embed_dim = 48"), "{text}");

    let written = resolved.write_to_run_dir(&dir.path("run")).unwrap();
    assert_eq!(written, dir.path("run/config.toml"));
    let again = load(&written, &[]).unwrap();
    assert_eq!(again.experiment, resolved.experiment);
    assert_eq!(again.model.to_json(), resolved.model.to_json());
    assert_eq!(again.to_toml().lines().skip(1).collect::<Vec<_>>(), text.lines().skip(1).collect::<Vec<_>>());
}

#[test]
fn a_bad_element_of_an_array_points_at_the_array() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "[augmentation]\nrrc_scale = [0.5, \"all\"]\n");
    let found = problems(load(&exp, &[]));
    assert_eq!((found[0].key.as_str(), &found[0].origin), ("augmentation.rrc_scale", &at(&exp, 3)));
    let found = problems(load(&exp, &set(&["augmentation.rrc_scale=[0.5]"])));
    assert_eq!(found[0].key, "augmentation.rrc_scale");
    assert!(matches!(found[0].origin, Some(Origin::CommandLine { .. })));
}

#[test]
fn an_inline_table_from_the_command_line_merges_like_a_file() {
    let dir = TestDir::new();
    let exp = small_swin(&dir, "exp.toml", "");
    let resolved = load(&exp, &set(&["model.arch={ embed_dim = 24, num_heads = [1, 2, 4] }"])).unwrap();
    let arch = resolved.model.to_json();
    assert!(arch.contains("\"embed_dim\":24") && arch.contains("\"num_heads\":[1,2,4]"), "{arch}");
    assert!(arch.contains("\"window_size\":4"), "keys the override does not name stay: {arch}");
}
