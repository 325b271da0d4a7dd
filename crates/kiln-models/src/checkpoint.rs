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
    /// Model paths that received a tensor (as many as `loaded`).
    pub applied: Vec<String>,
    /// Model paths left at their initialisation (a segmenter's heads under a backbone load, a
    /// re-initialised classifier).
    pub fresh: Vec<String>,
    /// Checkpoint keys ignored on purpose (a classifier's, when only the backbone is wanted).
    pub ignored: Vec<String>,
}

impl LoadReport {
    /// One line for the terminal: `loaded 42 tensors; new: decode_head.* (12 tensors),
    /// auxiliary_head.* (5 tensors); ignored: 2 checkpoint keys (head.fc.weight, ...);
    /// resized: 2 tables`. Paths are grouped by their first component (two under `backbone.`).
    pub fn summary(&self) -> String {
        let mut text = format!("loaded {} tensors", self.loaded);
        if !self.fresh.is_empty() {
            let mut groups: Vec<(String, usize)> = Vec::new();
            for path in &self.fresh {
                let depth = if path.starts_with("backbone.") { 2 } else { 1 };
                let group = path.splitn(depth + 1, '.').take(depth).collect::<Vec<_>>().join(".");
                match groups.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((group, 1)),
                }
            }
            let groups: Vec<String> = groups.iter().map(|(g, n)| format!("{g}.* ({n} tensors)")).collect();
            text.push_str(&format!("; new: {}", groups.join(", ")));
        }
        if !self.ignored.is_empty() {
            let shown: Vec<&str> = self.ignored.iter().take(3).map(String::as_str).collect();
            let more = if self.ignored.len() > 3 { ", ..." } else { "" };
            text.push_str(&format!("; ignored: {} checkpoint keys ({}{more})", self.ignored.len(), shown.join(", ")));
        }
        if !self.resized.is_empty() {
            text.push_str(&format!("; resized: {} tables", self.resized.len()));
        }
        if self.head_reinitialized {
            text.push_str("; classifier re-initialised (class count differs)");
        }
        text
    }
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
    let incoming = read_state_dict(path)?.into_iter().map(|(key, tensor)| ((keys.rename)(&key), key, tensor));
    let rules = MatchRules { pytorch_layout: true, classifier_prefix: keys.classifier_prefix, ..MatchRules::default() };
    load_matching(model, model_name, path, incoming, &rules)
}

/// How [`load_matching`] treats tensors that do not fit one to one.
pub struct MatchRules<'a> {
    /// The incoming tensors are in PyTorch's layout (Linear weights `[out, in]`, BatchNorm
    /// `weight`/`bias`) and are adapted; otherwise they are in burn's (a Kiln checkpoint).
    pub pytorch_layout: bool,
    /// Model paths of the classifier: incoming tensors for them with another shape are dropped
    /// and the classifier keeps its fresh initialisation ([`LoadReport::head_reinitialized`]).
    pub classifier_prefix: &'a str,
    /// Model paths whose incoming tensors are ignored on purpose ([`LoadReport::ignored`]).
    pub ignore: &'a dyn Fn(&str) -> bool,
    /// Model paths that may keep their initialisation when the checkpoint lacks them
    /// ([`LoadReport::fresh`]); any other missing path is an error.
    pub may_stay_new: &'a dyn Fn(&str) -> bool,
}

impl Default for MatchRules<'_> {
    fn default() -> Self {
        Self { pytorch_layout: false, classifier_prefix: "", ignore: &|_| false, may_stay_new: &|_| false }
    }
}

