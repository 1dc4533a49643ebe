//! Restarts that no provider notices: the daemon takes the listening
//! socket systemd passes (socket activation). While a client keeps posting
//! signed webhooks, the daemon is stopped with SIGTERM and a new one is
//! started on the same socket, as `systemctl restart switchyard` does with
//! `switchyard.socket`: no connection is refused, every request is answered
//! 2xx (some later than usual: they wait in the socket's backlog), and
//! every event is routed once. A connection accepted just before the stop
//! is served the request its client sends, not closed unread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// Senders at once, and webhooks each sends.
const SENDERS: usize = 4;
const EACH: usize = 30;

#[test]
fn a_restart_on_an_inherited_socket_refuses_nothing_and_loses_nothing() {
    let env = Env::new();
    let config = env.standard();
    // The socket systemd would hold across the restart.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let first = Daemon::start_on(&config, &socket);
    assert_eq!(first.addr, addr);
    assert!(
        first.logged("the socket systemd passed"),
        "{}",
        first.logs()
    );

    let signed = Arc::new(Mutex::new(bulk_signed(SENDERS * EACH, "handover", 0)));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (signed, answered, failures) = (signed.clone(), answered.clone(), failures.clone());
            std::thread::spawn(move || {
                tls_provider();
                // A new connection for each webhook, as providers send them.
                let client = reqwest::blocking::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                for _ in 0..EACH {
                    let s = signed.lock().unwrap().pop().unwrap();
                    let result = client
                        .post(format!("http://{addr}/hooks/tight"))
                        .header("Tight-Verification", &s.token)
                        .header("content-type", "application/json")
                        .body(s.body)
                        .send();
                    match result {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", s.invoice, r.status()))
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{}: {e}", s.invoice)),
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(40));
                }
            })
        })
        .collect();

    // A third of the way in, the restart.
    assert!(eventually(60, || answered.load(Ordering::SeqCst) >= SENDERS * EACH / 3));
    let first_routed = first.logged("event routed");
    let status = first.stop();
    assert!(first_routed);
    assert!(status.success(), "{status:?}");
    let at_stop = answered.load(Ordering::SeqCst);
    let second = Daemon::start_on(&config, &socket);
    for s in senders {
        s.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "refused or failed: {failures:?}");
    // The restart fell among the requests, not after them all.
    assert!(at_stop < SENDERS * EACH, "{at_stop}");

    // Every event routed once, by one daemon or the other.
    let lines = env.wait_audit(SENDERS * EACH);
    let mut invoices: Vec<String> = lines
        .iter()
        .map(|l| l["params"]["invoice"].as_str().unwrap().to_string())
        .collect();
    invoices.sort();
    let n = invoices.len();
    invoices.dedup();
    assert_eq!((n, invoices.len()), (SENDERS * EACH, SENDERS * EACH));
    assert!(second.logged("the socket systemd passed"));
    // Each daemon served some of them.
    assert!(second.logged("event routed"), "{}", second.logs());
}

/// A connection the daemon accepted before it was told to stop, whose
/// request arrives only after: its client connected to a listening socket
/// and is owed an answer. It is served, not closed unread.
#[test]
fn a_connection_accepted_before_the_stop_is_served_its_request() {
    use std::io::{Read, Write};
    let env = Env::new();
    let config = env.standard();
    let d = Daemon::start(&config);
    let s = bulk_signed(1, "late", 0).pop().unwrap();
    let mut conn = std::net::TcpStream::connect(d.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The daemon has accepted it: open connections count it beside the
    // scrape's own.
    let open = || {
        value(
            &scrape(&d),
            "switchyard_connections_open",
            &[("listener", "webhooks")],
        )
    };
    assert!(eventually(10, || open() >= 2.0));
    d.terminate();
    assert!(d.logged("SIGTERM: shutting down"), "{}", d.logs());
    write!(
        conn,
        "POST /hooks/tight HTTP/1.1\r\nHost: {}\r\nTight-Verification: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        d.addr,
        s.token,
        s.body.len(),
        s.body
    )
    .unwrap_or_else(|e| panic!("the daemon closed the connection unread: {e}"));
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        d.logs()
    );
    assert!(answer.contains("accepted"), "{answer}");
    assert!(d.stop().success());

    // Stored before it was acknowledged: routed by this daemon or the next.
    let _next = Daemon::start(&config);
    let lines = env.wait_audit(1);
    assert_eq!(lines[0]["params"]["invoice"], s.invoice.as_str());
}

#[test]
fn check_says_which_socket_the_daemon_will_use() {
    let env = Env::new();
    let config = env.standard();
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("listener webhooks: binds 127.0.0.1:0 (no socket from systemd)"),
        "{out}"
    );
}
