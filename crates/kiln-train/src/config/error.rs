//! What can go wrong loading an experiment, worded for the person at the terminal: every message
//! names the file, the dotted key and the line (or the `--set` argument) and says what to do.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of a TOML file.
    File {
        /// The file, as reached from the experiment file (`configs/imagenet/../_base_/...` is
        /// shown as `configs/_base_/...`).
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
    },
    /// A `--set KEY=VALUE` command-line argument.
    CommandLine {
        /// The argument as typed, without `--set`.
        arg: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::CommandLine { arg } => write!(f, "command line `--set {arg}`"),
        }
    }
}

/// One thing wrong with a configuration: an unknown key, a value of the wrong type, or an
/// impossible value.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key (`optim.lr`, `model.arch.embed_dim`).
    pub key: String,
    /// Where the offending value was set; `None` when no file sets it (a default, or a required
    /// key that is missing).
    pub origin: Option<Origin>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}: {}", self.key, self.message),
            None => write!(f, "{} (not set in any file): {}", self.key, self.message),
        }
    }
}

/// Everything that can go wrong loading an experiment configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (the experiment or one of its `_base_` files) that cannot be read.
    #[error("cannot read {}{}: {reason}", .path.display(), listed_in_note(.listed_in))]
    Read {
        /// The file.
        path: PathBuf,
        /// The `_base_` entry that names it (none for the experiment file itself).
        listed_in: Option<Origin>,
        /// Why, in words.
        reason: String,
    },
    /// A file that is not valid TOML.
    #[error("{}:{line}:{column}: not valid TOML: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A `_base_` value that is not a path or a list of paths.
    #[error("{origin}: _base_: {message}")]
    BadBase {
        /// Where `_base_` is set.
        origin: Origin,
        /// What is wrong with it.
        message: String,
    },
    /// Files that inherit from each other in a loop.
    #[error(
        "_base_ inheritance forms a cycle: {}; remove one of these _base_ entries",
        .chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> ")
    )]
    BaseCycle {
        /// The files of the loop, the first repeated at the end.
        chain: Vec<PathBuf>,
    },
    /// A `--set` argument that is not `dotted.key=value`.
    #[error("`--set {arg}`: {message}")]
    BadOverride {
        /// The argument as typed.
        arg: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration that parses but is wrong: unknown keys, wrong types, impossible values.
    #[error("{} is not a valid experiment ({} problem{}):\n{}",
        .file.display(),
        .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The experiment file that was loaded.
        file: PathBuf,
        /// Every problem found, in section order.
        problems: Vec<Problem>,
    },
    /// The resolved configuration could not be written into the run directory.
    #[error("cannot write {}: {reason}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
}

fn listed_in_note(origin: &Option<Origin>) -> String {
    match origin {
        Some(origin) => format!(" (listed in _base_ at {origin})"),
        None => String::new(),
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
/// A candidate that `name` starts with (or that starts with `name`) counts as close too:
/// `optimizer` suggests `optim`.
pub(crate) fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let by_spelling = candidates.iter().map(|&c| (kiln_models::registry::edit_distance(name, c), c)).filter(|(d, _)| *d <= limit).min();
    let by_prefix = || {
        candidates
            .iter()
            .copied()
            .filter(|c| c.len().min(name.len()) >= 3 && (name.starts_with(c) || c.starts_with(name)))
            .max_by_key(|c| c.len())
    };
    by_spelling.map(|(_, c)| c).or_else(by_prefix)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_strangers() {
        let names = ["lr", "weight_decay", "momentum"];
        assert_eq!(closest("weight_decy", names), Some("weight_decay"));
        assert_eq!(closest("lrr", names), Some("lr"));
        assert_eq!(closest("batch_size", names), None);
        assert_eq!(closest("optimizer", ["optim", "model"]), Some("optim"));
    }
}
