//! `switchyard listen`: a running Switchyard's events, as they are stored,
//! forwarded to a local endpoint — develop against live traffic without
//! exposing the laptop.
//!
//! It connects out to the running daemon's admin API with a token (the
//! read-only one is enough), reads `GET /v1/events/stream` (server-sent
//! events, with the events list's filters), and posts each event's
//! envelope to the local URL its type routes to, signed per Standard
//! Webhooks under a secret of its own that it prints at start. One line per
//! event with the local answer. A dropped connection is made again after a
//! pause, resuming after the last event it had; the ids it has seen in the
//! stream's look-back window are dropped when they come again, so no event
//! is missed or forwarded twice. It only reads: nothing is acknowledged,
//! retried or recorded on the server.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use globset::{Glob, GlobMatcher};
use serde_json::Value;
use switchyard::store::now_ms;
use switchyard_plugin_support::standard_webhooks;
use switchyard_plugin_support::{Secret, SecretEncoding};

use super::args::ListenArgs;

/// Where events of some types go.
struct Target {
    types: Option<GlobMatcher>,
    url: String,
}

/// `TYPE_GLOB=URL` or `URL`.
fn target(text: &str) -> Result<Target> {
    let (types, url) = match text.split_once('=') {
        Some((glob, url)) if !glob.contains("://") => (Some(glob), url),
        _ => (None, text),
    };
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--forward-to {text:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--forward-to {text:?}: an http:// or https:// URL");
    }
    let types = types
        .map(|g| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .with_context(|| format!("--forward-to {text:?}: the type pattern"))
        })
        .transpose()?;
    Ok(Target {
        types,
        url: url.to_string(),
    })
}

/// The first target whose pattern takes the type; one without a pattern
/// takes every type.
fn route<'a>(targets: &'a [Target], kind: &str) -> Option<&'a Target> {
    targets
        .iter()
        .find(|t| t.types.as_ref().is_none_or(|g| g.is_match(kind)))
}

