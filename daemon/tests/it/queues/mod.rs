//! Queue outputs from outside: a real broker from Debian's packages,
//! started by the test on 127.0.0.1, and read back with its own client
//! (redis-cli; pika and nats-py through `fixtures/queue_client.py`).
//!
//! The same four stories for each broker ([`Broker`]): 1,000 events
//! through a rule arrive once each; the broker killed and started again
//! mid-stream loses nothing the daemon acknowledged, and what is sent again
//! carries the same idempotency key; a wrong password is a dead letter
//! saying so, with the password in no log; the broker down at start: the
//! daemon starts, the jobs wait and go once it is up.

mod amqp;
mod nats;
mod redis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// One message as the broker holds it.
pub struct Delivered {
    pub event_id: String,
    pub idempotency_key: String,
    /// The message as the broker's client read it, for the broker's own
    /// checks of its shape.
    pub raw: Value,
}

/// A broker of the test's own, and how the action reaches it.
pub trait Broker {
    /// The plugin library's name.
    const PLUGIN: &'static str;
    /// The password the broker was started with.
    const PASSWORD: &'static str;
    /// How the action's failures begin ("redis:"): a failed attempt is
    /// logged as `job failed (retryable): ` and that.
    const FAILED: &'static str;
    /// What the dead letter of refused credentials says.
    const REFUSED: &'static str;

    fn new(dir: &Path) -> Self;
    /// From the next start, takes the action's connections only in TLS,
    /// with the certificate `make_test_certs` made in `certs`; the action's
    /// settings then say the TLS url and `ca_file`.
    fn tls(&mut self, certs: &Path);
    /// Starts it and waits until it answers (and, the first time, makes
    /// what the action publishes to).
    fn start(&mut self);
    /// Kills it at once, as a crash would.
    fn kill(&mut self);
    /// The `[actions.bus]` settings, its password from `BUS_PASSWORD`.
    fn settings(&self) -> String;
    /// What the rule gives the action.
    fn params(&self) -> &'static str;
    /// What the rule gives an action whose messages the test does not
    /// read.
    const ELSEWHERE: &'static str;
    /// Every message it holds.
    fn delivered(&self) -> Vec<Delivered>;
    /// How many messages it holds.
    fn count(&self) -> usize {
        self.delivered().len()
    }
}

/// The `fixtures/queue_client.py` command's output; `None` when the broker
/// did not answer.
pub fn queue_client(args: &[&str]) -> Option<String> {
    queue_client_trusting(None, args)
}

/// As [`queue_client`], for `tls://` trusting the CA of `certs`
/// ([`make_test_certs`]) and showing its client certificate.
pub fn queue_client_trusting(certs: Option<&Path>, args: &[&str]) -> Option<String> {
    let mut command = Command::new("python3");
    if let Some(certs) = certs {
        command
            .env("QUEUE_CLIENT_CA", certs.join("ca.crt"))
            .env("QUEUE_CLIENT_CERT", certs.join("client.crt"))
            .env("QUEUE_CLIENT_KEY", certs.join("client.key"));
    }
    let out = command
        .arg(repo_root().join("daemon/tests/fixtures/queue_client.py"))
        .args(args)
        .output()
        .expect("python3");
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "queue_client.py {args:?} failed (pip install -r requirements-dev.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    None
}

/// The messages `queue_client.py` read, their event id and idempotency
/// key from their headers.
pub fn by_headers(lines: Option<String>) -> Vec<Delivered> {
    lines
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let raw: Value = serde_json::from_str(l).unwrap();
            let header = |k: &str| raw["headers"][k].as_str().unwrap().to_string();
            Delivered {
                event_id: header("event_id"),
                idempotency_key: header("idempotency_key"),
                raw,
            }
        })
        .collect()
}

/// A Tight source, a rule sending every invoiceViewed to the `bus`
/// action, the broker's plugin, quick retries.
fn config<B: Broker>(env: &Env, broker: &B) -> PathBuf {
    env.with_standard_plugins();
    env.add_plugin(&built_plugin(B::PLUGIN));
    env.rule(
        "to-the-bus",
        &format!(
            "const EVENTS = [\"tight.invoiceViewed\"];\naction(\"bus\", {});",
            broker.params()
        ),
    );
    env.config(&format!(
        r#"[delivery]
retry_schedule = ["200ms", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.bus]
{}
"#,
        broker.settings()
    ))
}

