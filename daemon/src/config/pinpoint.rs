//! Where in the file a setting is written: a problem found by reading a
//! table (a mistyped key, a bad value, a literal secret) names its setting
//! (`sources.partner.watch: …`); it is reported at that setting's line,
//! not at the table's header line.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::problem::{line_col, Problem};

/// Every key of a TOML text by its dotted path (`sources.tight.secret`),
/// with the line it is written on.
pub struct KeyLines(HashMap<String, usize>);

impl KeyLines {
    /// The keys of `text`; none when it does not parse (its problem is
    /// reported on its own).
    pub fn of(text: &str) -> KeyLines {
        let mut lines = HashMap::new();
        if let Ok(root) = DeTable::parse(text) {
            walk(text, "", root.get_ref(), &mut lines);
        }
        KeyLines(lines)
    }

    /// Moves each problem of `file` whose message starts with a setting's
    /// dotted path (`scope.key: …`, `scope.key is …`) to that setting's
    /// line. A path that names no written key (a missing one) keeps its
    /// place; a deeper one (`allow_ips[1]`) is found at its key.
    pub fn pinpoint(&self, file: &str, problems: &mut [Problem]) {
        for p in problems {
            if !(p.location == file || p.location.starts_with(&format!("{file}:"))) {
                continue;
            }
            let Some(path) = p.message.split([':', ' ']).next() else {
                continue;
            };
            let path = path.split('[').next().unwrap_or(path);
            if let Some(line) = self.0.get(path) {
                p.location = format!("{file}:{line}");
            }
        }
    }
}

/// Bounded by the text: each key is visited once.
fn walk(text: &str, prefix: &str, table: &DeTable<'_>, out: &mut HashMap<String, usize>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let DeValue::Table(inner) = value.get_ref() {
            walk(text, &path, inner, out);
        }
        out.entry(path)
            .or_insert_with(|| line_col(text, key.span().start).0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_naming_a_setting_moves_to_its_line() {
        let text = "[sources.partner]\nplugin = \"webhook\"\n\nwatch = \"soon\"\n[sources.partner.subscription]\napi_key = \"k\"\n";
        let keys = KeyLines::of(text);
        let mut problems = vec![
            Problem::new(
                "c.toml:1",
                "sources.partner.watch: \"soon\" is not a duration",
            ),
            Problem::new(
                "c.toml:1",
                "sources.partner.subscription.api_key is a literal secret",
            ),
            Problem::new("c.toml:1", "sources.partner.missing: required"),
            Problem::new("other.toml:1", "sources.partner.watch: x"),
        ];
        keys.pinpoint("c.toml", &mut problems);
        let at: Vec<&str> = problems.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(at, ["c.toml:4", "c.toml:6", "c.toml:1", "other.toml:1"]);
    }
}
