//! # AMQP action plugin (RabbitMQ)
//!
//! Publishes each job to an exchange as a persistent message on a channel
//! in confirm mode: the job is done when the broker confirms it (it has
//! the message, and has written it to a durable queue's disk), retried when
//! the broker nacks it, returns it unroutable, or the connection is lost
//! before the confirm.
//!
//! One connection and one channel per action, made on first use and made
//! again after either fails (the host's retry schedule spaces the
//! attempts). The jobs ready at once go out together and their confirms
//! are awaited together (`execute_batch`, one operation at the broker:
//! ABI 1.7), each job with its own outcome.
//!
//! A message: the body is the rule's `body` parameter or the event's
//! envelope (`switchyard_plugin_support::message`); `delivery_mode` 2
//! (persistent); `message_id` and the `idempotency_key` header are the
//! job's idempotency key (the same on every retry: a consumer that has seen
//! it drops the message); `type` is the event type; headers `event_id`,
//! `event_type`, `source`, `idempotency_key`, and `traceparent` /
//! `tracestate` when the host traces.
//!
//! Settings: `url` (`amqp://host:5672/vhost` or `amqps://…`), `username`
//! and `password` (secret references; they override the url's), `exchange`
//! (`""`, the default exchange, where the routing key is a queue's name),
//! `routing_key` (the default; else the event type), `mandatory` (true: a
//! message no queue takes is returned and the job retried, rather than
//! dropped by the broker and counted done), `ca_file` (a PEM file of the
//! CAs to trust for `amqps://`, beside the system's), `cert_file` and
//! `key_file` (a client certificate, for a broker that verifies clients),
//! `connect_timeout_ms` (5000).
//! A job's `exchange` and `routing_key` parameters override them.
//!
//! Failures: the credentials refused (`ACCESS_REFUSED` at login), a virtual
//! host the user may not use (`NOT_ALLOWED`), and a publish the user may not
//! make (`ACCESS_REFUSED`) are permanent — a dead letter naming the reason,
//! never the password. An exchange that does not exist (`NOT_FOUND`), a
//! nack, an unroutable message, and anything about the connection are
//! retryable: the topology may be made after the daemon starts.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::message::{batch, client_cert, destination, ClientCert, Message};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    exchange: String,
    routing_key: Option<String>,
    #[serde(default = "yes")]
    mandatory: bool,
    ca_file: Option<std::path::PathBuf>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
}

fn yes() -> bool {
    true
}

fn default_connect_timeout() -> u64 {
    5000
}

/// The connection and its channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

pub struct AmqpAction {
    /// The action's own runtime: one thread keeps the connection's
    /// heartbeats and confirms going between calls.
    runtime: tokio::runtime::Runtime,
    uri: AMQPUri,
    exchange: String,
    routing_key: Option<String>,
    mandatory: bool,
    connect_timeout: Duration,
    /// The CAs of `ca_file`, as PEM, trusted for `amqps://` beside the
    /// system's.
    ca: Option<String>,
    /// The client certificate of `cert_file` and `key_file`, for a broker
    /// that asks for one (`ssl_options.verify = verify_peer`).
    identity: Option<ClientCert>,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// What a lapin error means for the job. The broker's reply text names
/// the exchange, queue or user, never the password.
fn outcome_of(e: &lapin::Error, at_login: bool) -> Outcome {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        let text = format!("{} {}", amqp.get_id(), amqp.get_message());
        let permanent = match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) if at_login => {
                return Outcome::Permanent(format!(
                    "rabbitmq refused the credentials ({text}): check the action's username and password"
                ));
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => true,
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => true,
            _ => false,
        };
        return if permanent {
            Outcome::Permanent(format!("rabbitmq refused: {text}"))
        } else {
            Outcome::Retryable(format!("rabbitmq: {text}"))
        };
    }
    Outcome::Retryable(format!("rabbitmq: {e}"))
}

/// A routing key or exchange name: AMQP's short strings are at most 255
/// bytes.
fn short(what: &str, s: &str) -> Result<ShortString, String> {
    if s.len() > 255 {
        return Err(format!("the {what} is longer than 255 bytes"));
    }
    Ok(s.into())
}

