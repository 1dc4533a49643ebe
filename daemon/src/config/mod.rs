//! Configuration: the TOML file, its validation and secret resolution.
//!
//! Owns: parsing `switchyard.toml` into [`Config`], resolving the secret
//! references in plugin settings (`{ env = "VAR" }`, `{ file = "PATH" }`),
//! and reporting every problem with the file and line it comes from.
//! Calls nothing else in the daemon; every other stage reads a `Config`.
//!
//! Host paths (`data_dir`, `plugin_dir`, `rules_dir`) that are relative are
//! taken relative to the folder of the config file, so the daemon behaves the
//! same whatever its working directory. Plugin settings are handed to the
//! plugin as they are written (a relative path there is relative to the
//! working directory; use absolute paths in production).

mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

pub use crate::store::Durability;

pub use secret::{looks_like_secret_key, resolve_secrets, SecretError};

/// Default body limit for one webhook: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// One problem found in the configuration, rules or plugins, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` or `file:line:col`, or just a file.
    pub location: String,
    pub message: String,
}

impl Problem {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A set of problems; the error type of loading anything the user wrote.
#[derive(Debug, Clone, Default)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
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
    store: RawStore,
    #[serde(default)]
    delivery: RawDelivery,
    /// `[http]`: limits of both listeners.
    #[serde(default)]
    http: RawHttp,
    /// `[admin]`: the admin API's listener and token.
    #[serde(default)]
    admin: Option<Spanned<toml::Table>>,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDRs).
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    actions: BTreeMap<String, Spanned<toml::Table>>,
}

/// Parses an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn parse_nets(
    items: &[String],
    scope: &str,
    location: &str,
    problems: &mut Vec<Problem>,
) -> Vec<ipnet::IpNet> {
    items
        .iter()
        .filter_map(|item| {
            let net = parse_net(item);
            if net.is_none() {
                problems.push(Problem::new(
                    location,
                    format!("{scope}: {item:?} is not an IP address or network (a.b.c.d, a.b.c.d/n, IPv6)"),
                ));
            }
            net
        })
        .collect()
}

/// Setting names whose values are credentials: a request carrying one of
/// these values (in a header, the query or the path) has it redacted
/// before it is stored.
fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "header_value", "key"]
        .iter()
        .any(|w| k.contains(w))
}

/// The credential values among a plugin's settings (strings, or lists of them).
fn credential_values(settings: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(map) = settings {
        for (k, v) in map {
            if !is_credential_key(k) {
                continue;
            }
            match v {
                Value::String(s) if s.len() >= 4 => out.push(s.clone()),
                Value::Array(items) => out.extend(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|s| s.len() >= 4)
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
    }
    out
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

/// `[store]`: where and how events are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: PathBuf,
    durability: Durability,
    max_size_mb: Option<u64>,
    retention: String,
    dedup_window: String,
    max_unrouted_events: u64,
    max_pending_jobs: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: PathBuf::from("switchyard.db"),
            durability: Durability::Full,
            max_size_mb: None,
            retention: "30d".into(),
            dedup_window: "7d".into(),
            max_unrouted_events: 10_000,
            max_pending_jobs: 100_000,
        }
    }
}

/// `[delivery]`: how action jobs are retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDelivery {
    retry_schedule: Vec<String>,
    jitter: f64,
    concurrency: usize,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(String::from)
                .to_vec(),
            jitter: 0.2,
            concurrency: 64,
        }
    }
}

/// `[http]`: what a connection to either listener may take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    header_timeout: String,
    body_timeout: String,
    idle_timeout: String,
    write_timeout: String,
    max_connections: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpLimits::default();
        let text = |t: Duration| humantime::format_duration(t).to_string();
        RawHttp {
            header_timeout: text(d.header_timeout),
            body_timeout: text(d.body_timeout),
            idle_timeout: text(d.idle_timeout),
            write_timeout: text(d.write_timeout),
            max_connections: d.max_connections,
            max_headers: d.max_headers,
            max_header_bytes: d.max_header_bytes,
        }
    }
}

