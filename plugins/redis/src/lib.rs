//! # Redis Streams action plugin
//!
//! Appends each job to a Redis stream with `XADD`: the job is done when
//! Redis answers with the entry's id, and retried when it does not (the
//! connection refused, lost or timed out). One connection per action,
//! made on first use and made again after it fails (the host's retry
//! schedule spaces the attempts); the jobs ready at once go in one
//! pipeline (`execute_batch`, one operation at Redis: ABI 1.7), each with
//! its own outcome.
//!
//! An entry's fields: `body` (the rule's `body` parameter if it gave one,
//! as JSON text unless it is a string; else the event's envelope as JSON),
//! `event_id`, `event_type`, `source`, `idempotency_key` (the same on every
//! retry of the job: a consumer that has seen it drops the entry, as
//! `XADD` itself cannot) and `traceparent` (and `tracestate`) when the host
//! traces.
//!
//! Settings: `url` (`redis://host:6379/0`), `username` and `password`
//! (secret references), `stream` (the key, default `switchyard`; a job's
//! `stream` parameter overrides it), `maxlen` (trim the stream to about
//! this many entries, `MAXLEN ~`), `ca_file` (for `rediss://`: a PEM file
//! of the CAs to trust instead of the system's), `cert_file` and
//! `key_file` (a client certificate, for a server that asks for one:
//! `tls-auth-clients`), `connect_timeout_ms` (5000).
//!
//! Failures: credentials refused (`WRONGPASS`, `NOAUTH`, `NOPERM`) and a
//! key of another type (`WRONGTYPE`) are permanent — the job is a dead
//! letter naming the reason, never the password; anything about the
//! connection is retryable.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, ErrorKind, IntoConnectionInfo, RedisError};
use serde::Deserialize;
use serde_json::Value;
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::message::{batch, client_cert, destination, Message};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default = "default_stream")]
    stream: String,
    maxlen: Option<u64>,
    ca_file: Option<std::path::PathBuf>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
}

fn default_stream() -> String {
    "switchyard".into()
}

fn default_connect_timeout() -> u64 {
    5000
}

pub struct RedisAction {
    client: Client,
    stream: String,
    maxlen: Option<u64>,
    connect_timeout: Duration,
    /// The action's connection, made on first use and after a failure.
    connection: Mutex<Option<Connection>>,
}

/// What a Redis error means for the job.
fn outcome_of(e: &RedisError) -> Outcome {
    let code = e.code().unwrap_or_default();
    if e.kind() == ErrorKind::AuthenticationFailed || matches!(code, "WRONGPASS" | "NOAUTH") {
        return Outcome::Permanent(format!(
            "redis refused the credentials ({}): check the action's username and password",
            brief(e)
        ));
    }
    if matches!(code, "NOPERM" | "WRONGTYPE") {
        return Outcome::Permanent(format!("redis refused: {}", brief(e)));
    }
    Outcome::Retryable(format!("redis: {}", brief(e)))
}

/// An error in a line, without what it may echo of a command's arguments.
fn brief(e: &RedisError) -> String {
    if e.kind() == ErrorKind::AuthenticationFailed {
        // What the client says of it, never the password.
        return e.to_string();
    }
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        // A client-side failure (I/O, TLS, a timeout): its own words, which
        // never hold a command's arguments.
        _ => e.to_string(),
    }
}

impl RedisAction {
    /// The `XADD` of one job.
    fn xadd(&self, job: &Job) -> Result<redis::Cmd, String> {
        let stream = destination(job, "stream", &self.stream)?;
        let message = Message::of(job);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream);
        if let Some(n) = self.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg("body").arg(&message.body);
        for (k, v) in message.fields() {
            cmd.arg(k).arg(v);
        }
        Ok(cmd)
    }

    /// Runs `f` on the connection (made if there is none); a failure about
    /// the connection drops it, so the next call makes a new one.
    fn with_connection<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let mut guard = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(self.connect_timeout)?;
            *guard = Some(con);
        }
        let Some(con) = guard.as_mut() else {
            unreachable!("made above")
        };
        let deadline = Some(timeout.max(Duration::from_millis(1)));
        let _ = con.set_read_timeout(deadline);
        let _ = con.set_write_timeout(deadline);
        let result = f(con);
        if let Err(e) = &result {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.kind() == ErrorKind::AuthenticationFailed
            {
                *guard = None;
            }
        }
        result
    }
}