/// A new `whsec_` secret: 24 random bytes.
fn new_secret() -> Result<String> {
    let mut key = [0u8; 24];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// One server-sent event's fields, as far as a stream of events uses them.
#[derive(Default)]
struct Sse {
    id: Option<String>,
    data: String,
}

/// The ids seen within the stream's look-back of the newest: what a
/// resumed stream may send again.
struct Seen {
    ids: BTreeSet<String>,
    newest: Option<String>,
}

impl Seen {
    /// Whether the id is new (and now seen).
    fn first(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        if self.newest.as_deref().is_none_or(|n| id > n) {
            self.newest = Some(id.to_string());
            use switchyard::admin::stream::{ms_of, LOOKBACK};
            let keep = LOOKBACK.as_millis() as i64 * 2;
            let floor = switchyard::store::ulid_floor(ms_of(id) - keep);
            self.ids = self.ids.split_off(&floor);
        }
        true
    }
}

pub fn listen(args: &ListenArgs) -> Result<ExitCode> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("--token-file {} is empty", args.token_file.display());
    }
    let targets = args
        .forward_to
        .iter()
        .map(|t| target(t))
        .collect::<Result<Vec<_>>>()?;
    if targets.is_empty() && args.rules.is_none() {
        bail!("--forward-to: where to post the events (a URL, or TYPE_GLOB=URL); or --rules: a rules folder to try on them");
    }
    let local = args
        .rules
        .as_deref()
        .map(super::listen_rules::LocalRules::new)
        .transpose()?;
    let actions = match (args.run_actions, &args.config) {
        (false, _) => None,
        (true, Some(config)) if local.is_some() => {
            Some(super::listen_rules::LocalActions::load(config)?)
        }
        (true, Some(_)) => bail!("--run-actions runs the calls of --rules: give a rules folder"),
        (true, None) => bail!(
            "--run-actions runs the local rules' calls on a local config's actions: give --config"
        ),
    };
    let secret_text = match &args.secret {
        Some(s) => s.clone(),
        None => new_secret()?,
    };
    let secret = Secret::decode(&secret_text, SecretEncoding::Whsec, "--secret")
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(t) = &args.events {
        query.push(("type", t.clone()));
    }
    if let Some(s) = &args.source {
        query.push(("source", s.clone()));
    }
    if let Some(since) = &args.since {
        query.push(("since", super::parse_when(since)?.to_string()));
    }
    let from = args.from.trim_end_matches('/');
    let stream_url = reqwest::Url::parse_with_params(&format!("{from}/v1/events/stream"), &query)
        .with_context(|| format!("--from {from:?}"))?;
    if targets.is_empty() {
        println!(
            "Ready: trying the rules of {} on the events of {from} ({})",
            args.rules.as_deref().unwrap_or(Path::new(".")).display(),
            if actions.is_some() {
                "their calls run on the local config's actions"
            } else {
                "no action runs"
            }
        );
    } else {
        println!(
            "Ready: forwarding the events of {from} to {}",
            targets
                .iter()
                .map(|t| match &t.types {
                    Some(g) => format!("{} ({})", t.url, g.glob()),
                    None => t.url.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("Signing secret: {secret_text} (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)");
    }
    let _ = std::io::stdout().flush();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(Listener {
        stream_url,
        from: from.to_string(),
        token,
        targets,
        secret,
        local,
        actions,
    }))
}

/// What a `listen` does with each event.
struct Listener {
    stream_url: reqwest::Url,
    from: String,
    token: String,
    targets: Vec<Target>,
    secret: Secret,
    local: Option<super::listen_rules::LocalRules>,
    /// The local config's actions, with `--run-actions`.
    actions: Option<super::listen_rules::LocalActions>,
}

async fn run(job: Listener) -> Result<ExitCode> {
    let stream_url = job.stream_url.clone();
    let token = job.token.clone();
    let client = reqwest::Client::builder()
        .user_agent(concat!("switchyard-listen/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let mut seen = Seen {
        ids: BTreeSet::new(),
        newest: None,
    };
    let mut pause = Duration::from_millis(250);
    loop {
        let mut url = stream_url.clone();
        if let Some(last) = &seen.newest {
            url.query_pairs_mut().append_pair("after", last);
        }
        let answer = client
            .get(url)
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await;
        let mut response = match answer {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status() == 401 || r.status() == 403 => {
                bail!(
                    "{} refused the token ({}): give a token of its [admin] (read_only_token is enough) in --token-file",
                    stream_url.origin().ascii_serialization(),
                    r.status()
                );
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                bail!("the stream was refused ({status}): {body}");
            }
            failed => {
                match failed {
                    Ok(r) => eprintln!("the stream answered {}; again in {pause:?}", r.status()),
                    Err(e) => eprintln!(
                        "cannot reach {} ({}); again in {pause:?}",
                        stream_url.origin().ascii_serialization(),
                        innermost(&e)
                    ),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(250);
        println!(
            "Connected to {}; waiting for events",
            stream_url.origin().ascii_serialization()
        );
        let _ = std::io::stdout().flush();
        let mut buffer = String::new();
        let mut event = Sse::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("the stream was cut ({}); resuming", innermost(&e));
                    break;
                }
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_string();
                buffer.drain(..=end);
                if line.is_empty() {
                    let done = std::mem::take(&mut event);
                    if let Some(id) = done.id.filter(|_| !done.data.is_empty()) {
                        if seen.first(&id) {
                            handle(&client, &job, &id, &done.data).await;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("id:") {
                    event.id = Some(v.trim_start().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
        eprintln!("the stream ended; resuming");
        tokio::time::sleep(pause).await;
    }
}

/// What an error comes down to: its innermost cause (`Connection refused
/// (os error 111)` rather than `error sending request`).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One event of the stream: forwarded, and tried on the local rules
/// beside what the live ones did.
async fn handle(client: &reqwest::Client, job: &Listener, id: &str, data: &str) {
    let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let kind = event["type"].as_str().unwrap_or_default();
    let when = event["received_at_ms"]
        .as_i64()
        .map(super::rfc3339_ms)
        .unwrap_or_default();
    if !job.targets.is_empty() {
        forward(client, &job.targets, &job.secret, id, &event, &when).await;
    }
    if let Some(local) = &job.local {
        if job.targets.is_empty() {
            println!("{when}  {kind:<28}  {id}");
        }
        let (text, calls) = local.describe(&event["envelope"]);
        print!("{text}");
        let (live, live_calls) = super::listen_rules::live_calls(
            client,
            &job.from,
            &job.token,
            id,
            Duration::from_secs(5),
        )
        .await;
        print!("{live}");
        if let Some(live_calls) = live_calls {
            print!("{}", super::listen_rules::verdict(&calls, &live_calls));
        }
        if let Some(actions) = &job.actions {
            print!("{}", actions.run(&calls, &event["envelope"]).await);
        }
    }
    let _ = std::io::stdout().flush();
}

/// Posts one event's envelope to its target, signed; prints a line.
async fn forward(
    client: &reqwest::Client,
    targets: &[Target],
    secret: &Secret,
    id: &str,
    event: &Value,
    when: &str,
) {
    let kind = event["type"].as_str().unwrap_or_default();
    let Some(target) = route(targets, kind) else {
        println!("{when}  {kind:<28}  {id}  (no --forward-to takes it)");
        return;
    };
    let body = serde_json::to_vec(&event["envelope"]).unwrap_or_default();
    let timestamp = now_ms() / 1000;
    let signature = standard_webhooks::sign(secret, id, timestamp, &body);
    let started = Instant::now();
    let answer = client
        .post(&target.url)
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let took = started.elapsed().as_millis();
    match answer {
        Ok(r) => println!(
            "{when}  {kind:<28}  {id}  -> POST {} [{}] {took} ms",
            target.url,
            r.status().as_u16()
        ),
        Err(e) => println!(
            "{when}  {kind:<28}  {id}  -> POST {} failed: {}",
            target.url,
            innermost(&e)
        ),
    }
    let _ = std::io::stdout().flush();
}