/// Copies `incoming` tensors (`(model path or None to skip, checkpoint key, tensor)`) into
/// `model` by path, under `rules`. Relative-position tables of another window are resized;
/// missing, unexpected and mis-shaped tensors are an error naming each key with both shapes,
/// and the model is then left untouched.
pub fn load_matching<M: ModuleSnapshot>(
    model: &mut M,
    model_name: &str,
    path: &Path,
    incoming: impl IntoIterator<Item = (Option<String>, String, PackTensor)>,
    rules: &MatchRules,
) -> Result<LoadReport, ModelError> {
    let adapter = || -> Option<Box<dyn burn::store::ModuleAdapter>> {
        rules.pytorch_layout.then(|| Box::new(BurnToPyTorchAdapter) as Box<dyn burn::store::ModuleAdapter>)
    };
    // in module order, so the first problems listed are the first layers that do not fit
    let expected: Vec<(String, Vec<usize>)> = model
        .collect(None, adapter(), true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let position: HashMap<&str, usize> = expected.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();

    let mut report = LoadReport::default();
    let mut tensors = Vec::new();
    let (mut unexpected, mut mismatched) = (Vec::new(), Vec::new());
    let mut head_dropped = Vec::new();
    let is_classifier = |name: &str| !rules.classifier_prefix.is_empty() && name.starts_with(rules.classifier_prefix);
    for (name, key, tensor) in incoming {
        let Some(name) = name else {
            report.skipped.push(key);
            continue;
        };
        if (rules.ignore)(&name) {
            report.ignored.push(key);
            continue;
        }
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
        } else if is_classifier(&name) {
            head_dropped.push(name);
        } else {
            mismatched.push((at, format!("  shape: {key} is {found:?} in the checkpoint, {shape:?} in the model")));
        }
    }
    let present: HashSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let head_replaced = !head_dropped.is_empty();
    let mut missing = Vec::new();
    for (at, (name, shape)) in expected.iter().enumerate().filter(|(_, (name, _))| !present.contains(name.as_str())) {
        if (head_replaced && is_classifier(name)) || (rules.may_stay_new)(name) {
            report.fresh.push(name.clone());
        } else {
            missing.push((at, format!("  missing: {name} {shape:?}")));
        }
    }
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
    report.applied = tensors.iter().map(|t| t.name.clone()).collect();
    let adapter = rules.pytorch_layout.then(|| Box::new(PyTorchToBurnAdapter) as Box<dyn burn::store::ModuleAdapter>);
    let result = model.apply(tensors, None, adapter, true);
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

/// Metadata key of a Kiln checkpoint saying what it holds: [`KIND_SEGMENTER`], or absent for a
/// classifier (every checkpoint written before segmenters existed).
pub const META_KIND: &str = "kiln.kind";
/// [`META_KIND`] of a segmenter checkpoint (backbone + decode heads, a `SegmenterConfig`).
pub const KIND_SEGMENTER: &str = "segmenter";
/// [`native_kind`] of a checkpoint without [`META_KIND`].
pub const KIND_CLASSIFIER: &str = "classifier";

/// Writes `model` as a Kiln checkpoint (burnpack), with the model name and configuration in its
/// metadata. The file appears whole or not at all: burnpack writes beside it and renames.
pub fn save_native<M: ModuleSnapshot>(model: &M, path: &Path, model_name: &str, config_json: &str) -> Result<(), ModelError> {
    save_native_kind(model, path, model_name, config_json, KIND_CLASSIFIER)
}

/// [`save_native`] recording `kind` ([`KIND_CLASSIFIER`], [`KIND_SEGMENTER`]) under [`META_KIND`].
pub fn save_native_kind<M: ModuleSnapshot>(model: &M, path: &Path, model_name: &str, config_json: &str, kind: &str) -> Result<(), ModelError> {
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .overwrite(true)
        .metadata(META_MODEL, model_name)
        .metadata(META_CONFIG, config_json)
        .metadata(META_KIND, kind);
    model.save_into(&mut store).map_err(|e| ModelError::CheckpointWrite { path: path.to_path_buf(), reason: e.to_string() })
}

/// The model name and configuration JSON recorded in a Kiln checkpoint, if it is one.
pub fn native_metadata(path: &Path) -> Option<(String, String)> {
    let reader = burn_pack::Reader::from_file(path).ok()?;
    let meta = reader.metadata();
    Some((meta.get(META_MODEL)?.clone(), meta.get(META_CONFIG)?.clone()))
}

/// What a Kiln checkpoint holds ([`KIND_CLASSIFIER`] when it does not say), or `None` if the
/// file is not a Kiln checkpoint.
pub fn native_kind(path: &Path) -> Option<String> {
    let reader = burn_pack::Reader::from_file(path).ok()?;
    let meta = reader.metadata();
    meta.get(META_MODEL)?;
    Some(meta.get(META_KIND).cloned().unwrap_or_else(|| KIND_CLASSIFIER.to_string()))
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
