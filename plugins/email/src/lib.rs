//! # email action plugin
//!
//! Sends one email per job through lettre: over SMTP (implicit TLS,
//! STARTTLS, or plain to a server on this machine), or, with
//! `transport = "file"`, as `.eml` files in a folder (the example config
//! does this, so a newcomer sees the mail without a server).
//!
//! Parameters from the rule: `to` (an address or a list; else the config's
//! `to`), `cc`, `bcc`, `reply_to`, `subject`, `text`, and optional `html`
//! (sent as multipart/alternative with the text). The Message-ID is made
//! from the job's idempotency key, the same on every retry.
//!
//! Outcomes: a connection refused, a timeout or a 4xx SMTP reply retries; a
//! 5xx reply or an address that cannot be parsed is permanent.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{FileTransport, Message, SmtpTransport, Transport};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum TransportKind {
    #[default]
    Smtp,
    File,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plain, then STARTTLS, required (port 587).
    Starttls,
    /// No TLS: only to a server on this machine.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    transport: TransportKind,
    from: String,
    /// Default recipients when the rule gives no `to`.
    #[serde(default)]
    to: Vec<String>,
    // smtp
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    username: Option<String>,
    password: Option<String>,
    // file
    folder: Option<PathBuf>,
}

enum Sender {
    Smtp {
        host: String,
        port: u16,
        tls: TlsMode,
        credentials: Option<Credentials>,
    },
    File(FileTransport),
}

pub struct Email {
    host: Host,
    from: Mailbox,
    to: Vec<Mailbox>,
    sender: Sender,
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

fn mailboxes(v: Option<&Value>, what: &str) -> Result<Vec<Mailbox>, String> {
    let items: Vec<&str> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(other) => {
            return Err(format!(
                "{what} must be an address or a list of them, not {other}"
            ))
        }
    };
    items
        .into_iter()
        .map(|a| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("{what}: {a:?} is not an address: {e}"))
        })
        .collect()
}

/// A Message-ID from the idempotency key: the same on every retry.
fn message_id(key: &str) -> String {
    let local: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<{local}@switchyard>")
}

impl Email {
    fn message(&self, job: &Job) -> Result<Message, String> {
        let p = &job.params;
        let mut to = mailboxes(p.get("to"), "to")?;
        if to.is_empty() {
            to = self.to.clone();
        }
        if to.is_empty() {
            return Err("no recipient: give `to` in the rule or in the action's config".into());
        }
        let subject = p
            .get("subject")
            .and_then(Value::as_str)
            .unwrap_or("(no subject)");
        let text = p
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(message_id(&job.idempotency_key)));
        for m in to {
            b = b.to(m);
        }
        for m in mailboxes(p.get("cc"), "cc")? {
            b = b.cc(m);
        }
        for m in mailboxes(p.get("bcc"), "bcc")? {
            b = b.bcc(m);
        }
        for m in mailboxes(p.get("reply_to"), "reply_to")? {
            b = b.reply_to(m);
        }
        let built = match p.get("html").and_then(Value::as_str) {
            Some(html) => b.multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html.to_string()),
                    ),
            ),
            None => b.header(ContentType::TEXT_PLAIN).body(text),
        };
        built.map_err(|e| format!("cannot build the message: {e}"))
    }
}