/// One job's publish, ready to go.
struct Publish {
    exchange: ShortString,
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl AmqpAction {
    fn publish_of(&self, job: &Job) -> Result<Publish, String> {
        let message = Message::of(job);
        let exchange = destination(job, "exchange", &self.exchange).or_else(|e| {
            // The default exchange is named by an empty text.
            match job.params.get("exchange") {
                Some(Value::String(s)) if s.is_empty() => Ok(""),
                _ => Err(e),
            }
        })?;
        let routing_key = destination(
            job,
            "routing_key",
            self.routing_key.as_deref().unwrap_or(&message.event_type),
        )?;
        let mut headers = FieldTable::default();
        for (k, v) in message.fields() {
            headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(if message.json {
                "application/json".into()
            } else {
                "text/plain; charset=utf-8".into()
            })
            .with_message_id(short("idempotency key", &message.idempotency_key)?)
            .with_type(short("event type", &message.event_type)?)
            .with_app_id("switchyard".into())
            .with_timestamp(timestamp)
            .with_headers(headers);
        Ok(Publish {
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            body: message.body.into_bytes(),
            properties,
        })
    }

    /// The channel, connecting first if there is no live one. Connecting
    /// is done under the lock, by one call at a time: the calls waiting
    /// meanwhile then share what it made (made in parallel, each would
    /// replace the other's).
    async fn channel(&self) -> Result<Channel, Outcome> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref().filter(|l| l.alive()) {
            return Ok(link.channel.clone());
        }
        if let Some(dead) = guard.take() {
            // Its channel failed (the connection may still be open): closed
            // in the background, never left open beside the new one.
            self.runtime.spawn(async move {
                let _ = dead.connection.close(200, "failed".into()).await;
            });
        }
        let properties = ConnectionProperties::default()
            .with_connection_name(concat!("switchyard/", env!("CARGO_PKG_VERSION")).into());
        let tls = OwnedTLSConfig {
            identity: self.identity.as_ref().map(|id| OwnedIdentity::PKCS8 {
                pem: id.cert.clone(),
                key: id.key.clone(),
            }),
            cert_chain: self.ca.clone(),
        };
        let connect = async {
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_uri_with_config(self.uri.clone(), properties, tls, runtime).await
        };
        let connection = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(outcome_of(&e, true)),
            Err(_) => {
                return Err(Outcome::Retryable(format!(
                    "rabbitmq: no connection within {} ms",
                    self.connect_timeout.as_millis()
                )))
            }
        };
        let channel = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = match tokio::time::timeout(self.connect_timeout, channel).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = connection.close(200, "no channel".into()).await;
                return Err(outcome_of(&e, false));
            }
            Err(_) => {
                self.runtime.spawn(async move {
                    let _ = connection.close(200, "no channel".into()).await;
                });
                return Err(Outcome::Retryable(
                    "rabbitmq: no channel in confirm mode in time".into(),
                ));
            }
        };
        *guard = Some(Link {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Publishes every message, then awaits every confirm: one outcome
    /// each.
    async fn publish_all(&self, publishes: Vec<Publish>) -> Vec<Option<Outcome>> {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(failed) => return vec![Some(failed); publishes.len()],
        };
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; publishes.len()];
        let mut waiting = Vec::new();
        let mut broken = false;
        for (i, p) in publishes.into_iter().enumerate() {
            if broken {
                outcomes[i] = Some(Outcome::Retryable(
                    "rabbitmq: the channel failed before this message was sent".into(),
                ));
                continue;
            }
            let routing_key = p.routing_key.clone();
            let exchange = p.exchange.clone();
            match channel
                .basic_publish(p.exchange, p.routing_key, options, &p.body, p.properties)
                .await
            {
                Ok(confirm) => waiting.push((i, exchange, routing_key, confirm)),
                Err(e) => {
                    // The channel failed: the rest are not sent, and are
                    // tried again (a channel or connection that failed is
                    // dead to the next call, which connects again).
                    outcomes[i] = Some(outcome_of(&e, false));
                    broken = true;
                }
            }
        }
        for (i, exchange, routing_key, confirm) in waiting {
            outcomes[i] = Some(match confirm.await {
                Ok(Confirmation::Ack(None)) => {
                    Outcome::Done(Some(json!({ "routing_key": routing_key.as_str() })))
                }
                Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                    Outcome::Retryable(format!(
                        "rabbitmq returned it unroutable ({} {}): no queue is bound to exchange '{}' for routing key '{}'",
                        returned.reply_code,
                        returned.reply_text,
                        exchange.as_str(),
                        routing_key.as_str()
                    ))
                }
                Ok(Confirmation::Nack(None)) => {
                    Outcome::Retryable("rabbitmq did not take the message (nack)".into())
                }
                Ok(Confirmation::NotRequested) => Outcome::Retryable(
                    "rabbitmq: the channel is not in confirm mode".into(),
                ),
                Err(e) => outcome_of(&e, false),
            });
        }
        outcomes
    }

    fn run(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        let timeout = timeout.max(Duration::from_millis(1));
        let send = |publishes: Vec<Publish>| {
            let n = publishes.len();
            self.runtime.block_on(async {
                match tokio::time::timeout(timeout, self.publish_all(publishes)).await {
                    Ok(outcomes) => outcomes,
                    Err(_) => {
                        // The confirms did not all come in time: the
                        // connection is suspect (a broker that stopped
                        // reading, a network that drops without a reset)
                        // and is made again; every job is tried again.
                        if let Some(old) = self.link.lock().await.take() {
                            self.runtime.spawn(async move {
                                let _ = old.connection.close(200, "timed out".into()).await;
                            });
                        }
                        vec![None; n]
                    }
                }
            })
        };
        batch(
            jobs,
            |job| self.publish_of(job),
            send,
            "rabbitmq: no confirm within the action's timeout",
        )
    }
}