/// What one connection to a listener may take, and how many at once: the
/// bounds that keep a client from holding the daemon's sockets and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's start, or the first byte of a later request, to
    /// the end of the request head; a slower client is closed.
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body: 408, then closed.
    pub body_timeout: Duration,
    /// A keep-alive connection without a request for this long is closed.
    pub idle_timeout: Duration,
    /// An answer the client takes no byte of for this long: closed.
    pub write_timeout: Duration,
    /// Connections at once; beyond, new ones get 503 and are closed. Also
    /// bounded by the open-file limit (see `server`).
    pub max_connections: usize,
    /// Header lines in one request (431 beyond).
    pub max_headers: usize,
    /// Bytes of request line and headers together (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// The admin listener's connection bound unless `[admin] max_connections`
/// says otherwise: a few operators and a scraper.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

/// Store settings, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The database file (relative paths are under `data_dir`).
    pub path: PathBuf,
    pub durability: Durability,
    pub max_size_bytes: Option<u64>,
    /// Routed events and finished jobs older than this are pruned.
    pub retention: Duration,
    /// A delivery with a dedup key seen within this window is not routed again.
    pub dedup_window: Duration,
    /// Beyond this many events waiting for rules, ingress answers 503.
    pub max_unrouted_events: u64,
    /// Beyond this many jobs waiting to run, ingress answers 503.
    pub max_pending_jobs: u64,
}

/// Delivery settings, validated.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delay before each retry; its length + 1 is the most attempts a job gets.
    pub retry_schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    /// Most jobs running at once, across actions.
    pub concurrency: usize,
}

fn duration(text: &str, key: &str, problems: &mut Vec<Problem>, file: &str) -> Duration {
    match humantime::parse_duration(text.trim()) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem::new(
                file,
                format!("{key}: {text:?} is not a duration like \"30s\", \"5m\", \"7d\" ({e})"),
            ));
            Duration::ZERO
        }
    }
}

fn http_limits(raw: &RawHttp, problems: &mut Vec<Problem>, file: &str) -> HttpLimits {
    let mut timeout = |text: &str, key: &str| {
        let known = problems.len();
        let d = duration(text, &format!("http.{key}"), problems, file);
        if problems.len() == known && d < Duration::from_millis(100) {
            problems.push(Problem::new(
                file,
                format!("http.{key} must be at least 100ms"),
            ));
        }
        d
    };
    let limits = HttpLimits {
        header_timeout: timeout(&raw.header_timeout, "header_timeout"),
        body_timeout: timeout(&raw.body_timeout, "body_timeout"),
        idle_timeout: timeout(&raw.idle_timeout, "idle_timeout"),
        write_timeout: timeout(&raw.write_timeout, "write_timeout"),
        max_connections: raw.max_connections,
        max_headers: raw.max_headers,
        max_header_bytes: raw.max_header_bytes,
    };
    for (key, value, least) in [
        ("max_connections", limits.max_connections, 1),
        ("max_headers", limits.max_headers, 1),
        // The request line, a Host header and room for a signature.
        ("max_header_bytes", limits.max_header_bytes, 1024),
    ] {
        if value < least {
            problems.push(Problem::new(
                file,
                format!("http.{key} must be at least {least}"),
            ));
        }
    }
    limits
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages), if any.
    pub path: Option<PathBuf>,
    pub listen: SocketAddr,
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

/// A `[sources.NAME]` table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub plugin: String,
    /// The plugin's own settings, secrets resolved, as JSON.
    pub settings: Value,
    /// Where the table starts, for messages (`file:line`).
    pub location: String,
    /// Header names whose values are credentials: stored as `[redacted]`
    /// (beside the usual ones, such as `Authorization`).
    pub redact_headers: Vec<String>,
    /// Sender addresses or networks allowed; empty allows all (403 otherwise).
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Credential values from the settings (secrets, tokens, passwords):
    /// wherever a request carries one, it is redacted before storing.
    pub credentials: Vec<String>,
}

