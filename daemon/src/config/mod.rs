//! Configuration: loading `switchyard.toml`, secret references, and
//! reporting problems with the file and line they come from.
//!
//! Each stage owns its section's type and defaults and checks its values
//! (`ingress::SourceConfig`, `server::HttpLimits`, `store::StoreConfig`,
//! `dispatch::{DeliveryConfig, ActionConfig}`, `admin::AdminConfig`); this
//! module reads the file into them with serde (unknown keys refused by
//! name, a mistyped value reported with file:line:col), resolves secret
//! references (`{ env = "VAR" }`, `{ file = "PATH" }`, `{ credential =
//! "NAME" }`) and gathers every problem, each at the line of the setting
//! it names (`pinpoint.rs`). The stages use only its leaf
//! parts: [`Problem`], [`de`] (durations, networks) and [`settings`].
//!
//! Host paths (`data_dir`, `plugin_dir`, `rules_dir`) that are relative are
//! taken relative to the folder of the config file, so the daemon behaves the
//! same whatever its working directory. Plugin settings are handed to the
//! plugin as they are written (a relative path there is relative to the
//! working directory; use absolute paths in production).

pub mod de;
mod pinpoint;
mod problem;
mod secret;
pub mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::admin::AdminConfig;
use crate::dispatch::{ActionConfig, DeliveryConfig};
use crate::ingress::{SourceConfig, DEFAULT_MAX_BODY_BYTES};
use crate::server::HttpLimits;
use crate::store::StoreConfig;

pub use problem::{line_col, Problem, Problems};
pub use secret::{looks_like_secret_key, names_a_place, resolve_secrets, SecretError};

/// The file as written: the top-level keys, and each section in its
/// stage's type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    /// Where providers reach this daemon from outside (`https://hooks.example.com`).
    #[serde(default)]
    public_url: Option<String>,
    data_dir: PathBuf,
    plugin_dir: PathBuf,
    rules_dir: PathBuf,
    #[serde(default = "default_max_body")]
    max_body_bytes: u64,
    #[serde(default = "default_plugin_timeout_ms")]
    plugin_timeout_ms: u64,
    #[serde(default = "default_plugin_concurrency")]
    plugin_concurrency: usize,
    #[serde(default = "default_rule_timeout_ms")]
    rule_timeout_ms: u64,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    http: HttpLimits,
    /// Read after its secret references are resolved.
    #[serde(default)]
    admin: Option<Spanned<toml::Table>>,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDRs).
    #[serde(default, deserialize_with = "de::nets")]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Read one by one after their secret references are resolved, so one
    /// bad table does not hide the others' problems.
    #[serde(default)]
    sources: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    actions: BTreeMap<String, Spanned<toml::Table>>,
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_plugin_timeout_ms() -> u64 {
    10_000
}
fn default_plugin_concurrency() -> usize {
    64
}
fn default_rule_timeout_ms() -> u64 {
    250
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages), if any.
    pub path: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Where providers reach this daemon from outside, without a trailing
    /// `/`: a source's target URL is `<public_url>/hooks/<source>`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub rules_dir: PathBuf,
    /// Largest accepted webhook body (413 above).
    pub max_body_bytes: u64,
    /// Deadline for one plugin call (verify, execute unless the action says otherwise).
    pub plugin_timeout: Duration,
    /// Most plugin calls running at once, across all plugins.
    pub plugin_concurrency: usize,
    /// Wall-clock deadline for one rule run.
    pub rule_timeout: Duration,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    /// Proxies whose `X-Forwarded-For` names the sender.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Limits of the webhook listener's connections (and, but for
    /// `max_connections`, the admin listener's).
    pub http: HttpLimits,
    /// The admin API, when `[admin]` is set.
    pub admin: Option<AdminConfig>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub actions: BTreeMap<String, ActionConfig>,
}

/// Reads and validates a config file. Besides the config, returns warnings
/// (literal secrets) that the daemon logs and `switchyard check` prints.
pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), Problems> {
    load_partial(path)?.complete()
}

/// Parses config text. `path` names the file in messages and anchors
/// relative host paths; without it they are relative to the working directory.
pub fn parse(text: &str, path: Option<&Path>) -> Result<(Config, Vec<Problem>), Problems> {
    parse_partial(text, path)?.complete()
}

/// A config that may have problems in some of its sources and actions:
/// those are left out of `config` and listed in `problems`. `switchyard
/// check` uses it to go on and report the plugins' and rules' problems too.
#[derive(Debug)]
pub struct Partial {
    pub config: Config,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Partial {
    /// The config and its warnings if nothing was wrong; else every problem.
    pub fn complete(self) -> Result<(Config, Vec<Problem>), Problems> {
        if self.problems.is_empty() {
            Ok((self.config, self.warnings))
        } else {
            Err(Problems(self.problems))
        }
    }
}

/// Reads a config file, keeping what is valid (see [`Partial`]). Fails only
/// when the file cannot be read or is not valid TOML of the right shape.
pub fn load_partial(path: &Path) -> Result<Partial, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem::new(
            path.display().to_string(),
            format!("cannot read the config file: {e}"),
        )])
    })?;
    parse_partial(&text, Some(path))
}