impl Action for AmqpAction {
    fn create(_host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("amqp settings: {e}"))?;
        let mut uri: AMQPUri = c
            .url
            .parse()
            .map_err(|e| format!("amqp settings: url: {e}"))?;
        if let Some(u) = c.username {
            uri.authority.userinfo.username = u;
        }
        if let Some(p) = c.password {
            uri.authority.userinfo.password = p;
        }
        short("exchange", &c.exchange).map_err(|e| format!("amqp settings: {e}"))?;
        if let Some(k) = &c.routing_key {
            short("routing key", k).map_err(|e| format!("amqp settings: {e}"))?;
        }
        let ca = match &c.ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("amqp settings: ca_file: {}: {e}", path.display()))?,
            ),
        };
        let identity = client_cert("amqp", c.cert_file.as_deref(), c.key_file.as_deref())?;
        // One crypto provider for the process's rustls (amqps://); another
        // library may have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-amqp")
            .enable_all()
            .build()
            .map_err(|e| format!("amqp: cannot start its runtime: {e}"))?;
        Ok(AmqpAction {
            runtime,
            uri,
            exchange: c.exchange,
            routing_key: c.routing_key,
            mandatory: c.mandatory,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms.clamp(1, 600_000)),
            ca,
            identity,
            link: tokio::sync::Mutex::new(None),
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        self.run(std::slice::from_ref(job), timeout)
            .pop()
            .unwrap_or_else(|| Outcome::Retryable("rabbitmq: no outcome".into()))
    }

    /// The ready jobs are published together and their confirms awaited
    /// together.
    const BATCHES: bool = true;
    /// A batch is one operation at the broker (as the redis action's
    /// pipeline): one channel, the confirms of all its messages awaited at
    /// once.
    const BATCH_IS_ONE_OPERATION: bool = true;

    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        self.run(jobs, timeout)
    }
}

impl Drop for AmqpAction {
    fn drop(&mut self) {
        if let Some(link) = self.link.get_mut().take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    link.connection.close(200, "action stopped".into()),
                )
                .await
            });
        }
    }
}

switchyard_plugin_api::export_action!("amqp", AmqpAction);

#[cfg(test)]
mod tests {
    use super::*;

    fn action(config: Value) -> Result<AmqpAction, String> {
        AmqpAction::create(Host::detached(), config)
    }

    use switchyard_plugin_support::message::sample_job as job;

    #[test]
    fn settings_are_checked_by_name() {
        assert!(action(json!({"url": "amqp://127.0.0.1:1/%2f"})).is_ok());
        let e = action(json!({"url": "amqp://127.0.0.1:1/%2f", "exchang": "x"}))
            .err()
            .unwrap();
        assert!(e.contains("exchang"), "{e}");
        let e = action(json!({"url": "http://nowhere"})).err().unwrap();
        assert!(e.contains("url"), "{e}");
        // A file that is not a certificate (this crate's manifest).
        let toml = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let e =
            action(json!({"url": "amqps://127.0.0.1:1/%2f", "cert_file": toml, "key_file": toml}))
                .err()
                .unwrap();
        assert!(
            e.starts_with("amqp settings: cert_file: ")
                && e.ends_with("Cargo.toml holds no PEM certificate"),
            "{e}"
        );
        let e = action(json!({"url": "amqp://127.0.0.1:1/%2f", "routing_key": "k".repeat(256)}))
            .err()
            .unwrap();
        assert!(e.contains("255 bytes"), "{e}");
    }

    #[test]
    fn the_routing_key_is_the_jobs_the_actions_or_the_event_type() {
        let a = action(json!({"url": "amqp://127.0.0.1:1/%2f", "exchange": "events"})).unwrap();
        let p = a.publish_of(&job(json!({}))).unwrap();
        assert_eq!(p.exchange.as_str(), "events");
        assert_eq!(p.routing_key.as_str(), "tight.invoiceViewed");
        let p = a
            .publish_of(&job(json!({"routing_key": "k", "exchange": ""})))
            .unwrap();
        assert_eq!((p.exchange.as_str(), p.routing_key.as_str()), ("", "k"));
        assert_eq!(p.properties.delivery_mode(), &Some(2));
        assert_eq!(
            p.properties.message_id().as_ref().map(|m| m.as_str()),
            Some("e:r:0")
        );
        let a = action(json!({"url": "amqp://127.0.0.1:1/%2f", "routing_key": "all"})).unwrap();
        assert_eq!(
            a.publish_of(&job(json!({}))).unwrap().routing_key.as_str(),
            "all"
        );
        assert!(a.publish_of(&job(json!({"routing_key": 5}))).is_err());
    }

    #[test]
    fn nothing_listening_is_retryable_and_a_bad_key_permanent() {
        let a =
            action(json!({"url": "amqp://127.0.0.1:1/%2f", "connect_timeout_ms": 500})).unwrap();
        assert!(matches!(
            a.execute(&job(json!({})), Duration::from_secs(2)),
            Outcome::Retryable(_)
        ));
        let outcomes = a.execute_batch(
            &[job(json!({})), job(json!({"routing_key": "k".repeat(300)}))],
            Duration::from_secs(2),
        );
        assert!(matches!(outcomes[0], Outcome::Retryable(_)));
        assert!(matches!(&outcomes[1], Outcome::Permanent(e) if e.contains("255")));
    }
}