/// `[admin]`: the admin API (status, events, replay, dead letters, actions,
/// reload) on its own listener, behind a bearer token.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token (resolved; never logged).
    pub token: String,
    /// Connections at once on the admin listener.
    pub max_connections: usize,
}

/// An `[actions.NAME]` table.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    pub name: String,
    pub plugin: String,
    pub settings: Value,
    pub location: String,
    /// Deadline of one execute call.
    pub timeout: Option<Duration>,
    /// Most jobs of this action running at once.
    pub concurrency: usize,
    /// Consecutive retryable failures that open the circuit breaker (0: never).
    pub breaker_failures: u32,
    /// How long an open breaker pauses the action.
    pub breaker_cooldown: Duration,
    /// A parameter whose value orders jobs: jobs with the same value run
    /// one at a time, in order.
    pub order_by: Option<String>,
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
        Problems(vec![Problem::new(location, e.message().trim().to_string())])
    })?;

    let base = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let anchor = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let at = |span: std::ops::Range<usize>| format!("{file}:{}", line_col(text, span.start).0);

    if raw.max_body_bytes == 0 {
        problems.push(Problem::new(&file, "max_body_bytes must be at least 1"));
    }
    if raw.plugin_concurrency == 0 || raw.delivery.concurrency == 0 {
        problems.push(Problem::new(
            &file,
            "plugin_concurrency and delivery.concurrency must be at least 1",
        ));
    }
    let store = StoreConfig {
        path: if raw.store.path.is_relative() {
            anchor(raw.data_dir.clone()).join(&raw.store.path)
        } else {
            raw.store.path.clone()
        },
        durability: raw.store.durability,
        max_size_bytes: raw.store.max_size_mb.map(|mb| mb * 1024 * 1024),
        retention: duration(
            &raw.store.retention,
            "store.retention",
            &mut problems,
            &file,
        ),
        dedup_window: duration(
            &raw.store.dedup_window,
            "store.dedup_window",
            &mut problems,
            &file,
        ),
        max_unrouted_events: raw.store.max_unrouted_events.max(1),
        max_pending_jobs: raw.store.max_pending_jobs.max(1),
    };
    let delivery = DeliveryConfig {
        retry_schedule: raw
            .delivery
            .retry_schedule
            .iter()
            .enumerate()
            .map(|(i, d)| {
                duration(
                    d,
                    &format!("delivery.retry_schedule[{i}]"),
                    &mut problems,
                    &file,
                )
            })
            .collect(),
        jitter: raw.delivery.jitter,
        concurrency: raw.delivery.concurrency,
    };
    if !(0.0..1.0).contains(&delivery.jitter) {
        problems.push(Problem::new(
            &file,
            "delivery.jitter must be at least 0 and below 1",
        ));
    }

    let http = http_limits(&raw.http, &mut problems, &file);
    let trusted_proxies = parse_nets(
        &raw.trusted_proxies,
        "trusted_proxies",
        &file,
        &mut problems,
    );
    let admin = raw.admin.and_then(|table| {
        let location = at(table.span());
        let value = match plugin_settings(table.into_inner(), "admin", &location, &mut warnings) {
            Ok(v) => v,
            Err(p) => {
                problems.extend(p);
                return None;
            }
        };
        let listen = value
            .get("listen")
            .and_then(Value::as_str)
            .and_then(|l| l.parse::<SocketAddr>().ok());
        let token = value.get("token").and_then(Value::as_str).map(str::to_owned);
        let max_connections = match value.get("max_connections") {
            None => DEFAULT_ADMIN_MAX_CONNECTIONS,
            Some(n) => match n.as_u64() {
                Some(n) if n >= 1 => n as usize,
                _ => {
                    problems.push(Problem::new(
                        &location,
                        "admin.max_connections must be a whole number, at least 1",
                    ));
                    DEFAULT_ADMIN_MAX_CONNECTIONS
                }
            },
        };
        if let Some(m) = value.as_object() {
            for k in m
                .keys()
                .filter(|k| !matches!(k.as_str(), "listen" | "token" | "max_connections"))
            {
                problems.push(Problem::new(
                    &location,
                    format!("admin.{k} is not a setting (listen, token, max_connections)"),
                ));
            }
        }
        match (listen, token) {
            (Some(listen), Some(token)) if token.len() >= 16 => Some(AdminConfig {
                listen,
                token,
                max_connections,
            }),
            (None, _) => {
                problems.push(Problem::new(
                    &location,
                    "admin.listen must be an address such as \"127.0.0.1:8081\"",
                ));
                None
            }
            _ => {
                problems.push(Problem::new(
                    &location,
                    "admin.token must be set, at least 16 characters (e.g. { credential = \"admin-token\" })",
                ));
                None
            }
        }
    });
    let mut sources = BTreeMap::new();
    for (name, table) in raw.sources {
        let location = at(table.span());
        let scope = format!("sources.{name}");
        check_name(&name, &scope, &location, &mut problems);
        let mut table = table.into_inner();
        let Some(plugin) = take_plugin(&mut table, &scope, &location, &mut problems) else {
            continue;
        };
        let redact_headers = match table.remove("redact_headers") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_str) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                problems.push(Problem::new(
                    &location,
                    format!("{scope}.redact_headers must be a list of header names"),
                ));
                Vec::new()
            }
        };
        let allow_ips = match table.remove("allow_ips") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_str) => {
                let items: Vec<String> = items
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                parse_nets(
                    &items,
                    &format!("{scope}.allow_ips"),
                    &location,
                    &mut problems,
                )
            }
            Some(_) => {
                problems.push(Problem::new(
                    &location,
                    format!("{scope}.allow_ips must be a list of addresses or networks"),
                ));
                Vec::new()
            }
        };
        match plugin_settings(table, &scope, &location, &mut warnings) {
            Ok(settings) => {
                let credentials = credential_values(&settings);
                sources.insert(
                    name.clone(),
                    SourceConfig {
                        name,
                        plugin,
                        settings,
                        location,
                        redact_headers,
                        allow_ips,
                        credentials,
                    },
                );
            }
            Err(p) => problems.extend(p),
        }
    }

    let mut actions = BTreeMap::new();
    for (name, table) in raw.actions {
        let location = at(table.span());
        let scope = format!("actions.{name}");
        check_name(&name, &scope, &location, &mut problems);
        let mut table = table.into_inner();
        let Some(plugin) = take_plugin(&mut table, &scope, &location, &mut problems) else {
            continue;
        };
        let timeout = match take_u64(&mut table, "timeout_ms", &scope, &location, &mut problems) {
            Some(0) => {
                problems.push(Problem::new(
                    &location,
                    format!("{scope}.timeout_ms must be at least 1"),
                ));
                None
            }
            other => other.map(Duration::from_millis),
        };
        let concurrency = take_u64(&mut table, "concurrency", &scope, &location, &mut problems)
            .unwrap_or(8) as usize;
        let breaker_failures = take_u64(
            &mut table,
            "breaker_failures",
            &scope,
            &location,
            &mut problems,
        )
        .unwrap_or(5)
        .min(u32::MAX as u64) as u32;
        let breaker_cooldown = match table.remove("breaker_cooldown") {
            None => Duration::from_secs(30),
            Some(toml::Value::String(text)) => {
                match humantime::parse_duration(&text) {
                    Ok(d) if !d.is_zero() => d,
                    _ => {
                        problems.push(Problem::new(
                        &location,
                        format!("{scope}.breaker_cooldown must be a duration such as \"30s\" or \"5m\""),
                    ));
                        Duration::from_secs(30)
                    }
                }
            }
            Some(_) => {
                problems.push(Problem::new(
                    &location,
                    format!("{scope}.breaker_cooldown must be a duration such as \"30s\""),
                ));
                Duration::from_secs(30)
            }
        };
        let order_by = match table.remove("order_by") {
            None => None,
            Some(toml::Value::String(key)) if !key.is_empty() => Some(key),
            Some(_) => {
                problems.push(Problem::new(
                    &location,
                    format!("{scope}.order_by must name a parameter"),
                ));
                None
            }
        };
        if concurrency == 0 {
            problems.push(Problem::new(
                &location,
                format!("{scope}.concurrency must be at least 1"),
            ));
        }
        match plugin_settings(table, &scope, &location, &mut warnings) {
            Ok(settings) => {
                actions.insert(
                    name.clone(),
                    ActionConfig {
                        name,
                        plugin,
                        settings,
                        location,
                        timeout,
                        concurrency: concurrency.max(1),
                        breaker_failures,
                        breaker_cooldown,
                        order_by,
                    },
                );
            }
            Err(p) => problems.extend(p),
        }
    }

    Ok(Partial {
        config: Config {
            path: path.map(Path::to_path_buf),
            listen: raw.listen,
            data_dir: anchor(raw.data_dir),
            plugin_dir: anchor(raw.plugin_dir),
            rules_dir: anchor(raw.rules_dir),
            max_body_bytes: raw.max_body_bytes,
            plugin_timeout: Duration::from_millis(raw.plugin_timeout_ms.max(1)),
            plugin_concurrency: raw.plugin_concurrency,
            rule_timeout: Duration::from_millis(raw.rule_timeout_ms.max(1)),
            store,
            delivery,
            trusted_proxies,
            http,
            admin,
            sources,
            actions,
        },
        problems,
        warnings,
    })
}

