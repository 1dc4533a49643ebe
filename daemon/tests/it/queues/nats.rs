//! NATS JetStream (`plugins/nats`), read back with nats-py.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::*;

/// A nats-server of its own with JetStream, its store in the test's
/// folder, one user with the password.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// The folder of the certificates, when it takes only TLS.
    tls: Option<PathBuf>,
}

impl Nats {
    fn client_url(&self) -> String {
        format!(
            "{}://switchyard:{}@127.0.0.1:{}",
            if self.tls.is_some() { "tls" } else { "nats" },
            Self::PASSWORD,
            self.port
        )
    }

    /// The test's client, trusting the test's CA and showing the test's
    /// client certificate when the server takes TLS.
    fn client(&self, args: &[&str]) -> Option<String> {
        queue_client_trusting(self.tls.as_deref(), args)
    }
}

impl Broker for Nats {
    const PLUGIN: &'static str = "switchyard_nats";
    const PASSWORD: &'static str = "nats-test-password-0123456789";
    const FAILED: &'static str = "nats:";
    const REFUSED: &'static str = "nats refused the credentials";

    fn new(dir: &Path) -> Nats {
        std::fs::create_dir_all(dir).unwrap();
        Nats {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            tls: None,
        }
    }

    fn tls(&mut self, certs: &Path) {
        self.tls = Some(certs.to_path_buf());
    }

    fn start(&mut self) {
        let mut command = Command::new("nats-server");
        if let Some(certs) = &self.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(certs.join("server.crt"))
                .arg("--tlskey")
                .arg(certs.join("server.key"))
                .arg("--tlsverify")
                .arg("--tlscacert")
                .arg(certs.join("ca.crt"));
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--user", "switchyard", "--pass", Self::PASSWORD])
            .arg("-js")
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        // Up when a client can make the stream the action publishes into
        // (made again after a restart, it is the same stream).
        let url = self.client_url();
        assert!(
            eventually(30, || self
                .client(&["nats-stream", &url, "INVOICES", "switchyard.>"])
                .is_some()),
            "nats-server did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn settings(&self) -> String {
        let common = "username = \"switchyard\"\npassword = { env = \"BUS_PASSWORD\" }\nconnect_timeout_ms = 1000\n";
        match &self.tls {
            None => format!(
                "plugin = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\n{common}",
                self.port
            ),
            Some(certs) => format!(
                "plugin = \"nats\"\nurl = \"tls://127.0.0.1:{}\"\n{common}{}",
                self.port,
                tls_settings(certs)
            ),
        }
    }

    fn params(&self) -> &'static str {
        "#{}"
    }

    const ELSEWHERE: &'static str = r#"#{ subject: "elsewhere.x" }"#;

    fn delivered(&self) -> Vec<Delivered> {
        by_headers(self.client(&["nats-read", &self.client_url(), "INVOICES"]))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_thousand_events_reach_the_stream_once_each_acknowledged() {
    let delivered = a_thousand_arrive_once::<Nats>();
    let m = &delivered[0].raw;
    // The default subject (the event type's), the idempotency key as
    // JetStream's message id.
    assert_eq!(m["subject"], "switchyard.tight.invoiceViewed");
    assert_eq!(m["headers"]["Nats-Msg-Id"], m["headers"]["idempotency_key"]);
    assert_eq!(m["headers"]["source"], "tight");
    assert_eq!(m["headers"]["Content-Type"], "application/json");
    let body: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], m["headers"]["event_id"]);
}

#[test]
fn nats_killed_mid_stream_loses_nothing_and_jetstream_drops_the_repeats() {
    // The client holds what it could not send until it is connected
    // again; JetStream drops what is sent twice by its Nats-Msg-Id: each
    // event is in the stream exactly once.
    let (delivered, _) = a_restart_mid_stream_loses_nothing::<Nats>();
    assert_eq!(delivered.len(), 300);
}

#[test]
fn a_wrong_nats_password_is_a_dead_letter_that_says_so() {
    a_wrong_password_is_a_dead_letter::<Nats>();
}

#[test]
fn nats_down_at_start_the_daemon_starts_and_the_jobs_wait() {
    down_at_start_the_jobs_wait::<Nats>();
}

#[test]
fn nats_over_tls_with_the_servers_certificate_checked() {
    over_tls_with_the_certificate_checked::<Nats>();
}
