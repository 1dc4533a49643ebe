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
        let envs: Vec<Env> = (0..n).map(|_| Env::new()).collect();
        let audit = envs[0].path("data/audit.jsonl");
        let configs = envs
            .iter()
            .map(|env| {
                env.with_standard_plugins();
                env.rule(
                    "viewed",
                    r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId });"#,
                );
                env.config(&format!(
                    "[store]\nurl = \"{url}\"\n{store}\n{TIGHT_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
                    audit.display()
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
    // done, whoever ran it.
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
    for id in &want {
        let (state, jobs, done) = &states[*id];
        assert_eq!(
            (state.as_str(), jobs.as_str(), done.as_deref()),
            ("routed", "1", Some("t")),
            "{id}"
        );
    }
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
