//! Where config problems are collected: every check (the model's fields, the semantic checks)
//! reports through a [`Checker`], which knows where each key was set.

use super::error::{Origin, Problem};
use super::tree::Provenance;

/// Collects [`Problem`]s, each located where its key was set.
pub struct Checker<'a> {
    provenance: &'a Provenance,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    /// A checker that locates keys through `provenance`.
    pub fn new(provenance: &'a Provenance) -> Self {
        Self { provenance, problems: Vec::new() }
    }

    /// Records that `key` is wrong.
    pub fn fail(&mut self, key: &str, message: impl Into<String>) {
        let origin: Option<Origin> = self.provenance.get(key).cloned();
        self.problems.push(Problem { key: key.to_string(), origin, message: message.into() });
    }

    /// `(set at FILE:LINE)` / `(set by --set ...)` / `(the default)`, for messages that involve
    /// a second key.
    pub fn where_set(&self, key: &str) -> String {
        match self.provenance.get(key) {
            Some(origin @ Origin::File { .. }) => format!("set at {origin}"),
            Some(origin @ Origin::CommandLine { .. }) => format!("set on the {origin}"),
            None => "the default".to_string(),
        }
    }

    /// Where `key` was set, if a file or `--set` set it.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.provenance.get(key)
    }

    /// Everything recorded, in the order found.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    pub(super) fn positive(&mut self, key: &str, value: f64, what: &str) {
        if !(value.is_finite() && value > 0.0) {
            self.fail(key, format!("{what} must be a positive number, got {value}"));
        }
    }

    pub(super) fn non_negative(&mut self, key: &str, value: f64, what: &str) {
        if !(value.is_finite() && value >= 0.0) {
            self.fail(key, format!("{what} must be 0 or more, got {value}"));
        }
    }

    pub(super) fn probability(&mut self, key: &str, value: f64, what: &str) {
        if !(0.0..=1.0).contains(&value) {
            self.fail(key, format!("{what} is a probability in [0, 1], got {value}"));
        }
    }

    pub(super) fn below_one(&mut self, key: &str, value: f64, what: &str) {
        if !(0.0..1.0).contains(&value) {
            self.fail(key, format!("{what} must be in [0, 1), got {value}"));
        }
    }

    pub(super) fn at_least_one(&mut self, key: &str, value: usize, what: &str) {
        if value == 0 {
            self.fail(key, format!("{what} must be at least 1, got 0"));
        }
    }
}
