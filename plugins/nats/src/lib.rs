//! # NATS JetStream action plugin
//!
//! Publishes each job to a subject that a JetStream stream takes: the job
//! is done when the stream acknowledges it (it has stored the message), and
//! retried when it does not (no stream takes the subject, no ack in time,
//! the connection down). Each message's `Nats-Msg-Id` is the job's
//! idempotency key, so JetStream itself drops a retried publish whose first
//! ack was lost (within the stream's duplicate window, 2 minutes unless the
//! stream says otherwise): a consumer sees each job once.
//!
//! One client per action, made on first use; the client reconnects by
//! itself after a lost connection, and a client that could not be made is
//! made again on the next attempt (the host's retry schedule spaces them).
//! The jobs ready at once are published together and their acks awaited
//! together (`execute_batch`, one operation at the server: ABI 1.7).
//!
//! A message: the body is the rule's `body` parameter or the event's
//! envelope (`switchyard_plugin_support::message`); headers `Nats-Msg-Id`,
//! `event_id`, `event_type`, `source`, `idempotency_key`, `Content-Type`,
//! and `traceparent` / `tracestate` when the host traces.
//!
//! Settings: `url` (`nats://host:4222`, `tls://…` for TLS; several,
//! comma-separated), `username` and `password` or `token` (secret
//! references), `subject` (the default subject; else `switchyard.` and the
//! event type), `ca_file` (a PEM file of the CAs to trust for TLS, beside
//! the system's), `cert_file` and `key_file` (a client certificate, for a
//! server that verifies clients), `connect_timeout_ms` (5000). A job's
//! `subject` parameter overrides the default.
//!
//! Failures: the credentials refused (an authorization violation) and a
//! message larger than the server takes are permanent — a dead letter
//! naming the reason, never the password; a subject no stream takes, no
//! ack in time, and anything about the connection are retryable.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::message::{batch, client_cert, destination, Message};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    subject: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    5000
}

pub struct NatsAction {
    /// The action's own runtime: one thread keeps the client's connection
    /// (pings, reconnects, acks) going between calls.
    runtime: tokio::runtime::Runtime,
    url: String,
    options: Config,
    subject: Option<String>,
    client: Mutex<Option<async_nats::jetstream::Context>>,
}

/// A subject a message can be published to: tokens split by `.`, none
/// empty, no wildcard, no white space.
fn check_subject(subject: &str) -> Result<(), String> {
    let bad = subject.is_empty()
        || subject.len() > 4096
        || subject.chars().any(|c| c.is_whitespace() || c.is_control())
        || subject
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">");
    if bad {
        return Err(format!(
            "'{subject}' is not a subject a message can be published to (tokens split by '.', none empty, no '*' or '>', no white space)"
        ));
    }
    Ok(())
}

/// What a failed publish or ack means for the job.
fn publish_outcome(e: &async_nats::jetstream::context::PublishError, subject: &str) -> Outcome {
    match e.kind() {
        PublishErrorKind::StreamNotFound => Outcome::Retryable(format!(
            "nats: no JetStream stream takes subject '{subject}'"
        )),
        PublishErrorKind::MaxPayloadExceeded => Outcome::Permanent(format!("nats refused: {e}")),
        _ => Outcome::Retryable(format!("nats: {e}")),
    }
}

