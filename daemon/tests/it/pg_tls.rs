//! The shared store over TLS: a server that takes the store's database only
//! in TLS, its certificate signed by a CA of the test's own (made with the
//! `openssl` command, not the code under test).

use std::path::Path;

use crate::common::*;
use crate::pg::{sql, start_private_with};

/// A server whose database `sy` takes only TLS connections (its
/// `postgres` database also plain ones, to set up); the CA's certificate
/// is `ca.crt` in `certs`.
fn tls_server(certs: &Path) -> String {
    let certs = certs.to_path_buf();
    start_private_with(move |data| {
        make_test_certs(&certs);
        for f in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(f), data.join(f)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostnossl postgres all 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into()
    })
}

#[test]
fn the_shared_store_is_reached_in_tls_with_its_certificate_verified() {
    let env = Env::new();
    let certs = env.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let server = tls_server(&certs);
    sql(&format!("{server}/postgres"), "CREATE DATABASE sy");
    env.with_standard_plugins();
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId });"#,
    );
    let audit = env.path("data/audit.jsonl");
    let config = |url: &str, ca: bool| {
        let ca = if ca {
            "ca_file = \"certs/ca.crt\"\n"
        } else {
            ""
        };
        env.config(&format!(
            "[store]\nurl = \"{url}\"\n{ca}{TIGHT_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
            audit.display()
        ))
    };
    // In the clear: the server refuses the store's database.
    let (code, out) = cli(&["check"], &config(&format!("{server}/sy"), true));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no encryption"), "{out}");
    // In TLS, but the server's certificate is signed by no one trusted.
    let (code, out) = cli(
        &["check"],
        &config(&format!("{server}/sy?sslmode=require"), false),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("certificate"), "{out}");
    // In TLS, its CA trusted: the daemon runs on it, end to end.
    let config = config(&format!("{server}/sy?sslmode=require"), true);
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reachable; no schema yet"), "{out}");
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_tls");
    assert!(
        eventually(30, || std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .contains(&id)),
        "{}",
        daemon.logs()
    );
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("schema version 7; 1 instance(s) alive"),
        "{out}"
    );
}
