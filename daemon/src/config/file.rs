//! Reading a config file: its text, its TOML into a type with each error
//! at file:line:col naming the setting, and the tables of named sections
//! (`[sources.NAME]`, `[actions.NAME]`) checked, their secrets resolved
//! and each read into its stage's type — one bad table never hiding the
//! others' problems.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use toml::Spanned;

use super::{line_col, settings, Problem, Problems};

/// The text of the file at `path`.
pub fn read(path: &Path) -> Result<String, Problems> {
    std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem::new(
            path.display().to_string(),
            format!("cannot read the config file: {e}"),
        )])
    })
}

/// `text` read as TOML into `T`; a wrong value or shape is one problem at
/// `file:line:col` naming the setting.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Problems> {
    toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("{file}:{line}:{col}")
            }
            None => file.to_string(),
        };
        let message = e.message().trim();
        let message = match e.span().and_then(|span| key_at(text, span.start)) {
            // Name the setting unless the message does (an unknown field).
            Some(key)
                if !message.contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(&key))) =>
            {
                format!("{key}: {message}")
            }
            _ => message.to_string(),
        };
        Problems(vec![Problem::new(location, message)])
    })
}

/// The dotted name of the setting written on the line of `offset`
/// (`http.header_timeout`): the key before `=` under the nearest table
/// header above. Only for messages; `None` when the line holds no key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line, _) = line_col(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line - 1)?;
    let key = here.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[["))
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// Where in the file the spans of its tables are (`file:line`).
pub struct Lines<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Lines<'_> {
    /// `file:line` of a span.
    pub fn at(&self, span: std::ops::Range<usize>) -> String {
        format!("{}:{}", self.file, line_col(self.text, span.start).0)
    }
}

/// The named tables of one kind (`sources`, `actions`), each read into its
/// stage's type by `read` once its name and `plugin` key are right and its
/// secrets resolved. Tables that do not read are left out, their problems
/// noted; literal secrets are warnings.
pub fn named_sections<T>(
    kind: &str,
    tables: BTreeMap<String, Spanned<toml::Table>>,
    lines: &Lines<'_>,
    read: fn(&str, Value, &str) -> Result<T, Vec<Problem>>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (name, table) in tables {
        let location = lines.at(table.span());
        let Some(table) = plugin_table(&name, kind, table, &location, problems, warnings) else {
            continue;
        };
        match read(&name, table, &location) {
            Ok(section) => {
                out.insert(name, section);
            }
            Err(p) => problems.extend(p),
        }
    }
    out
}

/// A section that is one table (`[admin]`), its secrets resolved, read
/// into `T`, whose `check` lists what is wrong with its values.
pub fn section<T: DeserializeOwned>(
    name: &str,
    table: Spanned<toml::Table>,
    lines: &Lines<'_>,
    check: fn(&T) -> Vec<String>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<T> {
    let location = lines.at(table.span());
    let resolved = settings::resolve(table.into_inner(), name, &location, warnings)
        .map_err(|p| problems.extend(p))
        .ok()?;
    let value: T = settings::section(resolved, name, &location)
        .map_err(|p| problems.push(p))
        .ok()?;
    let wrong = check(&value);
    problems.extend(wrong.iter().map(|m| Problem::new(&location, m)));
    wrong.is_empty().then_some(value)
}

/// A source's or action's table with its secrets resolved, once its name
/// and its `plugin` key are right; else `None` and the problems noted.
fn plugin_table(
    name: &str,
    kind: &str,
    table: Spanned<toml::Table>,
    location: &str,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Value> {
    let scope = format!("{kind}.{name}");
    // Names appear in URLs (`/hooks/{source}`) and rules (`action("name")`).
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !name_ok {
        problems.push(Problem::new(
            location,
            format!("{scope}: a name may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    let table = table.into_inner();
    match table.get("plugin") {
        Some(toml::Value::String(p)) if !p.is_empty() => {}
        Some(_) => {
            problems.push(Problem::new(
                location,
                format!("{scope}.plugin must be a plugin name"),
            ));
            return None;
        }
        None => {
            problems.push(Problem::new(
                location,
                format!("{scope} has no `plugin` key (e.g. plugin = \"tight\")"),
            ));
            return None;
        }
    }
    settings::resolve(table, &scope, location, warnings)
        .map_err(|p| problems.extend(p))
        .ok()
}
