//! Checkpoint import and export.
//!
//! Foreign checkpoints (timm state dicts, `.safetensors` or PyTorch `.pth`) load by key
//! remapping through burn-store, with the surgery fine-tuning needs: buffers we recompute are
//! skipped, relative-position tables are resized (as timm resizes them) when the window differs, and the
//! classifier is re-initialised when the class count differs. Anything else that does not fit
//! is an error listing the keys. Kiln's own checkpoints are burnpack files carrying the model
//! name and configuration in their metadata.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::store::burn_pack::{self, Tensor as PackTensor};
use burn::store::{
    BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore, bridge,
};
use burn::tensor::{DType, TensorData};
use kiln_nn::resize_relative_position_table;

use crate::error::ModelError;

/// How one family's foreign checkpoints map onto its modules.
pub struct KeyMap {
    /// Renames a checkpoint key to the module path, or `None` to skip it (a recomputed buffer,
    /// a parameter forward never uses).
    pub rename: fn(&str) -> Option<String>,
    /// Prefix of the classifier's keys, dropped (and re-initialised) when their shapes differ.
    pub classifier_prefix: &'static str,
}

/// What a load did, for the user's report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Tensors copied into the model.
    pub loaded: usize,
    /// Checkpoint keys skipped on purpose (recomputed buffers).
    pub skipped: Vec<String>,
    /// Relative-position tables resized to the model's window.
    pub resized: Vec<String>,
    /// Whether the classifier kept its fresh initialisation because the class count differs.
    pub head_reinitialized: bool,
}

/// Reads every tensor of a `.safetensors` or PyTorch (`.pth`, `.pt`, `.bin`) file, by content.
///
/// A PyTorch file that wraps its state dict (`{"model": ...}`, `{"state_dict": ...}`) or was
/// saved from `DataParallel` (`module.` prefixes) is unwrapped.
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, PackTensor>, ModelError> {
    let unreadable = |reason: String| ModelError::CheckpointUnreadable { path: path.to_path_buf(), reason };
    let mut magic = [0u8; 2];
    {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
        file.read_exact(&mut magic).map_err(|_| unreadable("the file is empty or truncated".into()))?;
    }
    // PyTorch's zip format starts with "PK"; its legacy format is a pickle (0x80 protocol).
    let tensors = if magic == *b"PK" || magic[0] == 0x80 {
        // keys exactly as saved: burn-store would otherwise renumber `nn.Sequential` indices
        // with gaps (`conv0.3` -> `conv0.2` where `conv0.2` is a ReLU), which Kiln's module
        // paths keep, and a .pth would not load like the same state dict in .safetensors
        PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_tensors()
            .map(|t| t.clone())
            .map_err(|e| unreadable(format!("not a readable PyTorch checkpoint ({e})")))?
    } else {
        SafetensorsStore::from_file(path)
            .get_all_tensors()
            .map(|t| t.clone())
            .map_err(|e| unreadable(format!("not a safetensors or PyTorch checkpoint ({e})")))?
    };
    if tensors.is_empty() {
        return Err(unreadable("it holds no tensors".into()));
    }
    Ok(strip_wrapper_prefix(tensors))
}

fn strip_wrapper_prefix(tensors: BTreeMap<String, PackTensor>) -> BTreeMap<String, PackTensor> {
    for prefix in ["model.", "state_dict.", "module.", "model_ema."] {
        if tensors.keys().all(|k| k.starts_with(prefix)) {
            let stripped = tensors
                .into_iter()
                .map(|(k, mut t)| {
                    let key = k[prefix.len()..].to_string();
                    t.name = key.clone();
                    (key, t)
                })
                .collect();
            return strip_wrapper_prefix(stripped);
        }
    }
    tensors
}

/// Loads a foreign state dict into `model` through `keys`, with table resizing and head
/// re-initialisation; any other missing, unexpected or mis-shaped key is an error that lists
/// them, and the model is left untouched.
pub fn load_foreign<M: ModuleSnapshot>(
    model: &mut M,
    model_name: &str,
    path: &Path,
    keys: &KeyMap,
) -> Result<LoadReport, ModelError> {
    let file = read_state_dict(path)?;
    // in module order, so the first problems listed are the first layers that do not fit
    let expected: Vec<(String, Vec<usize>)> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let position: HashMap<&str, usize> = expected.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();

    let mut report = LoadReport::default();
    let mut tensors = Vec::new();
    let (mut unexpected, mut mismatched) = (Vec::new(), Vec::new());
    let mut head_dropped = Vec::new();
    for (key, tensor) in file {
        let Some(name) = (keys.rename)(&key) else {
            report.skipped.push(key);
            continue;
        };
        let Some(&at) = position.get(name.as_str()) else {
            unexpected.push(format!("  unexpected: {key} {:?}", tensor.shape.to_vec()));
            continue;
        };
        let shape = &expected[at].1;
        let found = tensor.shape.to_vec();
        if &found == shape {
            tensors.push(renamed(tensor, name));
        } else if name.ends_with("relative_position_bias_table") {
            match resize_table(tensor, &name, shape) {
                Ok(resized) => {
                    tensors.push(resized);
                    report.resized.push(name);
                }
                Err(problem) => mismatched.push((at, problem)),
            }
        } else if name.starts_with(keys.classifier_prefix) {
            head_dropped.push(name);
        } else {
            mismatched.push((at, format!("  shape: {key} is {found:?} in the checkpoint, {shape:?} in the model")));
        }
    }
    let present: HashSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let head_replaced = !head_dropped.is_empty();
    let missing = expected
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| !present.contains(name.as_str()))
        .filter(|(_, (name, _))| !(head_replaced && name.starts_with(keys.classifier_prefix)))
        .map(|(at, (name, shape))| (at, format!("  missing: {name} {shape:?}")));
    mismatched.extend(missing);
    mismatched.sort_by_key(|(at, _)| *at);
    let problems: Vec<String> = mismatched.into_iter().map(|(_, text)| text).chain(unexpected).collect();
    if !problems.is_empty() {
        let shown = problems.len().min(12);
        let mut details = problems[..shown].join("\n");
        if problems.len() > shown {
            details.push_str(&format!("\n  ... and {} more", problems.len() - shown));
        }
        return Err(mismatch(path, model_name, details));
    }

    report.head_reinitialized = head_replaced;
    report.loaded = tensors.len();
    let result = model.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if !result.errors.is_empty() {
        return Err(mismatch(path, model_name, format!("  {:?}", result.errors)));
    }
    Ok(report)
}

