//! Clients that try to knock the listeners over: thousands of half-open
//! requests, stalled bodies, header floods, more connections than allowed,
//! idle keep-alives. Through all of it a correctly signed webhook is
//! answered and routed, and the server closes what stalls.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// Opens a connection and writes `bytes` on it.
fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect to the daemon");
    s.write_all(bytes).unwrap();
    s
}

/// Reads until the server closes the connection (end of stream or reset)
/// or `deadline` passes. Returns what arrived and whether it was closed.
fn until_closed(s: &mut TcpStream, deadline: Instant) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

/// A signed invoiceViewed posted on a new connection, answered within
/// `within` or failing.
fn post_signed(daemon: &Daemon, invoice: &str, token: &str, within: Duration) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(within)
        .build()
        .unwrap();
    let resp = client
        .post(daemon.url("/hooks/tight"))
        .header("Tight-Verification", token)
        .body(invoice_viewed(invoice))
        .send()
        .expect("the signed webhook is answered while the listener is under attack");
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

/// The issue's attack: with the soft open-file limit systemd gives a
/// service, 3,000 connections that send half a request line and 500 that
/// stall in their bodies. A signed webhook is still answered within 2 s and
/// routed; the server closes every stalled connection at its deadline.
#[test]
fn slow_clients_cannot_starve_the_listener() {
    // The attacker's side needs its own files, and so does the daemon.
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        files >= 8_000,
        "this test holds 3,500 connections: it needs an open-file hard limit of 8,000 or more, not {files}"
    );
    let env = Env::new();
    let config = env.standard_with(
        "[http]\nheader_timeout = \"3s\"\nbody_timeout = \"4s\"\n",
        "",
    );
    let daemon = Daemon::start_with_systemd_file_limit(&config);
    assert!(
        daemon.logged("raised the open-file limit"),
        "{}",
        daemon.logs()
    );
    let body = invoice_viewed("inv_under_attack");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let late_body = invoice_viewed("inv_after_attack");
    let late_token = pyjwt(SECRET, late_body.as_bytes(), &[]);

    let half_lines: Vec<TcpStream> = (0..3000)
        .map(|_| open(daemon.addr, b"POST /hooks/tight HT"))
        .collect();
    let stalled_head = format!(
        "POST /hooks/tight HTTP/1.1\r\nhost: x\r\ntight-verification: {token}\r\ncontent-length: 5000\r\n\r\n{{\"type\":"
    );
    let stalled_bodies: Vec<TcpStream> = (0..500)
        .map(|_| open(daemon.addr, stalled_head.as_bytes()))
        .collect();

    let (status, answer) = post_signed(&daemon, "inv_under_attack", &token, Duration::from_secs(2));
    assert_eq!(status, 200, "{answer}");
    let routed = env.wait_audit(1);
    assert_eq!(routed.len(), 1, "{}", daemon.logs());
    assert_eq!(routed[0]["params"]["invoice"], "inv_under_attack");

    // Every stalled connection is closed by the server: the half lines at
    // the head deadline, the bodies with a 408 at theirs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut open_heads = 0;
    for mut s in half_lines {
        let (_, closed) = until_closed(&mut s, deadline);
        open_heads += usize::from(!closed);
    }
    let mut open_bodies = 0;
    let mut answered_408 = 0;
    for mut s in stalled_bodies {
        let (got, closed) = until_closed(&mut s, deadline);
        open_bodies += usize::from(!closed);
        answered_408 += usize::from(got.starts_with(b"HTTP/1.1 408"));
    }
    assert_eq!(open_heads, 0, "half-open requests the server kept");
    assert_eq!(open_bodies, 0, "stalled bodies the server kept");
    assert_eq!(answered_408, 500, "stalled bodies are answered 408");

    let samples = scrape(&daemon);
    let timed_out = |phase: &str| {
        value(
            &samples,
            "switchyard_connections_timed_out_total",
            &[("listener", "webhooks"), ("phase", phase)],
        )
    };
    assert!(timed_out("head") >= 3000.0, "{samples:?}");
    assert_eq!(timed_out("body"), 500.0);
    let rejected = value(
        &samples,
        "switchyard_webhooks_rejected_total",
        &[("source", "tight"), ("reason", "body_timeout")],
    );
    assert_eq!(rejected, 500.0);

    // And the daemon goes on as before.
    let (status, answer) = post_signed(
        &daemon,
        "inv_after_attack",
        &late_token,
        Duration::from_secs(20),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(env.wait_audit(2).len(), 2);
}

