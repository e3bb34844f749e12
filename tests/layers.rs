//! The shape of `src/`: its top-level folders are layers in data-path
//! order, and a file may use only its own layer and the layers before it;
//! no two files import each other in a cycle, unless they are a module and
//! its own descendants.
//!
//! The test reads the source as text: every `use crate::...`,
//! `use super::...` and inline `crate::...`/`super::...` path of a
//! non-test file is resolved to the file that defines the module it names.
//! Test code (`#[cfg(test)]` items, `tests*.rs` files, `src/fuzz/`) may
//! reach anywhere. No non-test file is over 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A file in one may use those before it.
const LAYERS: &[&str] = &[
    "text", "wire", "protect", "sql", "session", "audit", "write", "read", "proxy", "ops",
];

/// Files at the root of `src/` that are not part of a layer.
const ROOT_FILES: &[&str] = &["lib.rs", "main.rs"];

/// A module path, `["sql", "analyze"]`; the crate root is empty.
type Module = Vec<String>;

struct Source {
    path: PathBuf,
    text: String,
}

#[test]
fn layers_are_used_in_order_and_files_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 50, "src/ was not read: {} files", files.len());
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, source) in &files {
        if is_test_file(module) {
            continue;
        }
        let code = strip_tests(&strip_comments_and_strings(&source.text));
        for path in paths(&code) {
            let Some(target) = resolve(module, &path, &files) else {
                continue;
            };
            if target == *module || target.starts_with(module) {
                continue;
            }
            if let (Some(from), Some(to)) = (layer(module), layer(&target)) {
                if to > from {
                    wrong.push(format!(
                        "{} uses {} ({}), a layer above its own",
                        source.path.display(),
                        target.join("::"),
                        path.join("::")
                    ));
                }
            }
            if std::env::var_os("LAYERS_DEBUG").is_some() {
                eprintln!("{} -> {}", module.join("::"), target.join("::"));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    for component in cycles(&files, &edges) {
        let root = component.iter().min_by_key(|m| m.len()).cloned().unwrap();
        if !component.iter().all(|m| m.starts_with(&root)) {
            let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            wrong.push(format!("import cycle between {}", names.join(", ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "src/ breaks its shape:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_folder_of_src_is_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            assert!(
                LAYERS.contains(&name.as_str()) || name == "fuzz",
                "src/{name}/ is not in the layer list of tests/layers.rs"
            );
        } else {
            assert!(
                ROOT_FILES.contains(&name.as_str()),
                "src/{name} belongs in a layer folder"
            );
        }
    }
}

/// The most lines a non-test source file may have.
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long: Vec<String> = modules(&src)
        .iter()
        .filter(|(module, _)| !is_test_file(module))
        .filter_map(|(_, source)| {
            let lines = source.text.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", source.path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines: {}",
        long.join(", ")
    );
}

#[test]
fn the_reader_finds_paths_in_every_form() {
    let code = "use crate::a::{b, c::{d, e as f}};\nfn g() { crate::h::i(); super::j::K; }\n\
                pub(in crate::l) fn m() {}";
    let found = paths(code);
    for want in [
        &["crate", "a", "b"][..],
        &["crate", "a", "c", "d"],
        &["crate", "a", "c", "e"],
        &["crate", "h", "i"],
        &["super", "j", "K"],
    ] {
        assert!(found.iter().any(|p| p == want), "{want:?} not in {found:?}");
    }
    assert!(
        !found.iter().any(|p| p.contains(&"l".to_owned())),
        "{found:?}"
    );
    let stripped = strip_tests("fn a() {}\n#[cfg(test)]\nmod tests { use crate::x; }\nfn b() {}");
    assert!(!stripped.contains("crate::x") && stripped.contains("fn b"));
}

/// The layer a module belongs to, by its first segment.
fn layer(module: &Module) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| module.first().map(String::as_str) == Some(l))
}

fn is_test_file(module: &Module) -> bool {
    module.first().map(String::as_str) == Some("fuzz")
        || module
            .last()
            .is_some_and(|m| m == "tests" || m.starts_with("tests_"))
}

/// Every `.rs` file under `src/`, by the module path it defines.
fn modules(src: &Path) -> BTreeMap<Module, Source> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|m| matches!(m.as_str(), "mod" | "lib" | "main"))
            {
                module.pop();
            }
            let text = fs::read_to_string(&path).unwrap();
            out.insert(module, Source { path, text });
        }
    }
    out
}