/// One job's publish, ready to go.
struct Publish {
    subject: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl NatsAction {
    fn publish_of(&self, job: &Job) -> Result<Publish, String> {
        let message = Message::of(job);
        let default = match &self.subject {
            Some(s) => s.clone(),
            None => format!("switchyard.{}", message.event_type),
        };
        let subject = destination(job, "subject", &default)?.to_string();
        check_subject(&subject)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.idempotency_key.as_str());
        headers.insert(
            "Content-Type",
            if message.json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            },
        );
        for (k, v) in message.fields() {
            headers.insert(k, v);
        }
        Ok(Publish {
            subject,
            headers,
            body: message.body.into_bytes(),
        })
    }

    /// The JetStream context, connecting first if there is none.
    async fn context(&self, timeout: Duration) -> Result<async_nats::jetstream::Context, Outcome> {
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let mut c = c.clone();
            c.set_timeout(timeout);
            return Ok(c);
        }
        let c = &self.options;
        let mut options = ConnectOptions::new()
            .name(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .connection_timeout(Duration::from_millis(
                c.connect_timeout_ms.clamp(1, 600_000),
            ));
        if let (Some(u), Some(p)) = (&c.username, &c.password) {
            options = options.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &c.token {
            options = options.token(t.clone());
        }
        if let Some(ca) = &c.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&c.cert_file, &c.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = match options.connect(self.url.as_str()).await {
            Ok(client) => client,
            Err(e) => {
                return Err(match e.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        Outcome::Permanent(format!(
                            "nats refused the credentials ({}): check the action's username and password or token",
                            e.kind()
                        ))
                    }
                    ConnectErrorKind::ServerParse => {
                        Outcome::Permanent(format!("nats settings: url: {e}"))
                    }
                    _ => Outcome::Retryable(format!("nats: {e}")),
                })
            }
        };
        let context = async_nats::jetstream::new(client);
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let context = guard.get_or_insert(context).clone();
        let mut context = context;
        context.set_timeout(timeout);
        Ok(context)
    }

    /// Publishes every message, then awaits every ack: one outcome each.
    async fn publish_all(
        &self,
        publishes: Vec<Publish>,
        timeout: Duration,
    ) -> Vec<Option<Outcome>> {
        let context = match self.context(timeout).await {
            Ok(c) => c,
            Err(failed) => return vec![Some(failed); publishes.len()],
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; publishes.len()];
        let mut waiting: Vec<(usize, String, PublishAckFuture)> = Vec::new();
        for (i, p) in publishes.into_iter().enumerate() {
            match context
                .publish_with_headers(p.subject.clone(), p.headers, p.body.into())
                .await
            {
                Ok(ack) => waiting.push((i, p.subject, ack)),
                Err(e) => outcomes[i] = Some(publish_outcome(&e, &p.subject)),
            }
        }
        for (i, subject, ack) in waiting {
            outcomes[i] = Some(match ack.await {
                Ok(ack) => Outcome::Done(Some(json!({
                    "stream": ack.stream,
                    "seq": ack.sequence,
                    "duplicate": ack.duplicate,
                }))),
                Err(e) => publish_outcome(&e, &subject),
            });
        }
        outcomes
    }

    fn run(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        let timeout = timeout.max(Duration::from_millis(1));
        let send = |publishes: Vec<Publish>| {
            let n = publishes.len();
            self.runtime.block_on(async {
                tokio::time::timeout(timeout, self.publish_all(publishes, timeout))
                    .await
                    .unwrap_or_else(|_| vec![None; n])
            })
        };
        batch(
            jobs,
            |job| self.publish_of(job),
            send,
            "nats: no ack within the action's timeout",
        )
    }
}

impl Action for NatsAction {
    fn create(_host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("nats settings: {e}"))?;
        if c.username.is_some() != c.password.is_some() {
            return Err("nats settings: username and password go together".into());
        }
        if c.token.is_some() && c.username.is_some() {
            return Err("nats settings: a token or a username and password, not both".into());
        }
        for server in c.url.split(',') {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("nats settings: url: {e}"))?;
        }
        if let Some(s) = &c.subject {
            check_subject(s).map_err(|e| format!("nats settings: subject: {e}"))?;
        }
        if let Some(ca) = &c.ca_file {
            if !ca.is_file() {
                return Err(format!(
                    "nats settings: ca_file: {} is not a file",
                    ca.display()
                ));
            }
        }
        client_cert("nats", c.cert_file.as_deref(), c.key_file.as_deref())?;
        // One crypto provider for the process's rustls (tls://); another
        // library may have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("nats: cannot start its runtime: {e}"))?;
        Ok(NatsAction {
            runtime,
            url: c.url.clone(),
            subject: c.subject.clone(),
            options: c,
            client: Mutex::new(None),
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        self.run(std::slice::from_ref(job), timeout)
            .pop()
            .unwrap_or_else(|| Outcome::Retryable("nats: no outcome".into()))
    }

    /// The ready jobs are published together and their acks awaited
    /// together.
    const BATCHES: bool = true;
    /// A batch is one operation at the server (as the redis action's
    /// pipeline): one connection, the acks of all its messages awaited at
    /// once.
    const BATCH_IS_ONE_OPERATION: bool = true;

    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        self.run(jobs, timeout)
    }
}

