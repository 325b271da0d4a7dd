//! The untyped side of loading: reading TOML files, following `_base_` lists, deep-merging the
//! tables, applying `--set` overrides, and remembering where every key was set.
//!
//! Merge rules (mmsegmentation's): a file's bases are merged first, in list order, then the file
//! itself; tables merge key by key, recursively; anything else (numbers, strings, arrays) is
//! replaced whole by the later value. `--set` overrides come last.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

use super::error::{ConfigError, Origin};

/// The key that lists the files a configuration inherits from.
pub const BASE_KEY: &str = "_base_";

/// Where each dotted key of a merged configuration was set (tables included, array elements
/// not: an array is set as a whole).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance(BTreeMap<String, Origin>);

impl Provenance {
    /// Where `key` was set, if it was set at all.
    pub fn get(&self, key: &str) -> Option<&Origin> {
        self.0.get(key)
    }

    /// Where `key` or, failing that, its nearest enclosing table was set.
    pub fn nearest(&self, key: &str) -> Option<&Origin> {
        let mut key = key;
        loop {
            if let Some(origin) = self.0.get(key) {
                return Some(origin);
            }
            key = &key[..key.rfind('.')?];
        }
    }

    /// Every recorded key with its origin, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.0.iter().map(|(k, o)| (k.as_str(), o))
    }

    fn insert(&mut self, key: String, origin: Origin) {
        self.0.insert(key, origin);
    }

    /// Forgets `key` and everything under it.
    fn remove_subtree(&mut self, key: &str) {
        let prefix = format!("{key}.");
        self.0.retain(|k, _| k != key && !k.starts_with(&prefix));
    }

    /// Copies what `other` knows about `key` and everything under it.
    fn copy_subtree(&mut self, other: &Provenance, key: &str) {
        let prefix = format!("{key}.");
        for (k, origin) in other.0.range(key.to_string()..) {
            if k != key && !k.starts_with(&prefix) {
                break;
            }
            self.0.insert(k.clone(), origin.clone());
        }
    }
}

/// A configuration tree with the origin of each key.
#[derive(Debug, Clone, Default)]
pub struct SourcedTable {
    /// The merged values.
    pub table: Table,
    /// Where each key was set.
    pub provenance: Provenance,
}

impl SourcedTable {
    /// Merges `later` on top of `self`: tables key by key, everything else replaced.
    pub fn merge(&mut self, later: SourcedTable) {
        merge_into(&mut self.table, later.table, "", &mut self.provenance, &later.provenance);
    }

    /// Applies one `--set` override (a table value merges like a file's table would).
    pub fn apply(&mut self, set: &Override) {
        let origin = Origin::CommandLine { arg: set.arg.clone() };
        let mut provenance = Provenance::default();
        record_value_origins(&set.value, &set.key, &origin, &mut provenance);
        let mut prefix = String::new();
        for segment in &set.path[..set.path.len() - 1] {
            prefix = join(&prefix, segment);
            provenance.insert(prefix.clone(), origin.clone());
        }
        let mut value = set.value.clone();
        for segment in set.path.iter().rev() {
            value = Value::Table(Table::from_iter([(segment.clone(), value)]));
        }
        let Value::Table(table) = value else { unreachable!("the path has at least one segment") };
        self.merge(SourcedTable { table, provenance });
    }
}

/// One `--set dotted.key=value` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The argument as typed (without `--set`).
    pub arg: String,
    /// The dotted key.
    pub key: String,
    /// The key split at its dots.
    pub path: Vec<String>,
    /// The value: parsed as a TOML value (`1e-3`, `true`, `[2, 2]`, `"x"`), or the raw text as a
    /// string when it is not one (`swin_tiny_patch4_window7_224`, `/data/imagenet`).
    pub value: Value,
}

impl Override {
    /// Parses `dotted.key=value`.
    ///
    /// # Errors
    /// [`ConfigError::BadOverride`] without `=`, with an empty key or key segment, with a segment
    /// TOML would need quoted, or for `_base_`.
    pub fn parse(arg: &str) -> Result<Self, ConfigError> {
        let bad = |message: &str| ConfigError::BadOverride { arg: arg.to_string(), message: message.to_string() };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE, e.g. --set optim.lr=1e-3"))?;
        let key = key.trim();
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        if path.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
            return Err(bad("the key must be dotted words of letters, digits, '_' and '-', e.g. optim.lr"));
        }
        if path.iter().any(|s| s == BASE_KEY) {
            return Err(bad("_base_ can only be set in a file; pass that file instead"));
        }
        Ok(Self { arg: arg.to_string(), key: key.to_string(), path, value: parse_override_value(raw) })
    }
}

