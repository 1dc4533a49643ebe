//! The tree's dependency rule, checked on the source: the stages of the
//! flow (ingress → router → dispatch → admin) import no later stage; the
//! services they call (host, store, rules) import no stage; config's leaf
//! files (problems, value formats, secrets, settings) import nothing of the
//! daemon, and no stage reads the whole `Config`. See `ARCHITECTURE.md`.

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

#[test]
fn dependencies_point_one_way() {
    // What each module may import; anything else it names is a problem.
    let allowed: &[(&str, &[&str])] = &[
        ("event", &[]),
        ("metrics", &[]),
        ("host", &["config"]),
        ("store", &["config", "event"]),
        ("rules", &["config", "event"]),
        ("ingress", &["config", "event", "host", "metrics", "store"]),
        ("router", &["config", "event", "metrics", "rules", "store"]),
        ("dispatch", &["config", "event", "host", "metrics", "store"]),
        ("subscriptions", &["config", "event", "host", "metrics"]),
    ];
    let mut problems = Vec::new();
    for (module, may) in allowed {
        let files = module_files(module);
        assert!(!files.is_empty(), "no files for {module}");
        for name in imports(&files) {
            if name != *module && !may.contains(&name.as_str()) {
                problems.push(format!("{module} imports {name}"));
            }
        }
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            if text.contains("config::Config") {
                problems.push(format!(
                    "{} reads the whole Config; a stage takes its own section",
                    file.display()
                ));
            }
        }
    }
    // Config's leaf parts import nothing of the daemon: the stages use them.
    let leaf: Vec<PathBuf> = ["problem.rs", "de.rs", "settings.rs", "secret.rs"]
        .iter()
        .map(|f| src().join("config").join(f))
        .collect();
    for name in imports(&leaf) {
        problems.push(format!("config's leaf files import {name}"));
    }
    // The loader reads the sections' types (store, ingress, dispatch,
    // admin, server's `[http]`), and nothing of what wires or runs them.
    for name in imports(&[src().join("config/mod.rs")]) {
        if ["app", "router", "rules", "host"].contains(&name.as_str()) {
            problems.push(format!("config/mod.rs imports {name}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
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