/// What the log says of a failed attempt.
pub fn failed<B: Broker>() -> String {
    format!("job failed (retryable): {}", B::FAILED)
}

/// Each event id the broker holds, and how many messages carried it.
fn by_event(delivered: &[Delivered]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for d in delivered {
        *out.entry(d.event_id.clone()).or_insert(0) += 1;
    }
    out
}

/// 1,000 events through the rule: each in the broker once. Returns what
/// the broker holds, for its own checks of a message's shape.
pub fn a_thousand_arrive_once<B: Broker>() -> Vec<Delivered> {
    let env = Env::new();
    let mut broker = B::new(&env.path("broker"));
    broker.start();
    let config = config(&env, &broker);
    let daemon = Daemon::start_with_env(&config, &[("BUS_PASSWORD", B::PASSWORD)]);
    let sent = daemon
        .send_in_background(bulk_signed(1000, "inv_bus_", 0), Duration::ZERO)
        .join()
        .unwrap();
    assert!(
        eventually(90, || broker.count() >= 1000),
        "{} messages\n{}",
        broker.count(),
        daemon.logs()
    );
    wait_quiet(&config);
    let delivered = broker.delivered();
    assert_eq!(delivered.len(), 1000);
    let seen = by_event(&delivered);
    for id in &sent {
        assert_eq!(seen.get(id), Some(&1), "{id}");
    }
    for d in &delivered {
        assert!(d.idempotency_key.starts_with(&d.event_id), "{}", d.raw);
    }
    delivered
}

/// The broker killed and started again mid-stream: nothing the daemon
/// acknowledged is lost, and a message sent twice (its answer lost with
/// the connection) carries the same idempotency key. Returns what the
/// broker holds and the daemon's log.
pub fn a_restart_mid_stream_loses_nothing<B: Broker>() -> (Vec<Delivered>, String) {
    let env = Env::new();
    let mut broker = B::new(&env.path("broker"));
    broker.start();
    let config = config(&env, &broker);
    let daemon = Daemon::start_with_env(&config, &[("BUS_PASSWORD", B::PASSWORD)]);
    let sender =
        daemon.send_in_background(bulk_signed(300, "inv_kill_", 0), Duration::from_millis(5));
    assert!(eventually(30, || broker.count() >= 50), "{}", daemon.logs());
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    broker.start();
    let sent = sender.join().unwrap();
    assert!(
        eventually(90, || by_event(&broker.delivered()).len() >= 300),
        "{} events\n{}",
        by_event(&broker.delivered()).len(),
        daemon.logs()
    );
    wait_quiet(&config);
    let delivered = broker.delivered();
    let seen = by_event(&delivered);
    for id in &sent {
        assert!(seen.contains_key(id), "lost {id}");
    }
    let mut keys: HashMap<&str, &str> = HashMap::new();
    for d in &delivered {
        let before = keys.insert(d.idempotency_key.as_str(), d.event_id.as_str());
        assert!(before.is_none_or(|b| b == d.event_id));
    }
    assert_eq!(keys.len(), 300, "one key per job");
    (delivered, daemon.logs())
}

/// A wrong password: a dead letter after one attempt, saying so, the
/// password in no log and no dead letter.
pub fn a_wrong_password_is_a_dead_letter<B: Broker>() {
    let env = Env::new();
    let mut broker = B::new(&env.path("broker"));
    broker.start();
    let config = config(&env, &broker);
    let wrong = "wrong-bus-password-abcdefghij";
    let daemon = Daemon::start_with_env(&config, &[("BUS_PASSWORD", wrong)]);
    let id = daemon.send_viewed("inv_wrong");
    let mut dead = String::new();
    assert!(
        eventually(30, || {
            dead = cli(&["dlq", "list", "--json"], &config).1;
            dead.contains(&id)
        }),
        "{dead}\n{}",
        daemon.logs()
    );
    assert!(dead.contains(B::REFUSED), "{dead}");
    let lines: Vec<Value> = dead
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let job = lines.iter().find(|j| j["event_id"] == id.as_str()).unwrap();
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert!(!daemon.logs().contains(wrong), "the password is in the log");
    assert!(!dead.contains(wrong));
}

