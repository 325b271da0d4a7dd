//! From the merged tree to the typed [`ExperimentConfig`], with serde's complaints (unknown key,
//! wrong type, missing key) turned into [`Problem`]s that point at the file and line where the
//! offending key was set.
//!
//! How: the merged tree is written out as a canonical TOML document with one key per line,
//! remembering which dotted key each line holds; serde parses that document, and the span of
//! its error names the line, hence the key, hence (through the provenance) the original file
//! and line.

use toml::{Table, Value};

use super::error::{Problem, closest};
use super::schema::ExperimentConfig;
use super::tree::{Provenance, join};

/// Parses the merged tree into the typed experiment.
///
/// # Errors
/// The first unknown key, wrongly typed value or missing required key, as a [`Problem`].
pub fn parse_experiment(table: &Table, provenance: &Provenance) -> Result<ExperimentConfig, Problem> {
    // the one required key, checked here so the message does not depend on serde's spans
    if table.get("model").and_then(|m| m.get("name")).is_none() {
        return Err(Problem {
            key: "model.name".to_string(),
            origin: None,
            message: "required, but neither the experiment file nor its bases set it: name a registered model \
                      (`kiln models` lists them)"
                .to_string(),
        });
    }
    let document = CanonicalDocument::new(table);
    toml::from_str(&document.text).map_err(|err| document.problem(&err, table, provenance))
}

/// A tree written one key per line, and the dotted key of each line.
struct CanonicalDocument {
    text: String,
    line_keys: Vec<String>,
}

impl CanonicalDocument {
    fn new(table: &Table) -> Self {
        let mut document = Self { text: String::new(), line_keys: Vec::new() };
        document.write_table(table, "");
        document
    }

    fn push_line(&mut self, line: String, key: String) {
        self.text.push_str(&line);
        self.text.push('\n');
        self.line_keys.push(key);
    }

    /// Plain keys first, then sub-tables under their own headers (TOML's required order).
    fn write_table(&mut self, table: &Table, prefix: &str) {
        for (key, value) in table.iter().filter(|(_, v)| !v.is_table()) {
            self.push_line(format!("{} = {}", toml_key(key), inline_value(value)), join(prefix, key));
        }
        for (key, value) in table {
            if let Value::Table(inner) = value {
                let full = join(prefix, key);
                let header: Vec<String> = full_path(prefix, key).iter().map(|s| toml_key(s)).collect();
                self.push_line(format!("[{}]", header.join(".")), full.clone());
                self.write_table(inner, &full);
            }
        }
    }

    /// Turns serde's error into a problem at the key its span points to.
    fn problem(&self, err: &toml::de::Error, table: &Table, provenance: &Provenance) -> Problem {
        let line_key = err
            .span()
            .map(|span| self.text[..span.start.min(self.text.len())].matches('\n').count())
            .and_then(|line| self.line_keys.get(line))
            .cloned()
            .unwrap_or_default();
        let message = err.message().trim();

        if let Some(field) = backticked_after(message, "missing field ") {
            // the span covers the enclosing table: the line key is that table, or a key in it
            let table_key = if is_table(table, &line_key) { line_key } else { parent(&line_key).to_string() };
            let key = join(&table_key, field);
            return Problem {
                origin: None,
                message: "required, but neither the experiment file nor its bases set it".to_string(),
                key,
            };
        }

        let origin = provenance.nearest(&line_key).cloned();
        if let Some(field) = backticked_after(message, "unknown field ") {
            let expected = backticked_list(message.split_once("expected").map_or("", |(_, rest)| rest));
            let section = parent(&line_key);
            let hint = match closest(field, expected.iter().copied()) {
                Some(name) => format!("did you mean `{name}`? "),
                None => String::new(),
            };
            let accepted = if expected.is_empty() { "nothing".to_string() } else { expected.join(", ") };
            let place = if section.is_empty() { "the top level".to_string() } else { format!("[{section}]") };
            return Problem {
                key: line_key,
                origin,
                message: format!("unknown key; {hint}{place} accepts: {accepted}"),
            };
        }
        Problem { key: line_key, origin, message: message.to_string() }
    }
}

fn full_path(prefix: &str, key: &str) -> Vec<String> {
    let mut path: Vec<String> = if prefix.is_empty() { Vec::new() } else { prefix.split('.').map(str::to_string).collect() };
    path.push(key.to_string());
    path
}

fn is_table(table: &Table, key: &str) -> bool {
    if key.is_empty() {
        return true;
    }
    let mut current = table;
    for segment in key.split('.') {
        match current.get(segment) {
            Some(Value::Table(inner)) => current = inner,
            _ => return false,
        }
    }
    true
}

fn parent(key: &str) -> &str {
    key.rfind('.').map_or("", |i| &key[..i])
}

/// A key as TOML needs it written: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        quoted(key)
    }
}

/// A TOML basic string on one line (JSON's escapes are TOML's: `\n`, `\"`, `\\`, `\uXXXX`).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// A value on one line: arrays and tables inline.
fn inline_value(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(inline_value).collect::<Vec<_>>().join(", ")),
        Value::Table(table) => format!(
            "{{ {} }}",
            table.iter().map(|(k, v)| format!("{} = {}", toml_key(k), inline_value(v))).collect::<Vec<_>>().join(", ")
        ),
        Value::String(text) => quoted(text),
        scalar => scalar.to_string(),
    }
}

/// The first `` `name` `` after `prefix` in serde's message.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Every `` `name` `` in `text`.
fn backticked_list(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_document_has_one_key_per_line() {
        let table: Table = toml::from_str(
            "task = \"classification\"\n[model]\nname = \"m\"\narch = { depths = [2, 2], \"odd key\" = 1 }\n[data]\nbatch_size = 8\n",
        )
        .unwrap();
        let document = CanonicalDocument::new(&table);
        let reparsed: Table = toml::from_str(&document.text).unwrap();
        assert_eq!(reparsed, table);
        let lines: Vec<&str> = document.text.lines().collect();
        assert_eq!(lines.len(), document.line_keys.len());
        for (line, key) in lines.iter().zip(&document.line_keys) {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(line.contains(leaf.trim_matches('"')) || line.contains("odd key"), "{line} / {key}");
        }
        assert!(document.line_keys.contains(&"model.arch.depths".to_string()));
    }

    #[test]
    fn strings_stay_on_their_line() {
        let table: Table = toml::from_str("[model]\nname = \"a\\nb \\\"c\\\"\"\n[data]\nworkers = 1\n").unwrap();
        let document = CanonicalDocument::new(&table);
        assert_eq!(document.text.lines().count(), document.line_keys.len(), "{}", document.text);
        assert_eq!(toml::from_str::<Table>(&document.text).unwrap(), table);
    }

    #[test]
    fn serde_message_helpers() {
        let message = "unknown field `lrr`, expected one of `name`, `lr`, `weight_decay`";
        assert_eq!(backticked_after(message, "unknown field "), Some("lrr"));
        assert_eq!(backticked_list(message.split_once("expected").unwrap().1), ["name", "lr", "weight_decay"]);
        assert_eq!(backticked_after("missing field `name`", "missing field "), Some("name"));
    }
}
