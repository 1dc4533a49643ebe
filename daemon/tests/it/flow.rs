//! Flow control, end to end against receivers on 127.0.0.1 that enforce
//! limits of their own: a burst held to a destination's rate, a
//! destination's refusals slowing its action (and letting go), a redrive
//! of a thousand dead letters that does not hold up live events.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::actions::{forwarding, forwarding_retried, Fixture, HOOK_SECRET};
use crate::common::*;
use crate::dashboard::{get, sign_in, TOKEN};

/// Requests each webhook id got a 200 for.
fn accepted(lines: &[Value]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for r in lines.iter().filter(|r| r["step"] == "200") {
        *ids.entry(r["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    ids
}

/// The most requests that came in within any one second.
fn most_in_a_second(lines: &[Value]) -> usize {
    let mut at: Vec<f64> = lines.iter().filter_map(|r| r["at"].as_f64()).collect();
    at.sort_by(f64::total_cmp);
    let mut most = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= 1.0 {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `forward` action's row of `switchyard actions list --json`.
fn forward_row(config: &std::path::Path) -> Value {
    let (_, out) = cli(&["actions", "list", "--json"], config);
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["name"] == "forward")
        .unwrap_or_default()
}

/// A receiver that refuses past 100 requests a second (429 with
/// `Retry-After`) gets a burst of 2,000 events through an action limited
/// to 80/s with a burst of 10: it never sees more than its limit plus the
/// burst in any second, each event is accepted exactly once, none becomes
/// a dead letter.
#[test]
fn a_burst_of_two_thousand_events_keeps_to_the_receivers_limit() {
    let env = Env::new();
    let rx = Fixture::start(
        "receiver.py",
        &["--secret", HOOK_SECRET, "--limit", "100"],
        env.dir.path().join("receiver.jsonl"),
    );
    let config = forwarding(
        &env,
        &rx.url(),
        "concurrency = 16\nrate = \"80/s\"\nburst = 10",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    let signed = bulk_signed(2_000, "inv_b", 0);
    let daemon = Daemon::start(&config);
    let started = now_s();
    let sent = daemon.send_in_background(signed, Duration::ZERO);
    assert_eq!(sent.join().unwrap().len(), 2_000);
    // While it drains: the backlog and the time it takes are shown.
    let row = forward_row(&config);
    assert!(
        row["waiting_for_rate"].as_u64().unwrap_or(0) > 0 && row["drain_ms"].as_i64().is_some(),
        "{row}"
    );
    let base = format!("http://{}", daemon.admin_addr());
    let (_, page, _) = get(&base, "/ui/actions", Some(&sign_in(&base, TOKEN)));
    assert!(
        page.contains("80/s, burst 10") && page.contains("waiting for it, gone in"),
        "{page}"
    );
    assert!(
        eventually(120, || accepted(&rx.lines()).len() == 2_000),
        "{} accepted; {}",
        accepted(&rx.lines()).len(),
        daemon.logs()
    );
    let lines = rx.lines();
    let took = now_s() - started;
    let ids = accepted(&lines);
    assert!(ids.values().all(|&n| n == 1), "each accepted once");
    let most = most_in_a_second(&lines);
    let refused = lines.iter().filter(|r| r["step"] != "200").count();
    println!(
        "2,000 events at 80/s (burst 10) in {took:.1} s: at most {most} requests in a second, \
         {refused} refused by the receiver"
    );
    assert!(most <= 110, "{most} requests within a second");
    let (_, dead) = cli(&["dlq", "list"], &config);
    assert!(!dead.contains("forward"), "{dead}");
}

/// A destination that refuses past 20 requests a second with bare 429s
/// (no `Retry-After`) slows an action that has no rate of its own: the
/// rate is lowered (shown, logged, counted), every event is still
/// accepted once, none is a dead letter, and once the destination stops
/// refusing the rate comes back and the action is unlimited again.
#[test]
fn a_destination_that_keeps_refusing_slows_its_action_until_it_accepts() {
    let env = Env::new();
    let rx = Fixture::start(
        "receiver.py",
        &["--secret", HOOK_SECRET, "--limit", "20", "--bare-429"],
        env.dir.path().join("receiver.jsonl"),
    );
    let config = forwarding_retried(
        &env,
        &rx.url(),
        "concurrency = 8",
        "",
        r#"["1s", "2s", "4s", "8s", "16s", "30s", "60s"]"#,
    );
    let signed = bulk_signed(300, "inv_a", 0);
    let daemon = Daemon::start(&config);
    let sent = daemon.send_in_background(signed, Duration::ZERO);
    assert_eq!(sent.join().unwrap().len(), 300);
    let mut lowered = None;
    let all = eventually(120, || {
        if lowered.is_none() {
            lowered = forward_row(&config)["rate_lowered_to"].as_f64();
        }
        accepted(&rx.lines()).len() == 300
    });
    assert!(all, "{}", daemon.logs());
    let lines = rx.lines();
    assert!(accepted(&lines).values().all(|&n| n == 1), "each once");
    let refused = lines.iter().filter(|r| r["step"] == "429").count();
    assert!(refused > 0, "the receiver refused some");
    let lowered = lowered.expect("the lowered rate was shown");
    assert!(daemon.logged("rate lowered"), "{}", daemon.logs());
    let samples = scrape(&daemon);
    let cuts = value(
        &samples,
        "switchyard_action_rate_lowered_total",
        &[("action", "forward")],
    );
    assert!(cuts >= 1.0, "{cuts}");
    println!(
        "300 events to a receiver refusing past 20/s: {refused} refusals, lowered to \
         {lowered:.1}/s at first sight, {cuts} halvings"
    );
    let (_, dead) = cli(&["dlq", "list"], &config);
    assert!(!dead.contains("forward"), "{dead}");
    // Nobody refuses now: the rate comes back and is lifted.
    assert!(
        eventually(60, || forward_row(&config)["rate_lowered_to"].is_null()),
        "{}",
        forward_row(&config)
    );
}

/// A thousand dead letters redriven while live events come in: the
/// backlog drains at the action's rate, and the live events do not queue
/// behind it — each arrives with few of the backlog's requests between
/// its sending and its arrival (behind a backlog served first in first
/// out, those sent later would wait for hundreds).
#[test]
fn a_redrive_of_a_thousand_dead_letters_does_not_hold_up_live_events() {
    let env = Env::new();
    // First the dead letters: a receiver that refuses them all for good.
    let refusing = Fixture::receiver_all(env.dir.path(), HOOK_SECRET, "400");
    let config = forwarding(&env, &refusing.url(), "concurrency = 16", "");
    let daemon = Daemon::start(&config);
    let sent = daemon.send_in_background(bulk_signed(1_000, "inv_d", 0), Duration::ZERO);
    assert_eq!(sent.join().unwrap().len(), 1_000);
    let dead_letters = |config: &std::path::Path| {
        let (_, out) = cli(&["dlq", "list", "--limit", "2000"], config);
        out.lines().filter(|l| l.contains("forward")).count()
    };
    assert!(
        eventually(90, || dead_letters(&config) == 1_000),
        "{} dead letters",
        dead_letters(&config)
    );
    drop(daemon);
    drop(refusing);
    // Then the target is fixed, with a rate of 50/s.
    let rx = Fixture::start(
        "receiver.py",
        &["--secret", HOOK_SECRET],
        env.dir.path().join("fixed.jsonl"),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&forwarding_url(&config), &rx.url())
        .replace(
            "concurrency = 16",
            "concurrency = 16\nrate = \"50/s\"\nburst = 5",
        );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config);
    // What a live event takes with no backlog, for comparison.
    let alone = send_live(&daemon, "inv_alone", 10);
    assert!(eventually(30, || rx.lines().len() >= 10));
    let (code, out) = cli(&["dlq", "redrive", "--all"], &config);
    assert_eq!(code, 0, "{out}");
    // The backlog is under way before the live events come.
    assert!(
        eventually(30, || rx.lines().len() >= 50),
        "{}",
        daemon.logs()
    );
    let live = send_live(&daemon, "inv_live", 30);
    assert!(
        eventually(90, || accepted(&rx.lines()).len() == 1_040),
        "{} accepted; {}",
        accepted(&rx.lines()).len(),
        daemon.logs()
    );
    let lines = rx.lines();
    assert!(accepted(&lines).values().all(|&n| n == 1), "each once");
    let backlog_at: Vec<f64> = lines
        .iter()
        .filter(|r| r["body"].as_str().unwrap().contains("inv_d"))
        .map(|r| r["at"].as_f64().unwrap())
        .collect();
    assert_eq!(backlog_at.len(), 1_000);
    let last_backlog = backlog_at.iter().copied().fold(0.0, f64::max);
    let arrival = |invoice: &str| {
        lines
            .iter()
            .find(|r| {
                r["body"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("\"{invoice}\""))
            })
            .and_then(|r| r["at"].as_f64())
            .unwrap()
    };
    let latencies = |sent: &[(String, f64)]| {
        let mut l: Vec<f64> = sent.iter().map(|(i, at)| arrival(i) - at).collect();
        l.sort_by(f64::total_cmp);
        (l[l.len() / 2] * 1e3, l[l.len() - 1] * 1e3)
    };
    let most_passed = live
        .iter()
        .map(|(invoice, sent_at)| {
            let arrived = arrival(invoice);
            backlog_at
                .iter()
                .filter(|&&t| t > *sent_at && t < arrived)
                .count()
        })
        .max()
        .unwrap();
    let (alone_median, alone_worst) = latencies(&alone);
    let (median, worst) = latencies(&live);
    println!(
        "live events alone: latency median {alone_median:.0} ms, worst {alone_worst:.0} ms; \
         during a redrive of 1,000 at 50/s: median {median:.0} ms, worst {worst:.0} ms; \
         at most {most_passed} backlog requests went ahead of one; the backlog ended {:.1} s \
         after the last live event was accepted",
        last_backlog - live.last().unwrap().1,
    );
    // The backlog was still going when the live events were done.
    assert!(
        last_backlog > live.last().unwrap().1,
        "the backlog outlasted them"
    );
    assert!(
        most_passed <= 10,
        "{most_passed} backlog requests went ahead of a live event"
    );
}

/// Sends `n` live events 100 ms apart: their invoices and when each was
/// accepted (the daemon's answer in hand).
fn send_live(daemon: &Daemon, prefix: &str, n: usize) -> Vec<(String, f64)> {
    (0..n)
        .map(|i| {
            let invoice = format!("{prefix}{i}");
            daemon.send_viewed(&invoice);
            let at = now_s();
            std::thread::sleep(Duration::from_millis(100));
            (invoice, at)
        })
        .collect()
}

/// The `url` of the `forward` action in a config.
fn forwarding_url(config: &std::path::Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("url = "))
        .expect("a url");
    line.trim_start_matches("url = ")
        .trim_matches('"')
        .to_string()
}
