//! Queue outputs from outside: a real broker from Debian's packages,
//! started by the test on 127.0.0.1, and read back with its own client.
//!
//! Redis Streams (`plugins/redis`): 1,000 events through a rule arrive
//! once each; Redis killed and started again mid-stream loses nothing the
//! daemon acknowledged, and what it sends again carries the same
//! idempotency key; a wrong password is a dead letter saying so, with the
//! password in no log; Redis down at start: the daemon starts, the jobs
//! wait and go once it is up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const PASSWORD: &str = "redis-test-password-0123456789";

/// A redis-server of its own: a port, a folder, its append-only file
/// synced on every write (what it answered, it keeps across a kill).
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn new(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        Redis {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        }
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--requirepass", PASSWORD, "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        assert!(
            eventually(20, || self.cli(&["PING"]).trim() == "\"PONG\""),
            "redis-server did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A command through redis-cli, its answer as JSON text.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
            ])
            .args(["-a", PASSWORD, "--json"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every entry of a stream: its fields.
    fn entries(&self, stream: &str) -> Vec<HashMap<String, String>> {
        let out = self.cli(&["XRANGE", stream, "-", "+"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Array(vec![]));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let fields = e[1].as_array().cloned().unwrap_or_default();
                        fields
                            .chunks(2)
                            .map(|kv| {
                                (
                                    kv[0].as_str().unwrap_or_default().to_string(),
                                    kv[1].as_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Tight source, a rule sending every invoiceViewed to the `bus` action,
/// the redis plugin (its password from `REDIS_PASSWORD`), quick retries.
fn config(env: &Env, redis: &Redis) -> PathBuf {
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_redis"));
    env.rule(
        "to-the-bus",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("bus", #{ stream: "invoices" });"#,
    );
    env.config(&format!(
        r#"[delivery]
retry_schedule = ["200ms", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.bus]
plugin = "redis"
url = "{}"
password = {{ env = "REDIS_PASSWORD" }}
connect_timeout_ms = 1000
"#,
        redis.url()
    ))
}

/// Each event id in the stream, and how many entries carried it.
fn by_event(entries: &[HashMap<String, String>]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in entries {
        *out.entry(e["event_id"].clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn a_thousand_events_reach_the_stream_once_each() {
    let env = Env::new();
    let mut redis = Redis::new(&env.path("redis"));
    redis.start();
    let config = config(&env, &redis);
    let daemon = Daemon::start_with_env(&config, &[("REDIS_PASSWORD", PASSWORD)]);
    let sent = daemon
        .send_in_background(bulk_signed(1000, "inv_bus_", 0), Duration::ZERO)
        .join()
        .unwrap();
    assert!(
        eventually(60, || redis.entries("invoices").len() >= 1000),
        "{} entries\n{}",
        redis.entries("invoices").len(),
        daemon.logs()
    );
    wait_quiet(&config);
    let entries = redis.entries("invoices");
    assert_eq!(entries.len(), 1000);
    let seen = by_event(&entries);
    for id in &sent {
        assert_eq!(seen.get(id), Some(&1), "{id}");
    }
    let e = &entries[0];
    assert_eq!(e["event_type"], "tight.invoiceViewed");
    assert_eq!(e["source"], "tight");
    let body: Value = serde_json::from_str(&e["body"]).unwrap();
    assert_eq!(body["id"], e["event_id"].as_str());
    assert!(e["idempotency_key"].starts_with(&e["event_id"]));
}

#[test]
fn redis_restarted_mid_stream_loses_nothing_and_sends_again_under_the_same_key() {
    let env = Env::new();
    let mut redis = Redis::new(&env.path("redis"));
    redis.start();
    let config = config(&env, &redis);
    let daemon = Daemon::start_with_env(&config, &[("REDIS_PASSWORD", PASSWORD)]);
    let sender =
        daemon.send_in_background(bulk_signed(300, "inv_kill_", 0), Duration::from_millis(5));
    assert!(
        eventually(30, || redis.entries("invoices").len() >= 50),
        "{}",
        daemon.logs()
    );
    redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    redis.start();
    let sent = sender.join().unwrap();
    assert!(
        eventually(60, || by_event(&redis.entries("invoices")).len() >= 300),
        "{} events\n{}",
        by_event(&redis.entries("invoices")).len(),
        daemon.logs()
    );
    wait_quiet(&config);
    let entries = redis.entries("invoices");
    let seen = by_event(&entries);
    for id in &sent {
        assert!(seen.contains_key(id), "lost {id}");
    }
    // What was sent twice (its answer lost with the connection) carries
    // the same idempotency key: a consumer drops the second.
    let mut keys: HashMap<&str, &str> = HashMap::new();
    for e in &entries {
        let before = keys.insert(e["idempotency_key"].as_str(), e["event_id"].as_str());
        assert!(before.is_none_or(|b| b == e["event_id"]));
    }
    assert_eq!(keys.len(), 300, "one key per job");
    assert!(
        daemon.logs().contains("redis:"),
        "a failed attempt was logged"
    );
}

#[test]
fn a_wrong_password_is_a_dead_letter_that_says_so() {
    let env = Env::new();
    let mut redis = Redis::new(&env.path("redis"));
    redis.start();
    let config = config(&env, &redis);
    let wrong = "wrong-redis-password-abcdefghij";
    let daemon = Daemon::start_with_env(&config, &[("REDIS_PASSWORD", wrong)]);
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
    assert!(dead.contains("redis refused the credentials"), "{dead}");
    let lines: Vec<Value> = dead
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let job = lines.iter().find(|j| j["event_id"] == id.as_str()).unwrap();
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert!(!daemon.logs().contains(wrong), "the password is in the log");
    assert!(!dead.contains(wrong));
}

#[test]
fn redis_down_at_start_the_daemon_starts_and_the_jobs_wait() {
    let env = Env::new();
    let mut redis = Redis::new(&env.path("redis"));
    let config = config(&env, &redis);
    let daemon = Daemon::start_with_env(&config, &[("REDIS_PASSWORD", PASSWORD)]);
    let id = daemon.send_viewed("inv_early");
    // The first attempt failed (the positive marker), then Redis comes up.
    assert!(
        eventually(20, || daemon.logs().contains("redis:")),
        "{}",
        daemon.logs()
    );
    redis.start();
    assert!(
        eventually(30, || by_event(&redis.entries("invoices"))
            .contains_key(&id)),
        "{}",
        daemon.logs()
    );
}
