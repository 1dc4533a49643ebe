//! Several daemons on one PostgreSQL database (`pg.rs`): the work spread,
//! one killed mid-load, the same delivery at two instances, the leader lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::pg::{fresh_database, query};

/// A deployment of `n` instances sharing `url`: each its own folder
/// (data_dir, admin socket), all writing their action lines to one file.
struct Cluster {
    /// Kept for their folders (removed on drop).
    _envs: Vec<Env>,
    configs: Vec<std::path::PathBuf>,
    audit: std::path::PathBuf,
}

impl Cluster {
    fn new(n: usize, url: &str, store: &str) -> Cluster {
        Cluster::with(n, url, store, "", "")
    }

    /// `params` more of the audit action's parameters (rhai map entries);
    /// `action` the audit action's settings, if not the file of `lines`.
    fn with(n: usize, url: &str, store: &str, params: &str, action: &str) -> Cluster {
        let envs: Vec<Env> = (0..n).map(|_| Env::new()).collect();
        let audit = envs[0].path("data/audit.jsonl");
        let configs = envs
            .iter()
            .map(|env| {
                env.with_standard_plugins();
                env.add_plugin(&built_plugin("switchyard_http"));
                env.rule(
                    "viewed",
                    &format!(
                        r#"const EVENTS = ["tight.invoiceViewed"];
let invoice = event.data.eventData.entityId;
action("audit", #{{ invoice: invoice{params} }});"#
                    ),
                );
                let action = match action {
                    "" => format!("plugin = \"file\"\npath = \"{}\"", audit.display()),
                    given => given.to_string(),
                };
                env.config(&format!(
                    "[store]\nurl = \"{url}\"\n{store}\n{TIGHT_SOURCE}\n[actions.audit]\n{action}\n"
                ))
            })
            .collect();
        Cluster {
            _envs: envs,
            configs,
            audit,
        }
    }

    fn start(&self) -> Vec<Daemon> {
        self.configs.iter().map(|c| Daemon::start(c)).collect()
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an action line is JSON"))
            .collect()
    }
}

/// Posts `signed` from `clients` threads, each request to the next
/// instance in turn; returns (acknowledged invoice → event id, failures).
fn spread(
    urls: Vec<String>,
    signed: Arc<Vec<Signed>>,
    clients: usize,
    acked: Arc<Mutex<HashMap<String, String>>>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicUsize>) {
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let urls = Arc::new(urls);
    let threads = (0..clients)
        .map(|_| {
            let (signed, acked, failed, next, urls) = (
                signed.clone(),
                acked.clone(),
                failed.clone(),
                next.clone(),
                urls.clone(),
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
                        .post(&urls[i % urls.len()])
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
    (threads, failed)
}

#[test]
fn three_instances_share_the_work_and_one_killed_mid_load_loses_nothing() {
    const TOTAL: usize = 1500;
    const KILL_AFTER: usize = 400;
    let url = fresh_database();
    let cluster = Cluster::new(3, &url, "");
    let mut daemons = cluster.start();
    let urls = daemons.iter().map(|d| d.url("/hooks/tight")).collect();
    let signed = Arc::new(bulk_signed(TOTAL, "inv_cluster_", 0));
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let (clients, failed) = spread(urls, signed, 12, acked.clone());

    assert!(
        eventually(60, || acked.lock().unwrap().len() >= KILL_AFTER),
        "not enough acks"
    );
    daemons[1].kill9();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = failed.load(Ordering::SeqCst);
    assert_eq!(acked.len() + failed, TOTAL);
    assert!(failed > 0, "the kill landed mid-load");

    // Every acknowledged event's action runs, on the two left, at least
    // once — including those the killed one had taken in, routed or
    // was running (its leases run out and the others take them).
    let want: HashSet<&String> = acked.values().collect();
    let done = eventually(60, || {
        let seen: HashSet<String> = cluster
            .lines()
            .iter()
            .map(|l| l["event_id"].as_str().unwrap().to_string())
            .collect();
        want.iter().all(|id| seen.contains(*id))
    });
    assert!(
        done,
        "some acknowledged events never ran their action\n{}\n{}",
        daemons[0].logs(),
        daemons[2].logs()
    );
    // The store holds each acknowledged event routed, with its one job
    // done, whoever ran it (a job whose line the killed instance wrote but
    // did not record is done once its lease ran out and another ran it).
    let states = || {
        let mut states = HashMap::new();
        query(
            &url,
            "SELECT e.id, e.state, count(j.id), bool_and(j.state = 'done') FROM events e
             LEFT JOIN jobs j ON j.event_id = e.id GROUP BY e.id, e.state",
            |r| {
                states.insert(
                    r[0].clone().unwrap(),
                    (r[1].clone().unwrap(), r[2].clone().unwrap(), r[3].clone()),
                );
            },
        );
        states
    };
    let all_done = |states: &HashMap<String, (String, String, Option<String>)>| {
        want.iter().all(|id| {
            let (state, jobs, done) = &states[*id];
            (state.as_str(), jobs.as_str(), done.as_deref()) == ("routed", "1", Some("t"))
        })
    };
    assert!(eventually(30, || all_done(&states())), "{:?}", {
        let s = states();
        want.iter()
            .map(|id| (id.to_string(), s[*id].clone()))
            .filter(|(_, v)| v != &("routed".into(), "1".into(), Some("t".into())))
            .collect::<Vec<_>>()
    });
    // `switchyard status` on any instance shows the cluster: three
    // instances, one leader, the killed one no longer alive.
    let mut shown = Value::Null;
    let seen = eventually(30, || {
        let (code, out) = cli(&["status"], &cluster.configs[2]);
        assert_eq!(code, 0, "{out}");
        shown = serde_json::from_str(&out).unwrap();
        let list = shown["store"]["instances"].as_array().unwrap();
        let count = |key: &str, v: bool| list.iter().filter(|i| i[key] == v).count();
        list.len() == 3
            && count("leader", true) == 1
            && count("alive", false) == 1
            && count("self", true) == 1
    });
    assert!(seen, "{shown:#}");
    let lines = cluster.lines();
    eprintln!(
        "cluster test: {} acknowledged, {failed} refused or cut off, {} action lines ({} repeats)",
        acked.len(),
        lines.len(),
        lines.len()
            - lines
                .iter()
                .map(|l| l["event_id"].as_str().unwrap())
                .collect::<HashSet<_>>()
                .len()
    );
}

#[test]
fn without_a_kill_no_job_runs_twice_across_three_instances() {
    const TOTAL: usize = 600;
    let url = fresh_database();
    let cluster = Cluster::new(3, &url, "");
    let daemons = cluster.start();
    let urls = daemons.iter().map(|d| d.url("/hooks/tight")).collect();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let (clients, failed) = spread(
        urls,
        Arc::new(bulk_signed(TOTAL, "inv_once_", 0)),
        9,
        acked.clone(),
    );
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert_eq!(acked.lock().unwrap().len(), TOTAL);
    assert!(
        eventually(60, || cluster.lines().len() >= TOTAL),
        "not every action ran"
    );
    // The last line is in: a repeat would have been written by now too
    // (each job is written once before it is recorded done); wait for every
    // job to be recorded done before counting.
    assert!(eventually(60, || {
        let mut open = 1;
        query(
            &url,
            "SELECT count(*) FROM jobs WHERE state <> 'done'",
            |r| open = r[0].as_deref().unwrap().parse::<i64>().unwrap(),
        );
        open == 0
    }));
    let keys: Vec<String> = cluster
        .lines()
        .iter()
        .map(|l| l["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), TOTAL, "one action line per webhook");
    assert_eq!(unique.len(), TOTAL, "no idempotency key ran twice");
}

#[test]
fn one_delivery_sent_to_two_instances_at_once_is_routed_once() {
    let url = fresh_database();
    let cluster = Cluster::new(2, &url, "");
    let daemons = cluster.start();
    let signed = bulk_signed(21, "inv_twice_", 0);
    for s in &signed[..20] {
        // The same signed request to both at once (a retry that went to
        // another instance behind the load balancer).
        let post = |d: &Daemon| {
            d.post(
                "/hooks/tight",
                &[("Tight-Verification", &s.token)],
                s.body.clone(),
            )
        };
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| post(&daemons[0]));
            let b = scope.spawn(|| post(&daemons[1]));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let (a, b): (Value, Value) = (
            serde_json::from_str(&a.1).unwrap(),
            serde_json::from_str(&b.1).unwrap(),
        );
        let accepted =
            a["accepted"].as_array().unwrap().len() + b["accepted"].as_array().unwrap().len();
        let duplicates =
            a["duplicates"].as_array().unwrap().len() + b["duplicates"].as_array().unwrap().len();
        assert_eq!((accepted, duplicates), (1, 1), "{a} {b}");
    }
    // A later, different delivery is the marker: once its line is written,
    // the twenty before it were routed too.
    daemons[0].post(
        "/hooks/tight",
        &[("Tight-Verification", &signed[20].token)],
        signed[20].body.clone(),
    );
    assert!(eventually(30, || cluster
        .lines()
        .iter()
        .any(|l| l["params"]["invoice"] == signed[20].invoice)));
    assert!(eventually(30, || cluster.lines().len() >= 21));
    let invoices: Vec<String> = cluster
        .lines()
        .iter()
        .map(|l| l["params"]["invoice"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = invoices.iter().collect();
    assert_eq!((invoices.len(), unique.len()), (21, 21), "{invoices:?}");
}

#[test]
fn retention_still_runs_when_the_leader_is_killed() {
    let url = fresh_database();
    let cluster = Cluster::new(2, &url, "retention = \"1s\"\ndedup_window = \"1s\"");
    let mut daemons = cluster.start();
    // Which one leads (the heartbeat holds the lease from the start).
    let mut leader = None;
    assert!(eventually(20, || {
        query(
            &url,
            "SELECT owner FROM leases WHERE name = 'leader'",
            |r| leader = r[0].clone(),
        );
        leader.is_some()
    }));
    let mut instances = Vec::new();
    query(&url, "SELECT id FROM instances ORDER BY started_at", |r| {
        instances.push(r[0].clone().unwrap())
    });
    assert_eq!(instances.len(), 2);
    // Kill the leader; then send events to the other only.
    let leading = instances
        .iter()
        .position(|i| Some(i) == leader.as_ref())
        .unwrap();
    daemons[leading].kill9();
    let other = &daemons[1 - leading];
    let id = other.send_viewed("inv_retained");
    assert!(eventually(20, || !cluster.lines().is_empty()));
    // The other takes the lease over and prunes the routed event once it is
    // past retention.
    let gone = eventually(60, || {
        let mut n = 1;
        query(
            &url,
            &format!("SELECT count(*) FROM events WHERE id = '{id}'"),
            |r| n = r[0].as_deref().unwrap().parse::<i64>().unwrap(),
        );
        n == 0
    });
    assert!(gone, "not pruned\n{}", other.logs());
    let mut now_leading = None;
    query(
        &url,
        "SELECT owner FROM leases WHERE name = 'leader'",
        |r| now_leading = r[0].clone(),
    );
    assert_eq!(now_leading.as_ref(), Some(&instances[1 - leading]));
}

#[test]
fn order_by_holds_across_three_instances() {
    const TOTAL: usize = 6;
    let url = fresh_database();
    let dir = tempfile::tempdir().unwrap();
    // The receiver answers the first request after a second: time for the
    // other instances to take the next webhooks and, were the order kept
    // only within each, to send theirs meanwhile.
    let rx = crate::actions::Fixture::receiver(dir.path(), "", "sleep:1");
    let cluster = Cluster::with(
        3,
        &url,
        "",
        ", customer: \"acme\"",
        &format!(
            "plugin = \"http\"\nurl = \"{}\"\norder_by = \"customer\"",
            rx.url()
        ),
    );
    let daemons = cluster.start();
    let signed = bulk_signed(TOTAL, "inv_ord_", 0);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut sent = Vec::new();
    for (i, s) in signed.iter().enumerate() {
        let resp = client
            .post(daemons[i % 3].url("/hooks/tight"))
            .header("Tight-Verification", &s.token)
            .body(s.body.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        sent.push(s.invoice.clone());
    }
    let got = rx.wait(TOTAL, 60);
    let arrived: Vec<String> = got
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["data"]["data"]["eventData"]["entityId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        arrived, sent,
        "the customer's calls went out in the order its webhooks came"
    );
    // One at a time: each attempt began after the one before it ended,
    // though three instances ran them.
    assert!(eventually(30, || {
        let mut done = 0;
        query(
            &url,
            "SELECT count(*) FROM jobs WHERE state = 'done'",
            |r| done = r[0].as_deref().unwrap().parse::<usize>().unwrap(),
        );
        done == TOTAL
    }));
    let mut spans = Vec::new();
    query(
        &url,
        "SELECT a.started_at, a.finished_at FROM jobs j JOIN attempts a ON a.job_id = j.id
         ORDER BY j.order_seq, a.n",
        |r| {
            let ms = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
            spans.push((ms(0), ms(1)));
        },
    );
    assert_eq!(spans.len(), TOTAL, "one attempt each");
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two calls of one customer overlapped: {spans:?}"
        );
    }
}

/// Two instances share one `rate`: their action's budget is kept in the
/// database, so a receiver that refuses past its own limit sees the one
/// rate, not one per instance.
#[test]
fn one_rate_holds_across_two_instances() {
    const TOTAL: usize = 60;
    let url = fresh_database();
    let dir = tempfile::tempdir().unwrap();
    // 10/s with a burst of 3: at most 13 in any second for the two
    // together; the receiver refuses past 15 (room for scheduling), and
    // would refuse often at the 20/s two budgets of their own allow.
    let rx = crate::actions::Fixture::start(
        "receiver.py",
        &["--limit", "15"],
        dir.path().join("receiver.jsonl"),
    );
    let cluster = Cluster::with(
        2,
        &url,
        "",
        "",
        &format!(
            "plugin = \"http\"\nurl = \"{}\"\nconcurrency = 16\nrate = \"10/s\"\nburst = 3",
            rx.url()
        ),
    );
    let daemons = cluster.start();
    let signed = bulk_signed(TOTAL, "inv_rate_", 0);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (i, s) in signed.iter().enumerate() {
        let resp = client
            .post(daemons[i % 2].url("/hooks/tight"))
            .header("Tight-Verification", &s.token)
            .body(s.body.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let got = rx.wait(TOTAL, 60);
    let at: Vec<String> = got
        .iter()
        .map(|r| {
            let t = r["at"].as_f64().unwrap() - got[0]["at"].as_f64().unwrap();
            format!("{t:.3} {}", r["step"])
        })
        .collect();
    assert_eq!(got.len(), TOTAL, "the receiver refused some: {at:?}");
    let ids: HashSet<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), TOTAL, "each job delivered once");
    let deferred: f64 = daemons
        .iter()
        .map(|d| {
            value(
                &scrape(d),
                "switchyard_action_deferred_total",
                &[("action", "audit")],
            )
        })
        .sum();
    assert!(deferred >= 40.0, "jobs waited for the budget: {deferred}");
    let mut budgets = 0;
    query(&url, "SELECT count(*) FROM rate_budgets", |r| {
        budgets = r[0].as_deref().unwrap().parse::<usize>().unwrap()
    });
    assert_eq!(budgets, 1, "one budget, in the database");
}