/// Too many header lines, or too many header bytes, are answered 431 and
/// the connection closed; an overlong request line likewise (414 or 431).
#[test]
fn header_floods_are_answered_431() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let deadline = || Instant::now() + Duration::from_secs(10);
    let status_of = |request: Vec<u8>| {
        let mut s = open(daemon.addr, &request);
        let (got, closed) = until_closed(&mut s, deadline());
        assert!(closed, "the server closes the connection");
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut many = b"POST /hooks/tight HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("x-flood-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    assert!(status_of(many).starts_with("HTTP/1.1 431"));

    let big = format!(
        "POST /hooks/tight HTTP/1.1\r\nhost: x\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    assert!(status_of(big.into_bytes()).starts_with("HTTP/1.1 431"));

    let long_line = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(40 * 1024));
    let line = status_of(long_line.into_bytes());
    assert!(
        line.starts_with("HTTP/1.1 431") || line.starts_with("HTTP/1.1 414"),
        "{line}"
    );

    // Within the limits, the same listener answers.
    daemon.send_viewed("inv_after_flood");
    assert_eq!(env.wait_audit(1).len(), 1);
}

/// Beyond `max_connections`, a new connection is answered 503 and closed at
/// once, not queued; once connections close, webhooks are served again.
#[test]
fn connections_over_the_bound_are_refused_at_once() {
    let env = Env::new();
    let config = env.standard_with("[http]\nmax_connections = 20\n", "");
    let daemon = Daemon::start(&config);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| open(daemon.addr, b"POST /hooks/tight HTTP/1.1\r\n"))
        .collect();
    // The 21st (the server takes connections in order; retry while the
    // first 20 are still being accepted).
    let refused = (0..50).find_map(|_| {
        let mut s = open(daemon.addr, b"");
        let (got, closed) = until_closed(&mut s, Instant::now() + Duration::from_secs(10));
        assert!(closed, "a connection over the bound is closed, not queued");
        got.starts_with(b"HTTP/1.1 503").then_some(got)
    });
    let refused = refused.expect("a connection over the bound is answered 503");
    assert!(String::from_utf8_lossy(&refused).contains("retry-after: 1"));
    assert!(daemon.logged("connection bound reached"));

    drop(held);
    assert!(
        eventually(10, || {
            let body = invoice_viewed("inv_after_bound");
            let token = pyjwt(SECRET, body.as_bytes(), &[]);
            reqwest::blocking::Client::new()
                .post(daemon.url("/hooks/tight"))
                .header("Tight-Verification", token)
                .body(body)
                .send()
                .is_ok_and(|r| r.status().as_u16() == 200)
        }),
        "served again once the held connections closed"
    );
    let samples = scrape(&daemon);
    assert!(
        value(
            &samples,
            "switchyard_connections_refused_total",
            &[("listener", "webhooks")]
        ) >= 1.0
    );
}

/// Opens a connection from `from` (another loopback address: another
/// client, as the daemon sees it) and writes `bytes` on it.
fn open_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).expect("connect to the daemon");
    let mut s: TcpStream = socket.into();
    s.write_all(bytes).unwrap();
    s
}