/// Names appear in URLs (`/hooks/{source}`) and rules (`action("name")`).
fn check_name(name: &str, scope: &str, location: &str, problems: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        problems.push(Problem::new(
            location,
            format!("{scope}: a name may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
}

fn take_plugin(
    table: &mut toml::Table,
    scope: &str,
    location: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match table.remove("plugin") {
        Some(toml::Value::String(p)) if !p.is_empty() => Some(p),
        Some(_) => {
            problems.push(Problem::new(
                location,
                format!("{scope}.plugin must be a plugin name"),
            ));
            None
        }
        None => {
            problems.push(Problem::new(
                location,
                format!("{scope} has no `plugin` key (e.g. plugin = \"tight\")"),
            ));
            None
        }
    }
}

fn take_u64(
    table: &mut toml::Table,
    key: &str,
    scope: &str,
    location: &str,
    problems: &mut Vec<Problem>,
) -> Option<u64> {
    match table.remove(key) {
        None => None,
        Some(toml::Value::Integer(n)) if n >= 0 => Some(n as u64),
        Some(_) => {
            problems.push(Problem::new(
                location,
                format!("{scope}.{key} must be a non-negative whole number"),
            ));
            None
        }
    }
}

/// Converts a plugin's settings to JSON, resolving secret references and
/// warning about literal secrets.
fn plugin_settings(
    table: toml::Table,
    scope: &str,
    location: &str,
    warnings: &mut Vec<Problem>,
) -> Result<Value, Vec<Problem>> {
    let mut value = toml_to_json(toml::Value::Table(table));
    for literal in secret::literal_secrets(&value, scope) {
        warnings.push(Problem::new(
            location,
            format!(
                "{literal} is a literal secret in the config file; \
                 prefer {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ),
        ));
    }
    resolve_secrets(&mut value, scope).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| Problem::new(location, e.to_string()))
            .collect::<Vec<_>>()
    })?;
    Ok(value)
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests;
