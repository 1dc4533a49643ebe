//! Never lose an event: persist before ack, dedup, retries and dead letters,
//! replay, crash recovery, and a store that cannot write.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchyard::store::{Operations, SqliteStore, StoreOptions};

use crate::common::*;

#[test]
fn the_same_delivery_twice_is_routed_once() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let body = invoice_viewed("inv_dup");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (s1, t1) = daemon.post(
        "/hooks/tight",
        &[("Tight-Verification", &token)],
        body.clone(),
    );
    // The provider's retry: the same body, re-signed.
    let token2 = pyjwt(SECRET, body.as_bytes(), &["--iat-offset", "-5"]);
    let (s2, t2) = daemon.post(
        "/hooks/tight",
        &[("Tight-Verification", &token2)],
        body.clone(),
    );
    assert_eq!((s1, s2), (200, 200), "{t1} {t2}");
    let first: Value = serde_json::from_str(&t1).unwrap();
    let second: Value = serde_json::from_str(&t2).unwrap();
    let id = first["accepted"][0].as_str().unwrap().to_string();
    assert_eq!(second["accepted"], serde_json::json!([]));
    assert_eq!(second["duplicates"][0], id.as_str());

    assert_eq!(env.wait_audit(1).len(), 1);
    // A later delivery routed is the marker that the duplicate had its
    // chance to be routed too: only then is its absence checked.
    daemon.send_viewed("inv_after_dup");
    let lines = env.wait_audit(2);
    let routed = |invoice: &str| {
        lines
            .iter()
            .filter(|l| l["params"]["invoice"] == invoice)
            .count()
    };
    assert_eq!(routed("inv_after_dup"), 1, "{lines:?}");
    assert_eq!(routed("inv_dup"), 1, "routed once: {lines:?}");
    let detail = show(&config, &id);
    assert_eq!(detail["duplicates"], 1);
    assert_eq!(detail["request"]["verdict"], "accepted");
    assert_eq!(detail["state"], "routed");
}