/// `max_connections_per_client`: one address holding its most connections
/// gets 503 for a new one, closed at once, while another address is
/// served; once it lets go of one, it is served again.
#[test]
fn one_client_cannot_hold_more_than_its_connections() {
    let env = Env::new();
    let config = env.standard_with(
        "[http]
max_connections_per_client = 5
",
        "",
    );
    let daemon = Daemon::start(&config);
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| open_from("127.0.0.2", daemon.addr, b"POST /hooks/tight HTTP/1.1\r\n"))
        .collect();
    let mut sixth = open_from("127.0.0.2", daemon.addr, b"");
    let (got, closed) = until_closed(&mut sixth, Instant::now() + Duration::from_secs(10));
    assert!(closed, "closed, not queued");
    assert!(
        got.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(daemon.logged("a client holds its most connections"));
    // Another client is served meanwhile.
    let webhook = |from: &str, invoice: &str| {
        let body = invoice_viewed(invoice);
        let token = pyjwt(SECRET, body.as_bytes(), &[]);
        let mut s = open_from(
            from,
            daemon.addr,
            format!(
                "POST /hooks/tight HTTP/1.1\r\nhost: x\r\ntight-verification: {token}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let (got, _) = until_closed(&mut s, Instant::now() + Duration::from_secs(10));
        String::from_utf8_lossy(&got).into_owned()
    };
    let other = webhook("127.0.0.3", "inv_other_client");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The first client lets go of one: served again.
    drop(held.pop());
    assert!(
        eventually(10, || webhook("127.0.0.2", "inv_let_go")
            .starts_with("HTTP/1.1 200")),
        "served again once it held fewer"
    );
}

/// A keep-alive connection is closed after `idle_timeout` without a request,
/// on both listeners; the admin listener closes a slow head too.
#[test]
fn idle_and_slow_connections_are_closed_on_both_listeners() {
    let env = Env::new();
    let config = env.standard_with(
        "[http]\nidle_timeout = \"1s\"\nheader_timeout = \"2s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"admin-token-0123456789abcdef\"\n",
        "",
    );
    let daemon = Daemon::start(&config);
    for addr in [daemon.addr, daemon.admin_addr()] {
        let mut s = open(addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        // The answer first: the connection was served and kept alive...
        let mut answer = [0u8; 12];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_exact(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
        // ...then closed for idling.
        let (_, closed) = until_closed(&mut s, Instant::now() + Duration::from_secs(15));
        assert!(
            closed,
            "an idle keep-alive connection to {addr} is closed (webhooks on {})",
            daemon.addr
        );

        let mut slow = open(addr, b"GET /heal");
        let (got, closed) = until_closed(&mut slow, Instant::now() + Duration::from_secs(15));
        assert!(closed, "a slow head on {addr} is closed");
        assert!(
            got.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let samples = scrape(&daemon);
    for listener in ["webhooks", "admin"] {
        for phase in ["idle", "head"] {
            assert!(
                value(
                    &samples,
                    "switchyard_connections_timed_out_total",
                    &[("listener", listener), ("phase", phase)]
                ) >= 1.0,
                "{listener} {phase}"
            );
        }
    }
}

/// A flood of forged signatures is counted, each one, but does not flood
/// the log: one line per source and reason in a while, the next saying how
/// many went unlogged.
#[test]
fn a_flood_of_forged_signatures_is_counted_not_logged_line_by_line() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let client = reqwest::blocking::Client::new();
    let body = invoice_viewed("inv_forged");
    let forged = pyjwt("not-the-secret-at-all-0123456789", body.as_bytes(), &[]);
    let started = Instant::now();
    for _ in 0..300 {
        let status = client
            .post(daemon.url("/hooks/tight"))
            .header("Tight-Verification", &forged)
            .body(body.clone())
            .send()
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 401);
    }
    let periods = started.elapsed().as_secs() / 10 + 2;
    // The daemon got past the flood: a signed webhook is routed.
    daemon.send_viewed("inv_after_flood");
    env.wait_audit(1);
    let samples = scrape(&daemon);
    assert_eq!(
        value(
            &samples,
            "switchyard_webhooks_rejected_total",
            &[("source", "tight"), ("reason", "unauthenticated")]
        ),
        300.0
    );
    let lines = daemon
        .logs()
        .lines()
        .filter(|l| l.contains("webhook refused") && l.contains("unauthenticated"))
        .count();
    // At most 5 lines in each 10 s that the flood lasted.
    let most = 5 * periods as usize;
    assert!(
        (1..=most).contains(&lines),
        "{lines} lines for 300 refusals (at most {most})"
    );
}

/// A source's inbound limits: a sender over `rate_per_sender` gets 429
/// with `Retry-After` (before its request is verified) while other
/// senders are served; a source over its `rate` refuses every sender; the
/// refusals are counted. Senders told apart behind a trusted proxy.
#[test]
fn a_sender_over_its_sources_rate_gets_429_with_retry_after_and_others_are_served() {
    let env = Env::new();
    env.with_bundled_plugins();
    let config = env.config(
        r#"trusted_proxies = ["127.0.0.1"]
[sources.tk]
plugin = "tightknit"
unsigned = true
rate_per_sender = "2/m"
[sources.tk2]
plugin = "tightknit"
unsigned = true
rate = "1/m"
"#,
    );
    let d = Daemon::start(&config);
    tls_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let post = |path: &str, sender: &str, n: usize| {
        let body = format!(
            r#"{{"action":"post.created","date":"2025-05-01T10:00:00Z","post":{{"id":"p{n}"}}}}"#
        );
        let resp = client
            .post(d.url(path))
            .header("X-Forwarded-For", sender)
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (status, retry_after, resp.text().unwrap())
    };
    let a: Vec<_> = (0..4)
        .map(|n| post("/hooks/tk", "203.0.113.1", n))
        .collect();
    assert_eq!(a[0].0, 200, "{a:?}");
    assert_eq!(a[1].0, 200, "{a:?}");
    for refused in &a[2..] {
        assert_eq!(refused.0, 429, "{a:?}");
        assert!(refused.2.contains("rate_limited"), "{a:?}");
        // 2/m: the next one half a minute after the burst, at most.
        assert!(
            matches!(refused.1, Some(s) if (1..=30).contains(&s)),
            "{a:?}"
        );
    }
    // Another sender is served.
    assert_eq!(post("/hooks/tk", "203.0.113.2", 10).0, 200);
    // A source's own rate holds for all its senders.
    assert_eq!(post("/hooks/tk2", "203.0.113.3", 20).0, 200);
    let (status, retry_after, _) = post("/hooks/tk2", "203.0.113.4", 21);
    assert_eq!(status, 429);
    assert!(retry_after.is_some_and(|s| s >= 1));
    assert_eq!(refused(&d, "tk", "rate_limited"), 2.0);
    assert_eq!(refused(&d, "tk2", "rate_limited"), 1.0);
    assert!(d.logged("over the source's rate_per_sender (sender 203.0.113.1)"));
}