/// `raw` as a TOML value, or as a string when it is not one.
fn parse_override_value(raw: &str) -> Value {
    match format!("value = {raw}").parse::<Table>() {
        Ok(mut table) if table.len() == 1 => table.remove("value").expect("the only key"),
        _ => Value::String(raw.to_string()),
    }
}

/// Reads `path` and everything it inherits, merged, with the origin of every key.
///
/// # Errors
/// [`ConfigError::Read`] for a missing or unreadable file (naming the `_base_` entry that lists
/// it), [`ConfigError::Syntax`] for invalid TOML, [`ConfigError::BadBase`] for a malformed
/// `_base_`, [`ConfigError::BaseCycle`] for files that inherit from each other.
pub fn load_file(path: &Path) -> Result<SourcedTable, ConfigError> {
    load_recursive(&normalize(path), None, &mut Vec::new())
}

fn load_recursive(path: &Path, listed_in: Option<Origin>, stack: &mut Vec<(PathBuf, PathBuf)>) -> Result<SourcedTable, ConfigError> {
    let read_error = |reason: String| ConfigError::Read { path: path.to_path_buf(), listed_in: listed_in.clone(), reason };
    let canonical = fs::canonicalize(path).map_err(|e| read_error(e.to_string()))?;
    if let Some(start) = stack.iter().position(|(c, _)| *c == canonical) {
        let mut chain: Vec<PathBuf> = stack[start..].iter().map(|(_, shown)| shown.clone()).collect();
        chain.push(path.to_path_buf());
        return Err(ConfigError::BaseCycle { chain });
    }
    let text = fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    let mut own = parse_file(path, &text)?;

    let bases = match own.table.remove(BASE_KEY) {
        Some(value) => base_paths(path, value, own.provenance.get(BASE_KEY).cloned())?,
        None => Vec::new(),
    };
    own.provenance.remove_subtree(BASE_KEY);

    stack.push((canonical, path.to_path_buf()));
    let mut merged = SourcedTable::default();
    for (base, origin) in bases {
        merged.merge(load_recursive(&base, Some(origin), stack)?);
    }
    stack.pop();
    merged.merge(own);
    Ok(merged)
}

/// The files a `_base_` value names, resolved against the including file's directory.
fn base_paths(file: &Path, value: Value, origin: Option<Origin>) -> Result<Vec<(PathBuf, Origin)>, ConfigError> {
    let origin = origin.unwrap_or_else(|| Origin::File { path: file.to_path_buf(), line: 1 });
    let bad = |message: String| ConfigError::BadBase { origin: origin.clone(), message };
    let entries = match value {
        Value::String(s) => vec![Value::String(s)],
        Value::Array(items) => items,
        other => return Err(bad(format!("expected a path or a list of paths, found a {}", other.type_str()))),
    };
    let dir = file.parent().unwrap_or(Path::new(""));
    entries
        .into_iter()
        .map(|entry| match entry {
            Value::String(relative) if !relative.trim().is_empty() => Ok((normalize(&dir.join(relative)), origin.clone())),
            other => Err(bad(format!(
                "every entry must be a path relative to this file (\"../_base_/models/swin_tiny.toml\"), found {other}"
            ))),
        })
        .collect()
}

/// Parses one file's text into values plus the line of every key.
fn parse_file(path: &Path, text: &str) -> Result<SourcedTable, ConfigError> {
    let syntax_error = |err: toml::de::Error| {
        let offset = err.span().map_or(0, |s| s.start);
        let (line, column) = line_column(text, offset);
        ConfigError::Syntax { path: path.to_path_buf(), line, column, message: err.message().trim().to_string() }
    };
    let table: Table = text.parse().map_err(syntax_error)?;
    let spans = DeTable::parse(text).map_err(syntax_error)?;
    let mut provenance = Provenance::default();
    record_key_lines(spans.get_ref(), "", path, text, &mut provenance);
    Ok(SourcedTable { table, provenance })
}

fn record_key_lines(table: &DeTable<'_>, prefix: &str, path: &Path, text: &str, provenance: &mut Provenance) {
    for (key, value) in table.iter() {
        let full = join(prefix, key.get_ref());
        let (line, _) = line_column(text, key.span().start);
        provenance.insert(full.clone(), Origin::File { path: path.to_path_buf(), line });
        if let DeValue::Table(inner) = value.get_ref() {
            record_key_lines(inner, &full, path, text, provenance);
        }
    }
}

fn record_value_origins(value: &Value, key: &str, origin: &Origin, provenance: &mut Provenance) {
    provenance.insert(key.to_string(), origin.clone());
    if let Value::Table(table) = value {
        for (k, v) in table {
            record_value_origins(v, &join(key, k), origin, provenance);
        }
    }
}

