//! The house rule that imports run one way: no two source files of a crate refer to each other.
//! A file refers to another when it names an item through `crate::` (a `use`, nested braces
//! included, or a path in code) or `super::` that resolves into the other file; a `mod x;`
//! declaration is not a reference, a `pub use x::Y` re-export is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/lib.rs` -> `[]`, `src/a/mod.rs` and `src/a.rs` ->
/// `[a]`, `src/a/b.rs` -> `[a, b]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("lib" | "main" | "mod")) {
        parts.pop();
    }
    parts
}

/// The `crate::` paths a `use` tree names, each as its segments: `crate::{a::{b, c}, d::E}` ->
/// `[a, b]`, `[a, c]`, `[d, E]`.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let mut path = prefix.to_vec();
        path.extend(tree.split("::").map(|s| s.trim().split(" as ").next().unwrap().trim().to_string()).filter(|s| !s.is_empty()));
        out.push(path);
        return;
    };
    let mut path = prefix.to_vec();
    path.extend(tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&path, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand(&path, &inner[start..], out);
    }
}

/// The paths (from the crate root) that `text`, the source of the module `here`, refers to.
fn references(here: &[String], text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `super::` inside a file's own `#[cfg(test)] mod tests` is the file itself: only the part
    // before the first test module counts for `super`
    let before_tests = text.split("#[cfg(test)]").next().unwrap();
    // the module a file's `super` names: its parent (`src/a/mod.rs` is `a`, so its parent is the root)
    let parent: Vec<String> = here[..here.len().saturating_sub(1)].to_vec();
    // an inline module's `super` is the file it sits in: `super::` counts only outside braces
    let depth_at = |offset: usize| before_tests[..offset].matches('{').count() - before_tests[..offset].matches('}').count().min(before_tests[..offset].matches('{').count());
    for (source, root, scan) in [("crate::", Vec::new(), text), ("super::", parent, before_tests)] {
        let mut rest = scan;
        while let Some(at) = rest.find(source) {
            let offset = scan.len() - rest.len() + at;
            let top_level = source == "crate::" || depth_at(offset) == 0;
            let boundary = top_level && rest[..at].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let tail = &rest[at + source.len()..];
            if boundary {
                // a `use` tree runs to its `;`, a path in code to the first character that
                // cannot be part of one
                let end = if tail.starts_with('{') {
                    tail.find(';').unwrap_or(tail.len())
                } else {
                    tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{' || c == '}' || c == ',' || c == ' ' || c == '\n'))
                        .unwrap_or(tail.len())
                };
                let tree = &tail[..end];
                let tree = if tree.contains('{') { tree } else { tree.split(|c: char| c == ' ' || c == '\n' || c == ',').next().unwrap() };
                expand(&root, tree, &mut paths);
            }
            rest = tail;
        }
    }
    // `use child::X` (a re-export in `lib.rs` or a `mod.rs`) names a child module relatively
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let statement = &rest[at + 4..rest[at..].find(';').map_or(rest.len(), |end| at + end)];
        let starts_line = rest[..at].trim_end_matches(|c: char| c == ' ' || c == '\t').trim_end_matches("pub(crate)").trim_end_matches("pub").trim_end_matches(' ');
        let at_line_start = starts_line.is_empty() || starts_line.ends_with('\n');
        if at_line_start && !["crate::", "super::", "self::"].iter().any(|p| statement.starts_with(p)) {
            if let Some((first, tail)) = statement.split_once("::") {
                let mut path = here.to_vec();
                path.push(first.trim().to_string());
                expand(&path, tail, &mut paths);
            }
        }
        rest = &rest[at + 4..];
    }
    paths
}

/// What a file re-exports (`pub use a::B;`): each name with the path it stands for, so a
/// reference to `crate::B` resolves into the file that defines `B`.
fn reexports(here: &[String], text: &str) -> BTreeMap<String, Vec<String>> {
    let mut names = BTreeMap::new();
    for prefix in ["pub use ", "pub(crate) use "] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let statement = &rest[at..rest[at..].find(';').map_or(rest.len(), |end| at + end + 1)];
            // the statement alone, read as a file that holds nothing else
            for path in references(here, &statement[statement.find("use ").unwrap()..]) {
                if let Some(name) = path.last().filter(|n| n.as_str() != "*") {
                    names.insert(name.clone(), path.clone());
                }
            }
            rest = &rest[at + prefix.len()..];
        }
    }
    names
}

/// The module file a path resolves into: its longest prefix that is a module file, followed
/// through that file's re-exports; `None` for another crate's item (`use image::RgbImage`
/// read as a child module that does not exist).
fn resolve(
    mut path: Vec<String>,
    modules: &BTreeMap<Vec<String>, PathBuf>,
    reexported: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
) -> Option<Vec<String>> {
    for _ in 0..8 {
        if path.is_empty() {
            return None;
        }
        let target = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p)).unwrap_or_default();
        match path.get(target.len()).and_then(|name| reexported.get(&target)?.get(name)) {
            Some(source) if source[..] != path[..target.len() + 1] => {
                path = source.iter().chain(&path[target.len() + 1..]).cloned().collect();
            }
            // an item of the root that no file defines is another crate's, named relatively
            _ if target.is_empty() && reexported[&target].values().any(|p| p[..] == path[..path.len().min(p.len())]) => return None,
            _ => return Some(target),
        }
    }
    Some(path)
}

#[test]
fn no_two_source_files_import_each_other() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut pairs = Vec::new();
    let mut checked = 0;
    for krate in fs::read_dir(crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_path(&src, f), f.clone())).collect();
        // comments name paths without importing them
        let code: BTreeMap<Vec<String>, String> = files
            .iter()
            .map(|f| {
                let text = fs::read_to_string(f).unwrap();
                (module_path(&src, f), text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n"))
            })
            .collect();
        let reexported: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = code.iter().map(|(m, text)| (m.clone(), reexports(m, text))).collect();
        let mut edges: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
        for (here, text) in &code {
            for path in references(here, text) {
                let Some(target) = resolve(path, &modules, &reexported) else { continue };
                if target != *here {
                    edges.insert((here.clone(), target));
                }
            }
        }
        for (a, b) in &edges {
            if a < b && edges.contains(&(b.clone(), a.clone())) {
                pairs.push(format!("{} <-> {}", modules[a].display(), modules[b].display()));
            }
        }
        checked += files.len();
    }
    assert!(checked > 50, "found only {checked} source files under {}", crates.display());
    assert!(pairs.is_empty(), "source files that import each other:\n{}", pairs.join("\n"));
}

#[test]
fn the_import_scanner_sees_nested_uses_super_and_paths_in_code() {
    let text = "use crate::a::{b::{C, D}, e};\nuse super::f::G;\nfn x() { crate::h::i(); }\n#[cfg(test)]\nmod tests { use super::*; }";
    let found = references(&["m".into(), "n".into()], text);
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    for expected in ["a::b::C", "a::b::D", "a::e", "m::f::G", "h::i"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
    // the test module's `super::*` is the file itself
    assert!(!names.iter().any(|n| n == "m::*"), "{names:?}");
}