/// The code with comments blanked and string and char literals emptied.
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\''), or a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 3 + p)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 3)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        out.push_str("' '");
                        i = end;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            c => {
                // Multi-byte characters are copied whole.
                let len = utf8_len(c);
                out.push_str(std::str::from_utf8(&b[i..i + len]).unwrap_or(" "));
                i += len;
            }
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The code without the items marked `#[cfg(test)]`.
fn strip_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let b = item.as_bytes();
        let mut depth = 0usize;
        let mut end = b.len();
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every path that starts with `crate::` or `super::`, `use` trees
/// expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !is_ident(b[i - 1]);
        if word_start && b[i..].starts_with(b"use ") {
            let end = code[i..].find(';').map_or(b.len(), |e| i + e);
            expand(code[i + 4..end].trim(), &mut Vec::new(), &mut out);
            i = end;
            continue;
        }
        if word_start && (b[i..].starts_with(b"crate::") || b[i..].starts_with(b"super::")) {
            let mut end = i;
            while end < b.len() && (is_ident(b[end]) || b[end] == b':') {
                end += 1;
            }
            // `pub(in crate::x)` is a visibility, not a use of `x`.
            if code[..i].trim_end().ends_with("(in") {
                i = end;
                continue;
            }
            let path: Vec<String> = code[i..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(path);
            i = end;
            continue;
        }
        i += 1;
    }
    out.retain(|p| matches!(p.first().map(String::as_str), Some("crate" | "super")));
    out
}

/// Expands one `use` tree under `prefix`.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::").trim();
        let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let added: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().to_owned())
            .collect();
        let depth = prefix.len();
        prefix.extend(added);
        for part in split_top(body) {
            expand(part, prefix, out);
        }
        prefix.truncate(depth);
        return;
    }
    let name = tree.split(" as ").next().unwrap_or("").trim();
    if name.is_empty() {
        return;
    }
    let mut path = prefix.clone();
    path.extend(name.split("::").map(|s| s.trim().to_owned()));
    path.retain(|s| s != "self");
    out.push(path);
}

/// The parts of a `use` group, split at its top-level commas.
fn split_top(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

/// The file module a path names: the longest prefix that is a file.
fn resolve(from: &Module, path: &[String], files: &BTreeMap<Module, Source>) -> Option<Module> {
    let mut base: Module;
    let mut rest = path;
    if rest.first().map(String::as_str) == Some("crate") {
        base = Vec::new();
        rest = &rest[1..];
    } else {
        // `super` in `a/b.rs` and in `a/b/mod.rs` (module a::b) is `a`.
        base = from.clone();
        while rest.first().map(String::as_str) == Some("super") {
            base.pop();
            rest = &rest[1..];
        }
    }
    let mut full = base;
    full.extend(rest.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| files.contains_key(m))
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(
    files: &BTreeMap<Module, Source>,
    edges: &BTreeMap<Module, BTreeSet<Module>>,
) -> Vec<Vec<Module>> {
    struct Walk<'g> {
        edges: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, (usize, usize)>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g Module) -> usize {
            let n = self.index.len();
            self.index.insert(node, (n, n));
            self.stack.push(node);
            self.on_stack.insert(node);
            let mut low = n;
            for next in self.edges.get(node).into_iter().flatten() {
                match self.index.get(next) {
                    None => low = low.min(self.visit(next)),
                    Some(&(i, _)) if self.on_stack.contains(next) => low = low.min(i),
                    Some(_) => {}
                }
            }
            self.index.insert(node, (n, low));
            if low == n {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
            low
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in files.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}