fn mismatch(path: &Path, model: &str, details: String) -> ModelError {
    ModelError::CheckpointMismatch { path: path.to_path_buf(), model: model.to_string(), details }
}

fn renamed(mut tensor: PackTensor, name: String) -> PackTensor {
    tensor.name = name;
    tensor
}

/// Resizes a relative-position table to the model's window: Swin's flat
/// `[(2h−1)·(2w−1), heads]` or MaxViT's `[heads, 2h−1, 2w−1]`.
fn resize_table(tensor: PackTensor, name: &str, target: &[usize]) -> Result<PackTensor, String> {
    let found = tensor.shape.to_vec();
    let data = bridge::into_data(tensor)
        .map_err(|e| format!("  {name}: unreadable ({e})"))?
        .convert_dtype(DType::F32);
    let values = data.try_to_vec::<f32>().map_err(|e| format!("  {name}: {e:?}"))?;
    let side = |len: usize| -> Option<usize> {
        let s = (len as f64).sqrt().round() as usize;
        (s * s == len && s % 2 == 1).then_some(s.div_ceil(2))
    };
    let bad = || format!("  shape: {name} is {found:?} in the checkpoint, {target:?} in the model (not a resizable table)");
    let (resized, shape) = match (found.as_slice(), target) {
        ([len, heads], [new_len, new_heads]) if heads == new_heads => {
            let (from, to) = (side(*len).ok_or_else(bad)?, side(*new_len).ok_or_else(bad)?);
            (resize_relative_position_table(&values, *heads, [from, from], [to, to]), vec![*new_len, *heads])
        }
        ([heads, h, w], [new_heads, nh, nw]) if heads == new_heads && h % 2 == 1 && nh % 2 == 1 => {
            // head-major planes: transpose to the flat layout, resize, transpose back
            let flat: Vec<f32> = (0..h * w).flat_map(|p| (0..*heads).map(move |hd| (p, hd))).map(|(p, hd)| values[hd * h * w + p]).collect();
            let out = resize_relative_position_table(&flat, *heads, [h.div_ceil(2), w.div_ceil(2)], [nh.div_ceil(2), nw.div_ceil(2)]);
            let planes = (0..*heads).flat_map(|hd| (0..nh * nw).map(move |p| (p, hd))).map(|(p, hd)| out[p * heads + hd]).collect();
            (planes, vec![*heads, *nh, *nw])
        }
        _ => return Err(bad()),
    };
    Ok(bridge::from_data(TensorData::new(resized, shape), name.to_string(), None))
}

/// Metadata key of a Kiln checkpoint holding the registered model name.
pub const META_MODEL: &str = "kiln.model";
/// Metadata key of a Kiln checkpoint holding the model configuration as JSON.
pub const META_CONFIG: &str = "kiln.config";

/// Writes `model` as a Kiln checkpoint (burnpack), with the model name and configuration in its
/// metadata. The file appears whole or not at all: burnpack writes beside it and renames.
pub fn save_native<M: ModuleSnapshot>(model: &M, path: &Path, model_name: &str, config_json: &str) -> Result<(), ModelError> {
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .overwrite(true)
        .metadata(META_MODEL, model_name)
        .metadata(META_CONFIG, config_json);
    model.save_into(&mut store).map_err(|e| ModelError::CheckpointWrite { path: path.to_path_buf(), reason: e.to_string() })
}

/// The model name and configuration JSON recorded in a Kiln checkpoint, if it is one.
pub fn native_metadata(path: &Path) -> Option<(String, String)> {
    let reader = burn_pack::Reader::from_file(path).ok()?;
    let meta = reader.metadata();
    Some((meta.get(META_MODEL)?.clone(), meta.get(META_CONFIG)?.clone()))
}

/// Loads a Kiln checkpoint into a model built from the configuration it records.
pub fn load_native<M: ModuleSnapshot>(model: &mut M, path: &Path, model_name: &str) -> Result<LoadReport, ModelError> {
    let mut store = BurnpackStore::from_file(path).auto_extension(false);
    let result = model.load_from(&mut store).map_err(|e| ModelError::CheckpointUnreadable {
        path: PathBuf::from(path),
        reason: e.to_string(),
    })?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(mismatch(path, model_name, format!("  {result}")));
    }
    Ok(LoadReport { loaded: result.applied.len(), ..LoadReport::default() })
}