impl Action for Email {
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("email settings: {e}"))?;
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| format!("email settings: from {:?} is not an address: {e}", c.from))?;
        let to = mailboxes(Some(&json!(c.to)), "email settings: to")?;
        let sender = match c.transport {
            TransportKind::File => {
                let folder = c
                    .folder
                    .ok_or("email settings: transport = \"file\" needs folder")?;
                std::fs::create_dir_all(&folder).map_err(|e| {
                    format!("email settings: cannot create {}: {e}", folder.display())
                })?;
                Sender::File(FileTransport::new(folder))
            }
            TransportKind::Smtp => {
                let host_name = c
                    .host
                    .ok_or("email settings: transport = \"smtp\" needs host")?;
                let tls = match c.tls {
                    Some(t) => t,
                    None if is_local(&host_name) => TlsMode::None,
                    None => TlsMode::Starttls,
                };
                if tls == TlsMode::None && !is_local(&host_name) {
                    return Err(format!(
                        "email settings: tls = \"none\" is only for a server on this machine, not {host_name}"
                    ));
                }
                let port = c.port.unwrap_or(match tls {
                    TlsMode::Implicit => 465,
                    TlsMode::Starttls => 587,
                    TlsMode::None => 25,
                });
                let credentials = match (c.username, c.password) {
                    (Some(u), Some(p)) => Some(Credentials::new(u, p)),
                    (None, None) => None,
                    _ => {
                        return Err(
                            "email settings: give both username and password, or neither".into(),
                        )
                    }
                };
                let _ = rustls::crypto::ring::default_provider().install_default();
                Sender::Smtp {
                    host: host_name,
                    port,
                    tls,
                    credentials,
                }
            }
        };
        Ok(Email {
            host,
            from,
            to,
            sender,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let message = match self.message(job) {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(e),
        };
        match &self.sender {
            Sender::File(t) => match t.send(&message) {
                Ok(id) => Outcome::Done(Some(json!({ "file": format!("{id}.eml") }))),
                Err(e) => Outcome::Retryable(format!("cannot write the .eml file: {e}")),
            },
            Sender::Smtp {
                host,
                port,
                tls,
                credentials,
            } => {
                let tls_params = || {
                    TlsParameters::new(host.clone())
                        .map_err(|e| format!("TLS settings for {host}: {e}"))
                };
                let tls = match tls {
                    TlsMode::None => Tls::None,
                    TlsMode::Starttls => match tls_params() {
                        Ok(p) => Tls::Required(p),
                        Err(e) => return Outcome::Permanent(e),
                    },
                    TlsMode::Implicit => match tls_params() {
                        Ok(p) => Tls::Wrapper(p),
                        Err(e) => return Outcome::Permanent(e),
                    },
                };
                let mut b = SmtpTransport::builder_dangerous(host.as_str())
                    .port(*port)
                    .tls(tls)
                    .timeout(Some(
                        timeout
                            .saturating_sub(Duration::from_millis(200))
                            .max(Duration::from_millis(200)),
                    ));
                if let Some(c) = credentials {
                    b = b.credentials(c.clone());
                }
                match b.build().send(&message) {
                    Ok(resp) => {
                        self.host.debug(&format!("sent through {host}:{port}"));
                        Outcome::Done(Some(json!({
                            "smtp": resp.code().to_string(),
                            "message": resp.message().collect::<Vec<_>>().join(" "),
                        })))
                    }
                    Err(e) if e.is_permanent() => {
                        Outcome::Permanent(format!("SMTP refused it: {e}"))
                    }
                    Err(e) if e.is_client() => Outcome::Permanent(format!("cannot send: {e}")),
                    Err(e) => Outcome::Retryable(format!("SMTP {host}:{port}: {e}")),
                }
            }
        }
    }
}

switchyard_plugin_api::export_action!("email", Email);

#[cfg(test)]
mod tests {
    use super::*;

    fn job(params: Value) -> Job {
        Job {
            id: "j".into(),
            idempotency_key: "01ABC:invoice-viewed:0".into(),
            action: "mail".into(),
            rule: "r".into(),
            attempt: 1,
            params,
            event: json!({}),
            trace: None,
        }
    }

    #[test]
    fn the_file_transport_writes_eml() {
        let dir = std::env::temp_dir().join(format!("sy-email-{}", std::process::id()));
        let e = Email::create(
            Host::detached(),
            json!({"transport": "file", "folder": dir, "from": "Switchyard <sy@example.com>"}),
        )
        .unwrap();
        let out = e.execute(
            &job(
                json!({"to": ["owner@example.com"], "cc": "a@example.com, b@example.com",
                        "subject": "Invoice viewed", "text": "Hello", "html": "<p>Hello</p>"}),
            ),
            Duration::from_secs(5),
        );
        let Outcome::Done(Some(r)) = out else {
            panic!("{out:?}")
        };
        let text = std::fs::read_to_string(dir.join(r["file"].as_str().unwrap())).unwrap();
        assert!(text.contains("To: owner@example.com"), "{text}");
        assert!(text.contains("Cc: a@example.com, b@example.com"), "{text}");
        assert!(text.contains("Subject: Invoice viewed"));
        assert!(
            text.contains("Message-ID: <01ABC.invoice-viewed.0@switchyard>"),
            "{text}"
        );
        assert!(text.contains("multipart/alternative") && text.contains("<p>Hello</p>"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_addresses_are_permanent_and_settings_are_checked() {
        let dir = std::env::temp_dir();
        let e = Email::create(
            Host::detached(),
            json!({"transport": "file", "folder": dir, "from": "sy@example.com"}),
        )
        .unwrap();
        assert!(matches!(
            e.execute(
                &job(json!({"to": "not an address"})),
                Duration::from_secs(1)
            ),
            Outcome::Permanent(_)
        ));
        assert!(
            matches!(e.execute(&job(json!({})), Duration::from_secs(1)), Outcome::Permanent(m) if m.contains("no recipient"))
        );
        for (config, needle) in [
            (json!({"from": "x"}), "from"),
            (json!({"from": "a@b.c"}), "host"),
            (
                json!({"from": "a@b.c", "host": "smtp.example.com", "tls": "none"}),
                "this machine",
            ),
            (
                json!({"from": "a@b.c", "host": "localhost", "username": "u"}),
                "both",
            ),
            (json!({"from": "a@b.c", "transport": "file"}), "folder"),
            (
                json!({"from": "a@b.c", "host": "localhost", "colour": 1}),
                "colour",
            ),
        ] {
            let err = Email::create(Host::detached(), config).err().unwrap();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