switchyard_plugin_api::export_action!("nats", NatsAction);

#[cfg(test)]
mod tests {
    use super::*;

    fn action(config: Value) -> Result<NatsAction, String> {
        NatsAction::create(Host::detached(), config)
    }

    use switchyard_plugin_support::message::sample_job as job;

    #[test]
    fn settings_are_checked_by_name() {
        assert!(action(json!({"url": "nats://127.0.0.1:1"})).is_ok());
        let e = action(json!({"url": "nats://127.0.0.1:1", "subjekt": "x"}))
            .err()
            .unwrap();
        assert!(e.contains("subjekt"), "{e}");
        let e = action(json!({"url": "nats://127.0.0.1:1", "subject": "a.>"}))
            .err()
            .unwrap();
        assert!(e.contains("subject"), "{e}");
        let e = action(json!({"url": "nats://127.0.0.1:1", "username": "u"}))
            .err()
            .unwrap();
        assert!(e.contains("go together"), "{e}");
        let e = action(json!({"url": "nats://127.0.0.1:1", "ca_file": "/nonexistent.pem"}))
            .err()
            .unwrap();
        assert!(e.contains("ca_file"), "{e}");
        let e = action(json!({"url": "nats://127.0.0.1:1", "cert_file": "/etc/hostname"}))
            .err()
            .unwrap();
        assert_eq!(e, "nats settings: cert_file and key_file go together");
    }

    #[test]
    fn the_subject_is_the_jobs_the_actions_or_the_event_type_and_the_key_dedupes() {
        let a = action(json!({"url": "nats://127.0.0.1:1"})).unwrap();
        let p = a.publish_of(&job(json!({}))).unwrap();
        assert_eq!(p.subject, "switchyard.tight.invoiceViewed");
        assert_eq!(
            p.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("e:r:0")
        );
        assert_eq!(
            p.headers.get("event_type").map(|v| v.as_str()),
            Some("tight.invoiceViewed")
        );
        let p = a
            .publish_of(&job(json!({"subject": "invoices.new"})))
            .unwrap();
        assert_eq!(p.subject, "invoices.new");
        for bad in ["a..b", "a.*", "a b", ""] {
            assert!(
                a.publish_of(&job(json!({ "subject": bad }))).is_err(),
                "{bad}"
            );
        }
        let a = action(json!({"url": "nats://127.0.0.1:1", "subject": "all.events"})).unwrap();
        assert_eq!(a.publish_of(&job(json!({}))).unwrap().subject, "all.events");
    }

    #[test]
    fn nothing_listening_is_retryable_and_a_bad_subject_permanent() {
        let a = action(json!({"url": "nats://127.0.0.1:1", "connect_timeout_ms": 500})).unwrap();
        assert!(matches!(
            a.execute(&job(json!({})), Duration::from_secs(2)),
            Outcome::Retryable(_)
        ));
        let outcomes = a.execute_batch(
            &[job(json!({})), job(json!({"subject": "a.>"}))],
            Duration::from_secs(2),
        );
        assert!(matches!(outcomes[0], Outcome::Retryable(_)));
        assert!(matches!(&outcomes[1], Outcome::Permanent(e) if e.contains("subject")));
    }
}