fn scripted_env(env: &Env, rule: &str) -> std::path::PathBuf {
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_test_scripted"));
    env.rule("act", rule);
    env.config(&format!(
        r#"
[delivery]
retry_schedule = ["100ms", "200ms"]
jitter = 0.1

{TIGHT_SOURCE}
[actions.scripted]
plugin = "scripted"

[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ))
}

#[test]
fn transient_failures_are_retried_with_backoff_until_they_succeed() {
    let env = Env::new();
    let flag = env.path("data/ready");
    let config = scripted_env(
        &env,
        &format!(
            r#"const EVENTS = ["tight.*"];
action("scripted", #{{ fail_unless_exists: "{}" }});"#,
            flag.display()
        ),
    );
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_retry");
    // Fails while the file is missing: attempt 1, then a retry ~100 ms later.
    assert!(eventually(10, || show(&config, &id)["jobs"][0]["attempts"]
        .as_u64()
        >= Some(2)));
    std::fs::write(&flag, "").unwrap();
    assert!(
        eventually(10, || show(&config, &id)["jobs"][0]["state"] == "done"),
        "{}",
        daemon.logs()
    );
    let job = &show(&config, &id)["jobs"][0];
    let log = job["attempt_log"].as_array().unwrap();
    assert!(log.len() >= 2 && log.len() <= 3, "{job}");
    assert_eq!(log.last().unwrap()["outcome"], "done");
    assert_eq!(log[0]["outcome"], "retry");
    // Backoff: the second attempt started no sooner than ~80 ms after the first ended.
    let gap =
        log[1]["started_at_ms"].as_i64().unwrap() - log[0]["finished_at_ms"].as_i64().unwrap();
    assert!(gap >= 80, "gap {gap} ms");
}

/// A batch action (scripted takes its jobs in batch calls) given a job that
/// panics, beside good ones from the same event (handed over together, so
/// usually in one call): a failed call's jobs are each tried alone, so the
/// good ones are done at their first attempt and only the panicking one is
/// retried, then dead.
#[test]
fn a_job_that_panics_in_a_batch_call_fails_only_itself() {
    let env = Env::new();
    let config = scripted_env(
        &env,
        r#"const EVENTS = ["tight.*"];
action("scripted", #{ n: 1 });
action("scripted", #{ panic: true });
action("scripted", #{ n: 3 });"#,
    );
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_panic");
    assert!(
        eventually(20, || {
            let jobs = show(&config, &id)["jobs"].clone();
            jobs.as_array().is_some_and(|j| {
                j.len() == 3
                    && j.iter()
                        .all(|job| job["state"] == "done" || job["state"] == "dead")
            })
        }),
        "{}",
        daemon.logs()
    );
    let jobs = show(&config, &id)["jobs"].clone();
    for job in jobs.as_array().unwrap() {
        if job["params"].get("panic").is_some() {
            assert_eq!(job["state"], "dead", "{job}");
            assert_eq!(job["attempts"], 3, "{job}");
            assert!(
                job["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("told to panic"),
                "{job}"
            );
        } else {
            assert_eq!(job["state"], "done", "{job}");
            assert_eq!(job["attempts"], 1, "{job}");
        }
    }
}

#[test]
fn permanent_failures_and_exhausted_retries_become_dead_letters_and_redrive_runs_them() {
    let env = Env::new();
    let flag = env.path("data/fixed");
    let config = scripted_env(
        &env,
        &format!(
            r#"const EVENTS = ["tight.*"];
if event.data.eventData.entityId == "inv_perm" {{
    action("scripted", #{{ fail: "permanent" }});
}} else {{
    action("scripted", #{{ fail_unless_exists: "{}" }});
}}"#,
            flag.display()
        ),
    );
    let daemon = Daemon::start(&config);
    let perm = daemon.send_viewed("inv_perm");
    let flaky = daemon.send_viewed("inv_flaky");
    assert!(eventually(10, || {
        let (_, out) = cli(&["dlq", "list", "--json"], &config);
        out.lines().count() == 2
    }));
    let perm_job = &show(&config, &perm)["jobs"][0];
    assert_eq!(perm_job["state"], "dead");
    assert_eq!(
        perm_job["attempts"], 1,
        "a permanent failure is not retried"
    );
    let flaky_job = show(&config, &flaky)["jobs"][0].clone();
    assert_eq!(flaky_job["state"], "dead");
    assert_eq!(
        flaky_job["attempts"], 3,
        "one attempt and the two retries of the schedule"
    );
    assert!(flaky_job["last_error"]
        .as_str()
        .unwrap()
        .contains("gave up after 3 attempts"));

    // Fix the cause, then redrive that one job.
    std::fs::write(&flag, "").unwrap();
    let job_id = flaky_job["id"].as_str().unwrap();
    let (code, out) = cli(&["dlq", "redrive", job_id], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        eventually(10, || show(&config, &flaky)["jobs"][0]["state"] == "done"),
        "{}",
        daemon.logs()
    );
    let (_, out) = cli(&["dlq", "list", "--json"], &config);
    assert_eq!(
        out.lines().count(),
        1,
        "the permanent one is still dead: {out}"
    );
    // The idempotency key is the same on every attempt.
    assert_eq!(
        show(&config, &flaky)["jobs"][0]["idempotency_key"],
        flaky_job["idempotency_key"]
    );
}

#[test]
fn replay_routes_a_stored_event_again_with_new_idempotency_keys() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_replay");
    assert_eq!(env.wait_audit(1).len(), 1);
    let (code, out) = cli(&["replay", &id], &config);
    assert_eq!(code, 0, "{out}");
    let lines = env.wait_audit(2);
    assert_eq!(lines.len(), 2, "{}", daemon.logs());
    assert_eq!(lines[0]["event_id"], lines[1]["event_id"]);
    assert_eq!(lines[0]["idempotency_key"], format!("{id}:viewed:0"));
    assert_eq!(
        lines[1]["idempotency_key"],
        format!("{id}:viewed:0:replay1")
    );
    let (code, out) = cli(&["events", "list", "--type", "tight.*"], &config);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("routed"), "{out}");
    let (code, _) = cli(&["replay", "01NOTANEVENT00000000000000"], &config);
    assert_ne!(code, 0);
}

#[test]
fn a_store_that_cannot_write_answers_503_and_keeps_what_it_acknowledged() {
    let env = Env::new();
    let config = env.standard_with("[store]\nmax_size_mb = 1", "");
    let daemon = Daemon::start(&config);
    let signed = bulk_signed(60, "inv_full_", 64 * 1024);
    let mut acked = Vec::new();
    let mut refused = 0;
    for s in &signed {
        let (status, text) = daemon.post(
            "/hooks/tight",
            &[("Tight-Verification", &s.token)],
            s.body.clone(),
        );
        match status {
            200 => acked.push(
                serde_json::from_str::<Value>(&text).unwrap()["accepted"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            503 => refused += 1,
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert!(refused > 0, "the 1 MiB store filled up");
    assert!(!acked.is_empty());
    assert!(daemon.logged("the store cannot write"));
    // The operator makes room (here: lifts the cap) and restarts: everything
    // acknowledged is there and gets routed.
    daemon.stop();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_size_mb = 1", "");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config);
    assert!(
        eventually(15, || env.audit_lines().len() >= acked.len()),
        "{}",
        daemon.logs()
    );
    let audited: HashSet<String> = env
        .audit_lines()
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    for id in &acked {
        assert!(audited.contains(id), "{id} was acknowledged but not routed");
    }
}

/// The crash test: thousands of signed webhooks from concurrent clients,
/// SIGKILL while they are being written, restart. Every request that got a
/// 2xx must be stored, routed, and its action run at least once.
#[test]
fn kill_9_mid_stream_loses_no_acknowledged_event() {
    const TOTAL: usize = 3000;
    const CLIENTS: usize = 16;
    const KILL_AFTER: usize = 1000;
    let env = Env::new();
    let config = env.standard();
    let signed = Arc::new(bulk_signed(TOTAL, "inv_crash_", 0));
    let mut daemon = Daemon::start(&config);
    let url = daemon.url("/hooks/tight");

    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default(); // invoice -> event id
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (signed, acked, failed, next, url) = (
                signed.clone(),
                acked.clone(),
                failed.clone(),
                next.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = signed.get(i) else { break };
                    let resp = client
                        .post(&url)
                        .header("Tight-Verification", &s.token)
                        .body(s.body.clone())
                        .send();
                    match resp {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let v: Value = r.json().unwrap();
                            let id = v["accepted"][0].as_str().unwrap().to_string();
                            acked.lock().unwrap().insert(s.invoice.clone(), id);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();

    // Kill while the clients are mid-stream: requests are in flight and the
    // store is committing.
    assert!(
        eventually(60, || acked.lock().unwrap().len() >= KILL_AFTER),
        "not enough acks"
    );
    daemon.kill9();
    let acked_at_kill = acked.lock().unwrap().len();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = failed.load(Ordering::SeqCst);
    assert!(
        acked_at_kill < TOTAL && failed > 0,
        "the kill landed mid-stream ({} acked, {failed} failed)",
        acked.len()
    );
    assert_eq!(acked.len() + failed, TOTAL);

    // Restart: what was stored but not routed gets routed; jobs resume.
    let daemon = Daemon::start(&config);
    let want: HashSet<&String> = acked.values().collect();
    let done = eventually(60, || {
        let seen: HashSet<String> = env
            .audit_lines()
            .iter()
            .map(|l| l["event_id"].as_str().unwrap().to_string())
            .collect();
        want.iter().all(|id| seen.contains(*id))
    });
    assert!(
        done,
        "some acknowledged events never ran their action\n{}",
        daemon.logs()
    );

    // And the store has each of them, routed, with its job done (read here
    // with the daemon stopped: one process at a time writes a store).
    daemon.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store =
        SqliteStore::open(&env.path("data/switchyard.db"), StoreOptions::default()).unwrap();
    rt.block_on(async {
        for id in &want {
            let detail = store.show_event(id.to_string()).await.unwrap();
            assert_eq!(detail.state, "routed", "{id}");
            assert_eq!(detail.jobs.len(), 1, "{id}");
        }
    });
    let audited = env.audit_lines();
    eprintln!(
        "crash test: {} acknowledged, {failed} refused or cut off, {} action lines after restart ({} repeats)",
        acked.len(),
        audited.len(),
        audited.len() - audited.iter().map(|l| l["event_id"].as_str().unwrap()).collect::<HashSet<_>>().len()
    );
}

#[test]
fn a_job_backlog_over_its_bound_gets_503_with_retry_after() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_test_scripted"));
    env.rule(
        "act",
        r#"const EVENTS = ["tight.*"]; action("scripted", #{ fail: "retryable" });"#,
    );
    let config = env.config(
        r#"
[store]
max_pending_jobs = 3

[delivery]
retry_schedule = ["1h"]

[sources.tight]
plugin = "tight"
secret = { env = "SWITCHYARD_IT_SECRET" }

[actions.scripted]
plugin = "scripted"
"#,
    );
    let daemon = Daemon::start(&config);
    let signed = bulk_signed(40, "inv_bp_", 0);
    let client = reqwest::blocking::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for s in &signed {
        let resp = client
            .post(daemon.url("/hooks/tight"))
            .header("Tight-Verification", &s.token)
            .body(s.body.clone())
            .send()
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status().as_u16() == 503 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 3,
        "{statuses:?}"
    );
    assert!(retry_after.is_some_and(|v| v.parse::<u32>().unwrap() > 0));
    assert!(daemon.logged("backlog over its bound"));
}

/// The unrouted-events bound counts what waits, not what arrived since the
/// count was last read from the store: a stream the router keeps up with is
/// answered 200 throughout, however many events it brings.
#[test]
fn a_stream_routed_as_it_comes_is_not_taken_for_a_backlog() {
    let env = Env::new();
    let config = env.standard_with("[store]\nmax_unrouted_events = 100", "");
    let daemon = Daemon::start(&config);
    let signed = bulk_signed(400, "inv_stream_", 0);
    let client = reqwest::blocking::Client::new();
    let mut refused = Vec::new();
    for (i, s) in signed.iter().enumerate() {
        let status = client
            .post(daemon.url("/hooks/tight"))
            .header("Tight-Verification", &s.token)
            .body(s.body.clone())
            .send()
            .unwrap()
            .status()
            .as_u16();
        if status != 200 {
            refused.push((i, status));
        }
    }
    assert!(
        refused.is_empty(),
        "{} refused, the first: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    assert_eq!(env.wait_audit(400).len(), 400);
    // Every answer was a 200, read above: the bound never refused one. The
    // log is read once, not waited on for a line that should not come.
    assert!(!daemon.logs().contains("backlog over its bound"));
}

#[test]
fn events_older_than_the_retention_are_pruned() {
    let env = Env::new();
    let config = env.standard_with("[store]\nretention = \"2s\"\ndedup_window = \"2s\"", "");
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_old");
    assert_eq!(env.wait_audit(1).len(), 1);
    assert_eq!(cli(&["events", "show", &id], &config).0, 0);
    assert!(
        eventually(15, || cli(&["events", "show", &id], &config).0 != 0),
        "{}",
        daemon.logs()
    );
    assert!(daemon.logged("pruned"));
}

#[test]
fn stored_requests_keep_no_credentials() {
    let env = Env::new();
    let config = env.standard_with("", r#"redact_headers = ["X-Custom-Auth"]"#);
    let daemon = Daemon::start(&config);
    let body = invoice_viewed("inv_redact");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (status, text) = daemon.post(
        "/hooks/tight?token=query-credential-1&keep=visible",
        &[
            ("Tight-Verification", token.as_str()),
            ("Authorization", "Bearer header-credential-2"),
            ("X-Custom-Auth", "custom-credential-3"),
        ],
        body,
    );
    assert_eq!(status, 200, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["accepted"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out) = cli(&["events", "show", &id], &config);
    assert_eq!(code, 0, "{out}");
    for secret in [
        "query-credential-1",
        "header-credential-2",
        "custom-credential-3",
    ] {
        assert!(!out.contains(secret), "{secret} was stored:\n{out}");
    }
    let detail: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(detail["request"]["query"], "token=[redacted]&keep=visible");
    let headers = detail["request"]["headers"].as_array().unwrap();
    let get = |name: &str| headers.iter().find(|h| h[0] == name).map(|h| h[1].clone());
    assert_eq!(get("authorization"), Some(Value::from("[redacted]")));
    assert_eq!(get("x-custom-auth"), Some(Value::from("[redacted]")));
    assert_eq!(
        detail["request"]["body"].as_str().unwrap(),
        invoice_viewed("inv_redact")
    );
}

/// The journal's last segment, after a daemon has written to it.
fn journal_segment(env: &Env) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(env.path("data/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a journal segment")
}

/// A crash mid-write leaves half a frame at the journal's end; a bad disk
/// garbles a record. The daemon starts, says what it cut off and skipped,
/// and keeps every acknowledged event: its row and routing are in the
/// database, only the damaged record's raw body is gone.
#[test]
fn a_torn_tail_and_a_damaged_record_cost_no_acknowledged_event() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let ids: Vec<String> = (1..=5)
        .map(|n| daemon.send_viewed(&format!("inv_torn_{n}")))
        .collect();
    assert_eq!(env.wait_audit(5).len(), 5);
    daemon.stop();

    let segment = journal_segment(&env);
    let mut bytes = std::fs::read(&segment).unwrap();
    let record = crate::journal::record_holding(&bytes, b"inv_torn_3")
        .expect("the third request's record in the journal");
    bytes[record.start + record.len() / 2] ^= 0x20;
    // Half a frame where the records end (over the zeros written ahead).
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    // (Its last byte not zero: the zeros ahead would hide it.)
    let mut half_a_frame = bytes[..40].to_vec();
    half_a_frame[39] = 0xff;
    bytes[end..end + 40].copy_from_slice(&half_a_frame);
    std::fs::write(&segment, &bytes).unwrap();

    let daemon = Daemon::start(&config);
    assert!(daemon.logged("torn tail of 40 bytes"), "{}", daemon.logs());
    assert!(daemon.logged("damaged bytes"), "{}", daemon.logs());
    for (n, id) in ids.iter().enumerate() {
        let detail = show(&config, id);
        assert_eq!(detail["state"], "routed", "{id}");
        let body = detail["request"]["body"].as_str().unwrap();
        if n == 2 {
            assert!(body.contains("not available"), "{body}");
        } else {
            assert!(body.contains(&format!("inv_torn_{}", n + 1)), "{body}");
        }
    }
    // Writing goes on after the last good record.
    let later = daemon.send_viewed("inv_torn_after");
    env.wait_audit(6);
    // Once nothing is left to do: no job of before the restart ran again.
    wait_quiet(&config);
    assert_eq!(env.audit_lines().len(), 6, "{:?}", env.audit_lines());
    let detail = show(&config, &later);
    assert!(detail["request"]["body"]
        .as_str()
        .unwrap()
        .contains("inv_torn_after"));
}

/// A store that does not answer (here another process holds its write
/// lock, as a stalled disk or a frozen database would) does not hold the
/// sender's connection: after `write_timeout` the webhook gets 503 with
/// `Retry-After`, counted; once the store answers again the provider's
/// retry is stored and routed, once.
#[test]
fn a_store_that_does_not_answer_gets_503_after_write_timeout() {
    let env = Env::new();
    let config = env.standard_with("[store]\nwrite_timeout = \"1s\"", "");
    let daemon = Daemon::start(&config);
    let db = env.path("data/switchyard.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = invoice_viewed("inv_frozen");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let resp = reqwest::blocking::Client::new()
        .post(daemon.url("/hooks/tight"))
        .header("Tight-Verification", &token)
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some_and(|v| v
        .to_str()
        .unwrap()
        .parse::<u32>()
        .unwrap()
        > 0));
    assert!(daemon.logged("did not commit within 1 s (write_timeout)"));
    let samples = scrape(&daemon);
    assert_eq!(
        value(
            &samples,
            "switchyard_webhooks_rejected_total",
            &[("reason", "store_timeout")]
        ),
        1.0
    );
    // The store answers again: the provider's retry goes through.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let mut status = 0;
    for _ in 0..30 {
        let token = pyjwt(SECRET, body.as_bytes(), &[]);
        status = daemon
            .post(
                "/hooks/tight",
                &[("Tight-Verification", &token)],
                body.clone(),
            )
            .0;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status, 200, "{}", daemon.logs());
    // A later webhook routed is the marker: the retried one was routed once.
    daemon.send_viewed("inv_after_frozen");
    assert!(
        eventually(15, || {
            let lines = env.audit_lines();
            ["inv_frozen", "inv_after_frozen"]
                .iter()
                .all(|i| lines.iter().any(|l| l["params"]["invoice"] == *i))
        }),
        "{:?}\n{}",
        env.audit_lines(),
        daemon.logs()
    );
    let frozen = env
        .audit_lines()
        .iter()
        .filter(|l| l["params"]["invoice"] == "inv_frozen")
        .count();
    assert_eq!(frozen, 1, "{}", daemon.logs());
}

/// Debian's libfaketime, which the test preloads into the daemon to step
/// its wall clock (the monotonic clock left alone).
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (Debian: apt-get install libfaketime)")
}

#[test]
fn a_clock_stepped_back_an_hour_does_not_strand_a_retry() {
    let env = Env::new();
    let flag = env.path("data/ready");
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_test_scripted"));
    env.rule(
        "act",
        &format!(
            r#"const EVENTS = ["tight.*"];
action("scripted", #{{ fail_unless_exists: "{}" }});"#,
            flag.display()
        ),
    );
    let config = env.config(&format!(
        "[delivery]\nretry_schedule = [\"3s\", \"3s\", \"3s\", \"3s\"]\njitter = 0\n\n{TIGHT_SOURCE}\n[actions.scripted]\nplugin = \"scripted\"\n"
    ));
    let offset = env.path("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let preload = libfaketime();
    let daemon = Daemon::start_with_env(
        &config,
        &[
            ("LD_PRELOAD", preload.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let id = daemon.send_viewed("inv_clock_step");
    // The first attempt fails: a retry is due 3 s later, on the clock as
    // it was.
    assert!(eventually(10, || show(&config, &id)["jobs"][0]["attempts"]
        .as_u64()
        >= Some(1)));
    // The clock steps back an hour; the target recovers.
    std::fs::write(&offset, "-1h\n").unwrap();
    std::fs::write(&flag, "").unwrap();
    assert!(
        eventually(30, || show(&config, &id)["jobs"][0]["state"] == "done"),
        "the retry waits for the hour: {}\n{}",
        show(&config, &id),
        daemon.logs()
    );
    assert!(daemon.logged("the system clock stepped back"));
}
