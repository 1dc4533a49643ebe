//! Redis Streams (`plugins/redis`), read back with redis-cli.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::*;

/// A redis-server of its own: a port, a folder, its append-only file
/// synced on every write (what it answered, it keeps across a kill).
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// The folder of the certificates and the TLS port, when it takes TLS
    /// (beside the plain port, which redis-cli uses).
    tls: Option<(PathBuf, u16)>,
}

impl Redis {
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
            .args(["-a", Self::PASSWORD, "--json"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every entry of the stream: its fields.
    fn entries(&self) -> Vec<HashMap<String, String>> {
        let out = self.cli(&["XRANGE", "invoices", "-", "+"]);
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
}

impl Broker for Redis {
    const PLUGIN: &'static str = "switchyard_redis";
    const PASSWORD: &'static str = "redis-test-password-0123456789";
    const FAILED: &'static str = "redis:";
    const REFUSED: &'static str = "redis refused the credentials";

    fn new(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        Redis {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            tls: None,
        }
    }

    fn tls(&mut self, certs: &Path) {
        self.tls = Some((certs.to_path_buf(), free_port()));
    }

    fn start(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some((certs, port)) = &self.tls {
            command
                .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "yes"])
                .arg("--tls-cert-file")
                .arg(certs.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt"));
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--requirepass", Self::PASSWORD, "--save", ""])
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

    fn settings(&self) -> String {
        let common = "password = { env = \"BUS_PASSWORD\" }\nconnect_timeout_ms = 1000\n";
        match &self.tls {
            None => format!(
                "plugin = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n{common}",
                self.port
            ),
            Some((certs, port)) => format!(
                "plugin = \"redis\"\nurl = \"rediss://127.0.0.1:{port}/0\"\n{common}{}",
                tls_settings(certs)
            ),
        }
    }

    fn params(&self) -> &'static str {
        r#"#{ stream: "invoices" }"#
    }

    const ELSEWHERE: &'static str = r#"#{ stream: "elsewhere" }"#;

    fn delivered(&self) -> Vec<Delivered> {
        self.entries()
            .into_iter()
            .map(|e| Delivered {
                event_id: e["event_id"].clone(),
                idempotency_key: e["idempotency_key"].clone(),
                raw: serde_json::to_value(&e).unwrap(),
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_thousand_events_reach_the_stream_once_each() {
    let delivered = a_thousand_arrive_once::<Redis>();
    let e = &delivered[0].raw;
    assert_eq!(e["event_type"], "tight.invoiceViewed");
    assert_eq!(e["source"], "tight");
    let body: Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], e["event_id"]);
}

#[test]
fn redis_restarted_mid_stream_loses_nothing_and_sends_again_under_the_same_key() {
    let (_, logs) = a_restart_mid_stream_loses_nothing::<Redis>();
    assert!(
        logs.contains(&failed::<Redis>()),
        "a failed attempt was logged"
    );
}

#[test]
fn a_wrong_password_is_a_dead_letter_that_says_so() {
    a_wrong_password_is_a_dead_letter::<Redis>();
}

#[test]
fn redis_down_at_start_the_daemon_starts_and_the_jobs_wait() {
    down_at_start_the_jobs_wait::<Redis>();
}

#[test]
fn rediss_with_the_servers_certificate_checked() {
    over_tls_with_the_certificate_checked::<Redis>();
}
