//! The whole configuration, `switchyard.toml`, composed from the stages'
//! sections where the stages are assembled: each stage owns its section's
//! type, defaults and checks (`ingress::SourceConfig`, `store::StoreConfig`,
//! `dispatch::{DeliveryConfig, ActionConfig}`, `listener::{HttpLimits,
//! AdminConfig}`); this module names them, reads the file into them with
//! serde (unknown keys refused by name, a mistyped value reported with
//! file:line:col) through `config::file`, and gathers every problem, each
//! at the line of the setting it names.
//!
//! Host paths (`data_dir`, `plugin_dir`, `rules_dir`) that are relative are
//! taken relative to the folder of the config file, so the daemon behaves the
//! same whatever its working directory. Plugin settings are handed to the
//! plugin as they are written (a relative path there is relative to the
//! working directory; use absolute paths in production).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{self, de, file, Problem, Problems};
use crate::dispatch::{ActionConfig, DeliveryConfig};
use crate::ingress::{SourceConfig, DEFAULT_MAX_BODY_BYTES};
use crate::listener::{AdminConfig, HttpLimits};
use crate::store::StoreConfig;
use crate::telemetry::TelemetryConfig;

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
    #[serde(default)]
    telemetry: TelemetryConfig,
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
    /// Traces (`[telemetry]`): where they go, how many.
    pub telemetry: TelemetryConfig,
    /// The admin API, when `[admin]` is set.
    pub admin: Option<AdminConfig>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub actions: BTreeMap<String, ActionConfig>,
}

impl Config {
    /// What ingress holds each webhook to, from the top-level keys and
    /// `[store]`'s bounds.
    pub fn ingress_limits(&self) -> crate::ingress::Limits {
        crate::ingress::Limits {
            plugin_timeout: self.plugin_timeout,
            max_body_bytes: self.max_body_bytes,
            dedup_window: self.store.dedup_window,
            write_timeout: self.store.write_timeout,
            max_unrouted_events: self.store.max_unrouted_events,
            max_pending_jobs: self.store.max_pending_jobs,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// See [`load`].
    pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), Problems> {
        load(path)
    }
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
    parse_partial(&file::read(path)?, Some(path))
}

/// See [`Partial`].
pub fn parse_partial(text: &str, path: Option<&Path>) -> Result<Partial, Problems> {
    let file = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<config>".into());
    let raw: RawConfig = file::parse(text, &file)?;
    let lines = file::Lines { file: &file, text };
    let base = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let anchor = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut note = |messages: Vec<String>| {
        problems.extend(messages.into_iter().map(|m| Problem::new(&file, m)));
    };
    note(raw.check());
    note(raw.delivery.check());
    note(raw.http.check());
    note(raw.telemetry.check());
    let public_url = raw
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_string());
    note(
        public_url
            .iter()
            .filter_map(|u| check_public_url(u))
            .collect(),
    );
    let mut store = raw.store;
    store.ca_file = store.ca_file.take().map(anchor);
    store.path = anchor(raw.data_dir.clone()).join(&store.path);
    let (wrong, cautions) = store_section(&mut store);
    note(wrong);
    warnings.extend(cautions.into_iter().map(|m| Problem::new(&file, m)));

    let admin = raw.admin.and_then(|table| {
        file::section(
            "admin",
            table,
            &lines,
            AdminConfig::check,
            &mut problems,
            &mut warnings,
        )
    });
    let sources = file::named_sections(
        "sources",
        raw.sources,
        &lines,
        SourceConfig::from_table,
        &mut problems,
        &mut warnings,
    );
    let actions = file::named_sections(
        "actions",
        raw.actions,
        &lines,
        ActionConfig::from_table,
        &mut problems,
        &mut warnings,
    );
    if public_url.is_none() {
        problems.extend(sources.values().filter(|s| s.watch.is_some()).map(|s| {
            Problem::new(
                &s.location,
                format!(
                    "sources.{}.watch needs public_url (where the provider posts to: <public_url>/hooks/{})",
                    s.name, s.name
                ),
            )
        }));
    }
    let keys = config::KeyLines::of(text);
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
            telemetry: raw.telemetry,
            admin,
            sources,
            actions,
        },
        problems,
        warnings,
    })
}

impl RawConfig {
    /// What is wrong with the top-level values.
    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_body_bytes == 0 {
            problems.push("max_body_bytes must be at least 1".into());
        }
        if self.plugin_concurrency == 0 {
            problems.push("plugin_concurrency must be at least 1".into());
        }
        problems
    }
}

/// What is wrong with `public_url` (trailing `/` trimmed), if anything.
fn check_public_url(u: &str) -> Option<String> {
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && !u.contains(['?', '#'])
        && u.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    (!ok).then(|| {
        format!(
            "public_url must be an http(s) URL without a query, such as https://hooks.example.com, not {u:?}"
        )
    })
}

/// `[store]` made whole: its bounds at least what works, the URL
/// PostgreSQL's, the password's secret reference resolved. Returns
/// problems and warnings.
fn store_section(store: &mut StoreConfig) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    store.max_unrouted_events = store.max_unrouted_events.max(1);
    store.max_pending_jobs = store.max_pending_jobs.max(1);
    // A commit takes milliseconds; a shorter wait would refuse everything.
    store.write_timeout = store.write_timeout.max(Duration::from_millis(100));
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
        for literal in config::literal_secrets(&value, "store") {
            warnings.push(format!(
                "{literal} is a literal secret in the config file; prefer {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ));
        }
        match config::resolve_secrets(&mut value, "store") {
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
#[path = "config_tests.rs"]
mod tests;
