//! The tree's dependency rule, checked on the source: the daemon's modules
//! stand in layers (`LAYERS`), each importing only those before it — the
//! leaves (`config` imports nothing of the daemon), the services the stages
//! call, the stages in the order of the flow, then what assembles, operates
//! and serves them; and no file's imports lead back to it. See
//! `ARCHITECTURE.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The daemon's top-level modules a set of files names as `crate::NAME`.
fn imports(files: &[PathBuf]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_files(name: &str) -> Vec<PathBuf> {
    let dir = src().join(name);
    let mut files = Vec::new();
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    } else {
        files.push(src().join(format!("{name}.rs")));
    }
    files
}

/// The daemon's top-level modules, each importing only those before it:
/// the leaves; the services the stages call; the stages in the order of
/// the flow; the listeners; the whole assembled (`app`, where the file's
/// sections are composed); what people ask of it (`admin`); the
/// standalone daemon (`server`).
const LAYERS: &[&str] = &[
    "config",
    "event",
    "metrics",
    "telemetry",
    "host",
    "store",
    "catalog",
    "rules",
    "ingress",
    "router",
    "dispatch",
    "subscriptions",
    "listener",
    "app",
    "admin",
    "server",
];

#[test]
fn each_module_imports_only_those_before_it() {
    let mut top: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| !["lib", "main", "cli"].contains(&n.as_str()))
        .collect();
    top.sort();
    let mut listed: Vec<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(top, listed, "every module has its place in LAYERS");
    let mut problems = Vec::new();
    for (at, module) in LAYERS.iter().enumerate() {
        for name in imports(&module_files(module)) {
            let Some(place) = LAYERS.iter().position(|m| *m == name) else {
                continue;
            };
            if place > at {
                problems.push(format!("{module} imports {name}, which comes after it"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The module path of a source file (`store/sqlite/mod.rs` → store::sqlite).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

/// The source files each file names through `crate::`, `super::` or
/// `self::` paths (each path taken to the deepest module that is a file),
/// outside comments and its inline tests.
fn file_imports(files: &[PathBuf]) -> Vec<BTreeSet<usize>> {
    let paths: Vec<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let find = |parts: &[String]| {
        (1..=parts.len())
            .rev()
            .find_map(|n| paths.iter().position(|p| p[..] == parts[..n]))
    };
    files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            let text = std::fs::read_to_string(file).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
            let mut out = BTreeSet::new();
            for line in text.lines() {
                let code = line.split("//").next().unwrap();
                for base in ["crate::", "super::", "self::"] {
                    for (at, _) in code.match_indices(base) {
                        let before = code[..at].chars().last();
                        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            continue;
                        }
                        let rest: Vec<String> = code[at + base.len()..]
                            .split("::")
                            .map(|s| {
                                s.chars()
                                    .take_while(|c| {
                                        c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'
                                    })
                                    .collect::<String>()
                            })
                            .take_while(|s| !s.is_empty())
                            .collect();
                        let mut parts = match base {
                            "crate::" => Vec::new(),
                            "self::" => paths[i].clone(),
                            _ => paths[i][..paths[i].len().saturating_sub(1)].to_vec(),
                        };
                        let mut rest = rest.into_iter().peekable();
                        while rest.peek().is_some_and(|s| s == "super") {
                            rest.next();
                            parts.pop();
                        }
                        parts.extend(rest);
                        if let Some(j) = find(&parts) {
                            if j != i {
                                out.insert(j);
                            }
                        }
                    }
                }
            }
            out
        })
        .collect()
}

#[test]
fn no_file_imports_its_way_back_to_itself() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.retain(|f| !f.starts_with(src().join("cli")) && !f.ends_with("main.rs"));
    let edges = file_imports(&files);
    // Depth-first search; a grey node met again closes a circle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    fn visit(
        n: usize,
        edges: &[BTreeSet<usize>],
        mark: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[n] = Mark::Grey;
        stack.push(n);
        for &m in &edges[n] {
            match mark[m] {
                Mark::Grey => {
                    let from = stack.iter().position(|&s| s == m).unwrap();
                    return Some(stack[from..].to_vec());
                }
                Mark::White => {
                    if let Some(circle) = visit(m, edges, mark, stack) {
                        return Some(circle);
                    }
                }
                Mark::Black => {}
            }
        }
        stack.pop();
        mark[n] = Mark::Black;
        None
    }
    let mut mark = vec![Mark::White; files.len()];
    for n in 0..files.len() {
        if mark[n] == Mark::White {
            if let Some(circle) = visit(n, &edges, &mut mark, &mut Vec::new()) {
                let names: Vec<String> = circle
                    .iter()
                    .map(|&i| files[i].strip_prefix(src()).unwrap().display().to_string())
                    .collect();
                panic!("an import circle: {} → back", names.join(" → "));
            }
        }
    }
    // The check sees a circle where there is one.
    assert!(
        edges.iter().any(|e| !e.is_empty()),
        "no imports found at all"
    );
}

#[test]
fn no_source_file_is_over_about_600_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("tests.rs"))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 650).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {}", long.join(", "));
}