/// The broker down at start: the daemon starts, the first attempt fails
/// (the positive marker), the broker comes up, the job goes.
pub fn down_at_start_the_jobs_wait<B: Broker>() {
    let env = Env::new();
    let mut broker = B::new(&env.path("broker"));
    let config = config(&env, &broker);
    let daemon = Daemon::start_with_env(&config, &[("BUS_PASSWORD", B::PASSWORD)]);
    let id = daemon.send_viewed("inv_early");
    assert!(
        eventually(20, || daemon.logs().contains(&failed::<B>())),
        "{}",
        daemon.logs()
    );
    broker.start();
    assert!(
        eventually(60, || by_event(&broker.delivered()).contains_key(&id)),
        "{}",
        daemon.logs()
    );
}

/// An action's TLS settings for a broker with the certificates of
/// `certs` ([`make_test_certs`]): the CA to trust, and the client
/// certificate the broker asks for.
pub fn tls_settings(certs: &Path) -> String {
    format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certs.join("ca.crt").display(),
        certs.join("client.crt").display(),
        certs.join("client.key").display()
    )
}

/// Over TLS, both ways: the action with `ca_file` and a client certificate
/// reaches the broker, which takes only TLS on that port and only clients
/// with a certificate of its CA; a second action without `ca_file` is
/// refused by its own check of the broker's certificate (signed by a CA it
/// does not know); a third, without a client certificate, is refused by
/// the broker.
pub fn over_tls_with_the_certificate_checked<B: Broker>() {
    let env = Env::new();
    let certs = env.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_test_certs(&certs);
    let mut broker = B::new(&env.path("broker"));
    broker.tls(&certs);
    broker.start();
    let settings = broker.settings();
    assert!(settings.contains("ca_file"), "{settings}");
    assert!(settings.contains("cert_file"), "{settings}");
    let without = |key: &[&str]| -> String {
        settings
            .lines()
            .filter(|l| !key.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let stranger = without(&["ca_file"]);
    let anonymous = without(&["cert_file", "key_file"]);
    env.with_standard_plugins();
    env.add_plugin(&built_plugin(B::PLUGIN));
    // The stranger's and the anonymous one's messages go where the test
    // does not read.
    env.rule(
        "to-the-bus",
        &format!(
            "const EVENTS = [\"tight.invoiceViewed\"];\naction(\"bus\", {});\naction(\"stranger\", {});\naction(\"anonymous\", {});",
            broker.params(),
            B::ELSEWHERE,
            B::ELSEWHERE
        ),
    );
    let config = env.config(&format!(
        "[delivery]\nretry_schedule = [\"200ms\", \"1s\", \"1s\", \"1s\", \"1s\"]\njitter = 0.0\n\n{TIGHT_SOURCE}\n[actions.bus]\n{settings}\n[actions.stranger]\n{stranger}\n[actions.anonymous]\n{anonymous}"
    ));
    let daemon = Daemon::start_with_env(&config, &[("BUS_PASSWORD", B::PASSWORD)]);
    let id = daemon.send_viewed("inv_tls");
    assert!(
        eventually(60, || by_event(&broker.delivered()).contains_key(&id)),
        "{}",
        daemon.logs()
    );
    // The stranger refuses the broker's certificate; the broker refuses
    // the anonymous action, which shows none. Each failure says so.
    for action in ["stranger", "anonymous"] {
        let refused = |logs: &str| {
            logs.lines().any(|l| {
                l.contains("job failed (retryable)")
                    && l.contains(&format!("\"action\":\"{action}\""))
                    && l.to_lowercase().contains("certificate")
            })
        };
        assert!(
            eventually(30, || refused(&daemon.logs())),
            "{action}: {}",
            daemon.logs()
        );
    }
    assert_eq!(by_event(&broker.delivered()).get(&id), Some(&1));
}
