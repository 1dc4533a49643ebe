//! RabbitMQ (`plugins/amqp`), read back with pika.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::os::unix::process::CommandExt;

use serde_json::Value;

use super::*;

/// A RabbitMQ node of its own: its AMQP and distribution ports, its
/// database and logs in the test's folder, one user with the password.
/// Its messages are persistent and its queue durable: what it confirmed, it
/// keeps across a kill.
struct Rabbit {
    child: Option<Child>,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// The folder of the certificates and the TLS port, when it takes TLS
    /// (beside the plain port, which the test's consumer uses).
    tls: Option<(PathBuf, u16)>,
}

impl Rabbit {
    fn admin_url(&self) -> String {
        format!(
            "amqp://switchyard:{}@127.0.0.1:{}/%2f",
            Self::PASSWORD,
            self.port
        )
    }
}

impl Broker for Rabbit {
    const PLUGIN: &'static str = "switchyard_amqp";
    const PASSWORD: &'static str = "amqp-test-password-0123456789";
    const FAILED: &'static str = "rabbitmq";
    const REFUSED: &'static str = "rabbitmq refused the credentials";

    fn new(dir: &Path) -> Rabbit {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{port}\ndefault_user = switchyard\ndefault_pass = {}\nlog.console = false\nlog.file.level = warning\n",
                Self::PASSWORD
            ),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        Rabbit {
            child: None,
            port,
            dist_port: free_port(),
            dir: dir.to_path_buf(),
            tls: None,
        }
    }

    fn tls(&mut self, certs: &Path) {
        let port = free_port();
        let mut conf = std::fs::read_to_string(self.dir.join("rabbitmq.conf")).unwrap();
        conf.push_str(&format!(
            "listeners.ssl.default = 127.0.0.1:{port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
            certs.join("ca.crt").display(),
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        ));
        std::fs::write(self.dir.join("rabbitmq.conf"), conf).unwrap();
        self.tls = Some((certs.to_path_buf(), port));
    }

    fn start(&mut self) {
        // The port mapper the nodes share, on 127.0.0.1 (a second start
        // finds it running and leaves it).
        let _ = Command::new("epmd")
            .args(["-daemon", "-address", "127.0.0.1"])
            .status();
        let dir = &self.dir;
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", format!("sy{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server (apt-get install rabbitmq-server)");
        self.child = Some(child);
        // Up when a client can make the exchange, the queue and the binding
        // the action publishes through.
        let url = self.admin_url();
        assert!(
            eventually(60, || queue_client(&[
                "amqp-setup",
                &url,
                "switchyard",
                "invoices",
                "tight.#"
            ])
            .is_some()),
            "rabbitmq-server did not start: {}",
            std::fs::read_to_string(
                self.dir
                    .join("log")
                    .join(format!("sy{}@localhost.log", self.port))
            )
            .unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group: the start script, the Erlang VM, its helpers.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }

    fn settings(&self) -> String {
        let common = "username = \"switchyard\"\npassword = { env = \"BUS_PASSWORD\" }\nexchange = \"switchyard\"\nconnect_timeout_ms = 2000\n";
        match &self.tls {
            None => format!(
                "plugin = \"amqp\"\nurl = \"amqp://127.0.0.1:{}/%2f\"\n{common}",
                self.port
            ),
            Some((certs, port)) => format!(
                "plugin = \"amqp\"\nurl = \"amqps://127.0.0.1:{port}/%2f\"\n{common}{}",
                tls_settings(certs)
            ),
        }
    }

    fn params(&self) -> &'static str {
        "#{}"
    }

    const ELSEWHERE: &'static str = r#"#{ routing_key: "elsewhere" }"#;

    fn delivered(&self) -> Vec<Delivered> {
        by_headers(queue_client(&["amqp-read", &self.admin_url(), "invoices"]))
    }

    fn count(&self) -> usize {
        queue_client(&["amqp-count", &self.admin_url(), "invoices"])
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_thousand_events_reach_the_queue_once_each_confirmed_and_persistent() {
    let delivered = a_thousand_arrive_once::<Rabbit>();
    let m = &delivered[0].raw;
    // Through the topic exchange, by the event type (the default routing
    // key), persistent, the idempotency key as the message id.
    assert_eq!(m["exchange"], "switchyard");
    assert_eq!(m["routing_key"], "tight.invoiceViewed");
    assert_eq!(m["delivery_mode"], 2);
    assert_eq!(m["type"], "tight.invoiceViewed");
    assert_eq!(m["content_type"], "application/json");
    assert_eq!(m["message_id"], m["headers"]["idempotency_key"]);
    assert_eq!(m["headers"]["source"], "tight");
    let body: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], m["headers"]["event_id"]);
}

#[test]
fn rabbitmq_killed_mid_stream_loses_nothing_and_sends_again_under_the_same_key() {
    let (_, logs) = a_restart_mid_stream_loses_nothing::<Rabbit>();
    assert!(
        logs.contains(&failed::<Rabbit>()),
        "a failed attempt was logged"
    );
}

#[test]
fn a_wrong_amqp_password_is_a_dead_letter_that_says_so() {
    a_wrong_password_is_a_dead_letter::<Rabbit>();
}

#[test]
fn rabbitmq_down_at_start_the_daemon_starts_and_the_jobs_wait() {
    down_at_start_the_jobs_wait::<Rabbit>();
}

#[test]
fn amqps_with_the_brokers_certificate_checked() {
    over_tls_with_the_certificate_checked::<Rabbit>();
}