impl Action for RedisAction {
    fn create(_host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("redis settings: {e}"))?;
        if c.stream.is_empty() {
            return Err("redis settings: stream is empty".into());
        }
        let mut info = c
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("redis settings: url: {}", brief(&e)))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &c.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &c.password {
            settings = settings.set_password(p);
        }
        info = info.set_redis_settings(settings);
        // rediss://: ring as the process's rustls provider (another library
        // may have installed one already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = client_cert("redis", c.cert_file.as_deref(), c.key_file.as_deref())?;
        let client = match (&c.ca_file, identity) {
            (None, None) => Client::open(info),
            (ca, identity) => {
                let root_cert = match ca {
                    None => None,
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        format!("redis settings: ca_file: {}: {e}", path.display())
                    })?),
                };
                let certs = redis::TlsCertificates {
                    client_tls: identity.map(|id| redis::ClientTlsConfig {
                        client_cert: id.cert,
                        client_key: id.key,
                    }),
                    root_cert,
                };
                Client::build_with_tls(info, certs)
            }
        }
        .map_err(|e| format!("redis settings: {}", brief(&e)))?;
        Ok(RedisAction {
            client,
            stream: c.stream,
            maxlen: c.maxlen,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms.clamp(1, 600_000)),
            connection: Mutex::new(None),
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let cmd = match self.xadd(job) {
            Ok(cmd) => cmd,
            Err(why) => return Outcome::Permanent(why),
        };
        match self.with_connection(timeout, |con| cmd.query::<String>(con)) {
            Ok(id) => Outcome::Done(Some(serde_json::json!({ "entry_id": id }))),
            Err(e) => outcome_of(&e),
        }
    }

    /// The ready jobs in one pipeline: one round trip.
    const BATCHES: bool = true;
    /// A pipeline is one operation at Redis: one connection, one round
    /// trip, however many entries (as the file action's one write): the
    /// host counts the call once against `concurrency`, and hands it every
    /// ready job (up to 256). Counted per job, a call took at most
    /// `concurrency` (8) jobs and waited for their records before the
    /// next: 1,500 entries a second.
    const BATCH_IS_ONE_OPERATION: bool = true;

    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        let send = |commands: Vec<redis::Cmd>| {
            let n = commands.len();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for cmd in commands {
                pipe.add_command(cmd);
            }
            match self.with_connection(timeout, |con| pipe.query::<Vec<redis::Value>>(con)) {
                Ok(replies) => replies
                    .into_iter()
                    .map(|reply| {
                        Some(match reply {
                            redis::Value::ServerError(e) => outcome_of(&RedisError::from(e)),
                            other => match redis::from_redis_value::<String>(other) {
                                Ok(id) => {
                                    Outcome::Done(Some(serde_json::json!({ "entry_id": id })))
                                }
                                Err(e) => outcome_of(&e.into()),
                            },
                        })
                    })
                    .collect(),
                Err(e) => vec![Some(outcome_of(&e)); n],
            }
        };
        batch(
            jobs,
            |job| self.xadd(job),
            send,
            "redis: no reply for this entry",
        )
    }
}

switchyard_plugin_api::export_action!("redis", RedisAction);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(config: Value) -> Result<RedisAction, String> {
        RedisAction::create(Host::detached(), config)
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(action(json!({"url": "redis://127.0.0.1:1/0"})).is_ok());
        let e = action(json!({"url": "redis://127.0.0.1:1/0", "streem": "x"}))
            .err()
            .unwrap();
        assert!(e.contains("streem"), "{e}");
        let e = action(json!({"url": "http://nowhere"})).err().unwrap();
        assert!(e.contains("url"), "{e}");
        let e = action(json!({"url": "rediss://127.0.0.1:1/0", "key_file": "/etc/hostname"}))
            .err()
            .unwrap();
        assert_eq!(e, "redis settings: cert_file and key_file go together");
        let e = action(json!({"url": "redis://127.0.0.1:1/0", "stream": ""}))
            .err()
            .unwrap();
        assert!(e.contains("stream is empty"), "{e}");
    }

    #[test]
    fn nothing_listening_is_retryable_and_a_bad_stream_permanent() {
        let a = action(json!({"url": "redis://127.0.0.1:1/0", "connect_timeout_ms": 200})).unwrap();
        let job = switchyard_plugin_support::message::sample_job;
        assert!(matches!(
            a.execute(&job(json!({})), Duration::from_secs(1)),
            Outcome::Retryable(_)
        ));
        assert!(matches!(
            a.execute(&job(json!({"stream": 5})), Duration::from_secs(1)),
            Outcome::Permanent(_)
        ));
        let outcomes = a.execute_batch(
            &[job(json!({})), job(json!({"stream": []}))],
            Duration::from_secs(1),
        );
        assert!(matches!(outcomes[0], Outcome::Retryable(_)));
        assert!(matches!(outcomes[1], Outcome::Permanent(_)));
    }
}