/// See [`Partial`].
pub fn parse_partial(text: &str, path: Option<&Path>) -> Result<Partial, Problems> {
    let file = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<config>".into());
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("{file}:{line}:{col}")
            }
            None => file.clone(),
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
    })?;

    let base = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let anchor = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let at = |span: std::ops::Range<usize>| format!("{file}:{}", line_col(text, span.start).0);
    let report = |messages: Vec<String>, problems: &mut Vec<Problem>| {
        problems.extend(messages.into_iter().map(|m| Problem::new(&file, m)));
    };

    if raw.max_body_bytes == 0 {
        report(
            vec!["max_body_bytes must be at least 1".into()],
            &mut problems,
        );
    }
    if raw.plugin_concurrency == 0 {
        report(
            vec!["plugin_concurrency must be at least 1".into()],
            &mut problems,
        );
    }
    report(raw.delivery.check(), &mut problems);
    let public_url = raw.public_url.map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url {
        let ok = (u.starts_with("https://") || u.starts_with("http://"))
            && !u.contains(['?', '#'])
            && u.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
        if !ok {
            report(
                vec![format!(
                    "public_url must be an http(s) URL without a query, such as https://hooks.example.com, not {u:?}"
                )],
                &mut problems,
            );
        }
    }
    report(raw.http.check(), &mut problems);
    let mut store = raw.store;
    store.ca_file = store.ca_file.take().map(anchor);
    if store.path.is_relative() {
        store.path = anchor(raw.data_dir.clone()).join(&store.path);
    }
    store.max_unrouted_events = store.max_unrouted_events.max(1);
    store.max_pending_jobs = store.max_pending_jobs.max(1);
    // A commit takes milliseconds; a shorter wait would refuse everything.
    store.write_timeout = store
        .write_timeout
        .max(std::time::Duration::from_millis(100));
    let (wrong, cautions) = shared_store(&mut store);
    report(wrong, &mut problems);
    warnings.extend(cautions.into_iter().map(|m| Problem::new(&file, m)));

    let admin = raw.admin.and_then(|table| {
        let location = at(table.span());
        let section = settings::resolve(table.into_inner(), "admin", &location, &mut warnings)
            .map_err(|p| problems.extend(p))
            .ok()?;
        let admin: AdminConfig = settings::section(section, "admin", &location)
            .map_err(|p| problems.push(p))
            .ok()?;
        let wrong = admin.check();
        problems.extend(wrong.iter().map(|m| Problem::new(&location, m)));
        wrong.is_empty().then_some(admin)
    });

    let mut tables = |kind: &str, raw: BTreeMap<String, Spanned<toml::Table>>| {
        let mut out = BTreeMap::new();
        for (name, table) in raw {
            let location = at(table.span());
            if let Some(table) =
                plugin_table(&name, kind, table, &location, &mut problems, &mut warnings)
            {
                out.insert(name, (table, location));
            }
        }
        out
    };
    let sources = tables("sources", raw.sources);
    let actions = tables("actions", raw.actions);
    let sources = sections(sources, SourceConfig::from_table, &mut problems);
    for s in sources.values() {
        if s.watch.is_some() && public_url.is_none() {
            problems.push(Problem::new(
                &s.location,
                format!(
                    "sources.{}.watch needs public_url (where the provider posts to: <public_url>/hooks/{})",
                    s.name, s.name
                ),
            ));
        }
    }
    let actions = sections(actions, ActionConfig::from_table, &mut problems);
    let keys = pinpoint::KeyLines::of(text);
    keys.pinpoint(&file, &mut problems);
    keys.pinpoint(&file, &mut warnings);

    Ok(Partial {
        config: Config {
            path: path.map(Path::to_path_buf),
            listen: raw.listen,
            public_url,
            data_dir: anchor(raw.data_dir),
            plugin_dir: anchor(raw.plugin_dir),
            rules_dir: anchor(raw.rules_dir),
            max_body_bytes: raw.max_body_bytes,
            plugin_timeout: Duration::from_millis(raw.plugin_timeout_ms.max(1)),
            plugin_concurrency: raw.plugin_concurrency,
            rule_timeout: Duration::from_millis(raw.rule_timeout_ms.max(1)),
            store,
            delivery: raw.delivery,
            trusted_proxies: raw.trusted_proxies,
            http: raw.http,
            admin,
            sources,
            actions,
        },
        problems,
        warnings,
    })
}

/// Each resolved table read as its stage's section type; the tables that
/// do not read are left out, their problems noted.
fn sections<T>(
    tables: BTreeMap<String, (Value, String)>,
    read: fn(&str, Value, &str) -> Result<T, Vec<Problem>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, T> {
    tables
        .into_iter()
        .filter_map(
            |(name, (table, location))| match read(&name, table, &location) {
                Ok(section) => Some((name, section)),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
        )
        .collect()
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

/// `[store] url` and `password`: the URL is PostgreSQL's, the password's
/// secret reference is resolved. Returns problems and warnings.
fn shared_store(store: &mut StoreConfig) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    if let Some(url) = &store.url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push(format!(
                "store.url must be a postgres:// URL (such as postgres://switchyard@db:5432/switchyard), not {url:?}"
            ));
        } else if store.url_shown().as_deref() != Some(url) {
            warnings.push(
                "store.url holds a password; prefer store.password = { env = \"VAR\" } or { file = \"/path\" }"
                    .to_string(),
            );
        }
    }
    if let Some(password) = store.password.as_mut() {
        if store.url.is_none() {
            problems.push("store.password needs store.url (it is PostgreSQL's)".into());
        }
        let mut value = serde_json::json!({ "password": password.0.take() });
        for literal in secret::literal_secrets(&value, "store") {
            warnings.push(format!(
                "{literal} is a literal secret in the config file; prefer {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ));
        }
        match resolve_secrets(&mut value, "store") {
            Ok(()) => password.0 = value["password"].take(),
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
        if password.value().is_none() && problems.is_empty() {
            problems.push("store.password must be a string or a secret reference".into());
        }
    }
    (problems, warnings)
}

#[cfg(test)]
mod tests;
