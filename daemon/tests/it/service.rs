//! The service endpoints: /healthz, /readyz, and /metrics read by the
//! Prometheus Python client's parser while requests arrive.

use std::process::Command;

use crate::common::*;

#[test]
fn metrics_move_as_requests_arrive_and_health_answers() {
    let env = Env::new();
    let daemon = Daemon::start(&env.standard());
    assert_eq!(get(&daemon, "/healthz").0, 200);
    let (status, body) = get(&daemon, "/readyz");
    assert_eq!(status, 200, "{body}");

    let before = scrape(&daemon);
    assert_eq!(
        value(
            &before,
            "switchyard_webhooks_accepted_total",
            &[("source", "tight")]
        ),
        0.0
    );
    daemon.send_viewed("inv_m1");
    daemon.send_viewed("inv_m2");
    let body = invoice_viewed("inv_m3");
    let bad = pyjwt("wrong-secret", body.as_bytes(), &[]);
    assert_eq!(
        daemon
            .post("/hooks/tight", &[("Tight-Verification", &bad)], body)
            .0,
        401
    );
    assert_eq!(env.wait_audit(2).len(), 2);

    assert!(eventually(10, || {
        let m = scrape(&daemon);
        value(
            &m,
            "switchyard_action_attempts_total",
            &[("action", "audit"), ("outcome", "done")],
        ) == 2.0
    }));
    let m = scrape(&daemon);
    assert_eq!(
        value(
            &m,
            "switchyard_webhooks_accepted_total",
            &[("source", "tight")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_webhooks_rejected_total",
            &[("source", "tight"), ("reason", "unauthenticated")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_rule_runs_total",
            &[("rule", "viewed"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_ingest_seconds_count",
            &[("source", "tight")]
        ),
        3.0
    );
    assert!(value(&m, "switchyard_store_commit_seconds_count", &[]) >= 2.0);
    assert_eq!(
        value(
            &m,
            "switchyard_plugin_calls_total",
            &[("plugin", "tight"), ("call", "verify"), ("outcome", "ok")]
        ),
        2.0
    );
    // The file action takes its jobs in batch calls (ABI 1.3): no call of
    // its per-job entry point.
    let batch_calls = value(
        &m,
        "switchyard_plugin_calls_total",
        &[
            ("plugin", "file"),
            ("call", "execute_batch"),
            ("outcome", "ok"),
        ],
    );
    assert!((1.0..=2.0).contains(&batch_calls), "{batch_calls}");
    assert_eq!(
        value(
            &m,
            "switchyard_plugin_calls_total",
            &[("plugin", "file"), ("call", "execute")]
        ),
        0.0
    );
    assert_eq!(value(&m, "switchyard_rules_version", &[]), 1.0);
}

/// Type=notify as systemd sees it: a datagram socket in NOTIFY_SOCKET.
#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    let config = env.standard();
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let daemon = Daemon::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let heard = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = heard.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut all = sink.lock().unwrap();
                all.push_str(&msg);
                all.push('\n');
                if msg.contains("STOPPING=1") {
                    break;
                }
            }
        }
    });
    let has = |what: &str| heard.lock().unwrap().contains(what);
    assert!(
        eventually(10, || has("READY=1")),
        "{}",
        heard.lock().unwrap()
    );
    assert!(eventually(10, || has("WATCHDOG=1")));
    let _ = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status();
    assert!(
        eventually(10, || has("RELOADING=1")),
        "{}",
        heard.lock().unwrap()
    );
    assert!(has("MONOTONIC_USEC="));
    let status = daemon.stop();
    assert!(status.success());
    reader.join().unwrap();
    assert!(has("STOPPING=1"), "{}", heard.lock().unwrap());
}

/// `{ credential = "NAME" }` reads $CREDENTIALS_DIRECTORY/NAME, as systemd's
/// LoadCredential= provides it.
#[test]
fn secrets_from_systemd_credentials() {
    let env = Env::new();
    let creds = env.path("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("tight-secret"), format!("{SECRET}\n")).unwrap();
    let config = env.standard();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"{ env = "SWITCHYARD_IT_SECRET" }"#,
        r#"{ credential = "tight-secret" }"#,
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start_with_env(
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    daemon.send_viewed("inv_cred");
    assert_eq!(env.wait_audit(1).len(), 1);
    // Without the directory, check names the credential and not its value.
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 1);
    assert!(
        out.contains("credential tight-secret") && out.contains("CREDENTIALS_DIRECTORY"),
        "{out}"
    );
    assert!(!out.contains(SECRET));
}

/// The shipped units: `systemd-analyze verify` passes on the service (with
/// this build's binary in place of /usr/bin/switchyard) and on its socket
/// units, and `systemd-analyze security` rates the service 2.0 or better.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(repo_root().join("systemd/switchyard.service")).unwrap();
    let env = Env::new();
    let path = env.path("switchyard.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/switchyard", env!("CARGO_BIN_EXE_switchyard")),
    )
    .unwrap();
    // The socket units beside it: the webhook socket systemd holds across
    // restarts, and the admin one.
    let sockets: Vec<_> = ["switchyard.socket", "switchyard-admin.socket"]
        .iter()
        .map(|name| {
            let to = env.path(name);
            std::fs::copy(repo_root().join("systemd").join(name), &to).unwrap();
            to
        })
        .collect();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .args(&sockets)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify (with the sockets): {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for socket in &sockets {
        let text = std::fs::read_to_string(socket).unwrap();
        assert!(text.contains("Service=switchyard.service"), "{text}");
        assert!(text.contains("FileDescriptorName="), "{text}");
    }
    let analyze = |args: &[&str]| {
        Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd) is needed")
    };
    let verify = analyze(&["verify"]);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = analyze(&["security", "--offline=yes", "--threshold=20"]);
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("an overall exposure level");
    assert!(level <= 2.0, "{level}");
}