fn merge_into(dst: &mut Table, src: Table, prefix: &str, dst_provenance: &mut Provenance, src_provenance: &Provenance) {
    for (key, value) in src {
        let full = join(prefix, &key);
        match (dst.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => {
                // a table keeps the origin of its first definition; its keys carry their own
                if dst_provenance.get(&full).is_none()
                    && let Some(origin) = src_provenance.get(&full)
                {
                    dst_provenance.insert(full.clone(), origin.clone());
                }
                merge_into(existing, incoming, &full, dst_provenance, src_provenance);
            }
            (_, value) => {
                dst_provenance.remove_subtree(&full);
                dst_provenance.copy_subtree(src_provenance, &full);
                dst.insert(key, value);
            }
        }
    }
}

/// `prefix.key`, or `key` at the top level.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, column)
}

/// `a/b/../c` as `a/c`, without touching the file system (so paths stay as the user wrote them).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_files::TestDir;

    fn file_origin(path: &Path, line: usize) -> Origin {
        Origin::File { path: path.to_path_buf(), line }
    }

    #[test]
    fn bases_merge_in_order_then_the_file_itself() {
        let dir = TestDir::new();
        let a = dir.write("_base_/a.toml", "[optim]\nlr = 0.1\nweight_decay = 0.5\nbetas = [0.1, 0.2]\n[data]\nworkers = 2\n");
        let b = dir.write("_base_/b.toml", "[optim]\nlr = 0.2\nbetas = [0.3]\n");
        let exp = dir.write("exp/x.toml", "_base_ = [\"../_base_/a.toml\", \"../_base_/b.toml\"]\n[optim]\nlr = 0.3\n");
        let tree = load_file(&exp).unwrap();

        let optim = tree.table["optim"].as_table().unwrap();
        assert_eq!(optim["lr"].as_float(), Some(0.3), "the file beats its bases");
        assert_eq!(optim["weight_decay"].as_float(), Some(0.5), "keys only the first base sets survive");
        assert_eq!(optim["betas"].as_array().unwrap().len(), 1, "arrays are replaced, not merged");
        assert_eq!(tree.table["data"]["workers"].as_integer(), Some(2));
        assert!(!tree.table.contains_key(BASE_KEY));

        assert_eq!(tree.provenance.get("optim.lr"), Some(&file_origin(&exp, 3)));
        assert_eq!(tree.provenance.get("optim.betas"), Some(&file_origin(&b, 3)));
        assert_eq!(tree.provenance.get("optim.weight_decay"), Some(&file_origin(&a, 3)));
        assert_eq!(tree.provenance.get("data.workers"), Some(&file_origin(&a, 6)));
        // the including file's directory anchors the relative path; `..` is folded away
        assert!(!b.to_string_lossy().contains(".."));
    }

    #[test]
    fn a_later_base_beats_an_earlier_one_and_bases_nest() {
        let dir = TestDir::new();
        dir.write("root.toml", "[schedule]\nepochs = 1\nmin_lr = 0.5\n");
        dir.write("mid.toml", "_base_ = \"root.toml\"\n[schedule]\nepochs = 2\n");
        dir.write("other.toml", "[schedule]\nepochs = 3\n");
        let exp = dir.write("exp.toml", "_base_ = [\"mid.toml\", \"other.toml\"]\n");
        let tree = load_file(&exp).unwrap();
        assert_eq!(tree.table["schedule"]["epochs"].as_integer(), Some(3));
        assert_eq!(tree.table["schedule"]["min_lr"].as_float(), Some(0.5));
    }

    #[test]
    fn a_value_replaced_by_a_table_forgets_its_old_origin() {
        let dir = TestDir::new();
        dir.write("base.toml", "[model]\narch = 3\n");
        let exp = dir.write("exp.toml", "_base_ = [\"base.toml\"]\n[model.arch]\nembed_dim = 48\n");
        let tree = load_file(&exp).unwrap();
        assert_eq!(tree.table["model"]["arch"]["embed_dim"].as_integer(), Some(48));
        assert_eq!(tree.provenance.get("model.arch.embed_dim"), Some(&file_origin(&exp, 3)));
        assert_eq!(tree.provenance.get("model.arch"), Some(&file_origin(&exp, 2)));
    }

    #[test]
    fn cycles_are_reported_with_the_chain() {
        let dir = TestDir::new();
        dir.write("a.toml", "_base_ = [\"b.toml\"]\n");
        dir.write("b.toml", "_base_ = [\"c.toml\"]\n");
        dir.write("c.toml", "_base_ = [\"a.toml\"]\n");
        let err = load_file(&dir.path("a.toml")).unwrap_err();
        let ConfigError::BaseCycle { chain } = &err else { panic!("expected a cycle, got {err}") };
        let names: Vec<_> = chain.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.toml", "b.toml", "c.toml", "a.toml"]);
        assert!(err.to_string().contains("a.toml -> "), "{err}");
    }

    #[test]
    fn a_base_listed_twice_through_different_files_is_not_a_cycle() {
        let dir = TestDir::new();
        dir.write("shared.toml", "[data]\nworkers = 1\n");
        dir.write("left.toml", "_base_ = [\"shared.toml\"]\n");
        dir.write("right.toml", "_base_ = [\"shared.toml\"]\n");
        let exp = dir.write("exp.toml", "_base_ = [\"left.toml\", \"right.toml\"]\n");
        assert!(load_file(&exp).is_ok());
    }

    #[test]
    fn a_missing_base_is_named_with_the_entry_that_lists_it() {
        let dir = TestDir::new();
        let exp = dir.write("exp/x.toml", "# experiment\n_base_ = [\"../_base_/models/swin_tinyy.toml\"]\n");
        let err = load_file(&exp).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&dir.path("_base_/models/swin_tinyy.toml").display().to_string()), "{message}");
        assert!(message.contains(&format!("listed in _base_ at {}:2", exp.display())), "{message}");
    }

    #[test]
    fn a_malformed_base_names_the_file_and_line() {
        let dir = TestDir::new();
        let exp = dir.write("x.toml", "\n_base_ = [1]\n");
        let err = load_file(&exp).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: _base_:", exp.display())), "{err}");
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let dir = TestDir::new();
        let exp = dir.write("x.toml", "[optim]\nlr = = 1\n");
        let err = load_file(&exp).unwrap_err();
        let ConfigError::Syntax { line, .. } = &err else { panic!("{err}") };
        assert_eq!(*line, 2);
        assert!(err.to_string().starts_with(&format!("{}:2:", exp.display())), "{err}");
    }

    #[test]
    fn overrides_parse_typed_values_and_fall_back_to_strings() {
        let set = |arg: &str| Override::parse(arg).unwrap().value;
        assert_eq!(set("optim.lr=1e-3"), Value::Float(1e-3));
        assert_eq!(set("data.batch_size=64"), Value::Integer(64));
        assert_eq!(set("train.ema=true"), Value::Boolean(true));
        assert_eq!(set("model.arch.depths=[2, 2, 2]"), Value::Array(vec![Value::Integer(2); 3]));
        assert_eq!(set("model.name=swin_tiny_patch4_window7_224"), Value::String("swin_tiny_patch4_window7_224".into()));
        assert_eq!(set("data.root=/data/imagenet"), Value::String("/data/imagenet".into()));
        assert_eq!(set("augmentation.auto_augment=rand-m9-mstd0.5-inc1"), Value::String("rand-m9-mstd0.5-inc1".into()));
        assert_eq!(set("model.name=\"quoted\""), Value::String("quoted".into()));
        // something that would smuggle in a second key stays one string
        assert_eq!(set("a.b=1\nc = 2"), Value::String("1\nc = 2".into()));
        for bad in ["optim.lr", "=1", "optim..lr=1", "_base_=x.toml", "optim.l r=1"] {
            assert!(matches!(Override::parse(bad), Err(ConfigError::BadOverride { .. })), "{bad}");
        }
    }

    #[test]
    fn overrides_merge_nested_keys_and_record_the_argument() {
        let dir = TestDir::new();
        let exp = dir.write("x.toml", "[model]\nname = \"m\"\n[model.arch]\ndepths = [2]\nembed_dim = 96\n");
        let mut tree = load_file(&exp).unwrap();
        tree.apply(&Override::parse("model.arch.embed_dim=48").unwrap());
        tree.apply(&Override::parse("optim.betas=[0.9, 0.95]").unwrap());
        assert_eq!(tree.table["model"]["arch"]["embed_dim"].as_integer(), Some(48));
        assert_eq!(tree.table["model"]["arch"]["depths"].as_array().unwrap().len(), 1, "siblings survive");
        assert_eq!(tree.table["optim"]["betas"].as_array().unwrap().len(), 2);
        let from_cli = Origin::CommandLine { arg: "model.arch.embed_dim=48".into() };
        assert_eq!(tree.provenance.get("model.arch.embed_dim"), Some(&from_cli));
        assert_eq!(tree.provenance.get("model.arch"), Some(&file_origin(&exp, 3)), "the table itself stays the file's");
        assert_eq!(tree.provenance.nearest("optim.betas.0"), tree.provenance.get("optim.betas"));
    }

    #[test]
    fn normalize_folds_parent_directories() {
        assert_eq!(normalize(Path::new("configs/imagenet/../_base_/x.toml")), Path::new("configs/_base_/x.toml"));
        assert_eq!(normalize(Path::new("../a/./b.toml")), Path::new("../a/b.toml"));
    }
}
