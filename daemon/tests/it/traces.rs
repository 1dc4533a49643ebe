//! OpenTelemetry traces, end to end: a real OTLP/HTTP receiver on
//! 127.0.0.1 decoding with the official protobuf definitions (Python
//! `opentelemetry-proto`), a Tight webhook through a rule to the http
//! action, and the destination that receives its `traceparent`.

use serde_json::Value;

use crate::actions::{forwarding, Fixture, HOOK_SECRET};
use crate::common::*;
use crate::dashboard::{get, sign_in, TOKEN};

/// The spans the collector got so far.
fn spans(collector: &Fixture) -> Vec<Value> {
    collector.lines()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// One webhook, one trace: the webhook's server span, with `verify`,
/// `store`, `route` and each attempt of its job as children, in one trace
/// whose id the destination receives in `traceparent` (each attempt's own
/// span as the parent). A replay is a trace of its own linked to the
/// first. With the collector gone, webhooks are still served and
/// delivered, and the spans that could not go are counted as dropped.
#[test]
fn one_webhook_is_one_trace_from_the_socket_to_the_destination() {
    let env = Env::new();
    let collector = Fixture::start("otlp_receiver.py", &[], env.dir.path().join("spans.jsonl"));
    // The first attempt fails, the retry succeeds.
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "500,200");
    let config = forwarding(
        &env,
        &rx.url(),
        "",
        &format!(
            "[telemetry]\nendpoint = \"http://127.0.0.1:{}\"\nservice_name = \"switchyard-test\"\n\
             trace_url = \"https://traces.example/trace/{{trace_id}}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
            collector.port
        ),
    );
    let (code, checked) = cli(&["check"], &config);
    assert_eq!(code, 0, "{checked}");
    assert!(
        checked.contains(&format!(
            "telemetry: traces to http://127.0.0.1:{}/v1/traces as switchyard-test, 100% of webhooks",
            collector.port
        )),
        "{checked}"
    );
    let daemon = Daemon::start(&config);
    assert!(daemon.logged("tracing on"), "{}", daemon.logs());
    let event_id = daemon.send_viewed("inv_traced");
    let requests = rx.wait(2, 20);
    assert_eq!(requests.len(), 2, "{}", daemon.logs());
    assert!(
        eventually(20, || named(&spans(&collector), "attempt forward").len()
            == 2
            && named(&spans(&collector), "POST /hooks/tight").len() == 1),
        "{:#?}",
        spans(&collector)
    );
    let all = spans(&collector);
    let root = named(&all, "POST /hooks/tight")[0];
    let trace_id = root["trace_id"].as_str().unwrap();
    assert_eq!(root["parent_span_id"], "", "the webhook's span is the root");
    assert_eq!(root["kind"], 2, "a server span");
    assert_eq!(root["service"], "switchyard-test");
    assert_eq!(root["attributes"]["switchyard.source"], "tight");
    assert_eq!(root["attributes"]["http.response.status_code"], 200);
    for name in ["verify", "store", "route"] {
        let span = named(&all, name);
        assert_eq!(span.len(), 1, "{name}: {all:#?}");
        assert_eq!(span[0]["trace_id"], trace_id, "{name}");
        assert_eq!(
            span[0]["parent_span_id"], root["span_id"],
            "{name} is the webhook's child"
        );
    }
    assert_eq!(
        named(&all, "verify")[0]["attributes"]["switchyard.verdict"],
        "1 event(s)"
    );
    assert_eq!(named(&all, "route")[0]["attributes"]["switchyard.jobs"], 1);
    let mut attempts = named(&all, "attempt forward");
    attempts.sort_by_key(|s| s["attributes"]["switchyard.attempt"].as_i64());
    for (n, (attempt, outcome)) in attempts.iter().zip(["retryable", "done"]).enumerate() {
        assert_eq!(attempt["trace_id"], trace_id);
        assert_eq!(attempt["parent_span_id"], root["span_id"]);
        assert_eq!(attempt["kind"], 3, "a client span");
        assert_eq!(attempt["attributes"]["switchyard.attempt"], n as i64 + 1);
        assert_eq!(attempt["attributes"]["switchyard.outcome"], outcome);
        let status = [500, 200][n];
        assert_eq!(attempt["attributes"]["http.response.status_code"], status);
        assert_eq!(attempt["attributes"]["switchyard.event_id"], event_id);
        // The destination got this attempt's context.
        let sent = requests[n]["headers"]["traceparent"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            sent,
            format!("00-{trace_id}-{}-01", attempt["span_id"].as_str().unwrap()),
            "attempt {}",
            n + 1
        );
    }
    // The log lines of the accepted webhook and of each attempt name the
    // trace; the dashboard's event page shows it, linked.
    let naming = daemon
        .logs()
        .lines()
        .filter(|l| l.contains(trace_id))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<Vec<_>>();
    assert!(
        naming.iter().any(|m| m == "webhook accepted")
            && naming.iter().any(|m| m == "job done")
            && naming.iter().any(|m| m.starts_with("job failed")),
        "{naming:?}"
    );
    let base = format!("http://{}", daemon.admin_addr());
    let (_, page, _) = get(
        &base,
        &format!("/ui/events/{event_id}"),
        Some(&sign_in(&base, TOKEN)),
    );
    assert!(
        page.contains(&format!("href=\"https://traces.example/trace/{trace_id}\"")),
        "{page}"
    );

    // A sender's own trace context is linked, not adopted.
    let theirs = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = invoice_viewed("inv_with_their_trace");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let sent_by_them = format!("00-{theirs}-00f067aa0ba902b7-01");
    let (status, text) = daemon.post(
        "/hooks/tight",
        &[
            ("Tight-Verification", &token),
            ("traceparent", &sent_by_them),
        ],
        body,
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        eventually(20, || named(&spans(&collector), "POST /hooks/tight").len()
            == 2),
        "{:#?}",
        spans(&collector)
    );
    let all = spans(&collector);
    let second = named(&all, "POST /hooks/tight")
        .into_iter()
        .find(|s| s["trace_id"] != trace_id)
        .unwrap();
    assert_ne!(second["trace_id"], theirs, "not adopted");
    assert_eq!(second["parent_span_id"], "");
    assert_eq!(second["links"][0]["trace_id"], theirs, "linked");

    // A replay: a trace of its own, linked to the webhook's.
    let (code, out) = cli(&["replay", &event_id], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        eventually(20, || !named(&spans(&collector), "route (replay)")
            .is_empty()),
        "{:#?}",
        spans(&collector)
    );
    let all = spans(&collector);
    let replay = named(&all, "route (replay)")[0];
    assert_ne!(replay["trace_id"], trace_id);
    assert_eq!(replay["links"][0]["trace_id"], trace_id);
    assert_eq!(replay["links"][0]["span_id"], root["span_id"]);
    // The replay's job is backlog: its attempt is a trace of its own too,
    // linked to the webhook's.
    assert!(
        eventually(20, || named(&spans(&collector), "attempt forward")
            .iter()
            .any(|s| s["links"][0]["trace_id"] == trace_id)),
        "{:#?}",
        spans(&collector)
    );

    // The collector goes away: webhooks are still served and delivered,
    // and the spans that could not go are counted.
    drop(collector);
    daemon.send_viewed("inv_no_collector");
    assert!(
        eventually(20, || rx.lines().len() >= 5),
        "{}",
        daemon.logs()
    );
    assert!(
        eventually(20, || value(
            &scrape(&daemon),
            "switchyard_trace_spans_dropped_total",
            &[]
        ) >= 1.0),
        "{}",
        daemon.logs()
    );
    let exported = value(
        &scrape(&daemon),
        "switchyard_trace_spans_exported_total",
        &[],
    );
    assert!(exported >= 7.0, "{exported}");
}

/// Off unless a collector is named: no spans, no `traceparent` anywhere,
/// and the envelope is as it always was.
#[test]
fn without_a_collector_nothing_is_traced() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "200");
    let config = forwarding(&env, &rx.url(), "", "");
    let (_, checked) = cli(&["check"], &config);
    assert!(checked.contains("telemetry: off"), "{checked}");
    let daemon = Daemon::start(&config);
    let event_id = daemon.send_viewed("inv_untraced");
    let requests = rx.wait(1, 20);
    assert_eq!(requests.len(), 1, "{}", daemon.logs());
    assert!(requests[0]["headers"].get("traceparent").is_none());
    assert!(!requests[0]["body"]
        .as_str()
        .unwrap()
        .contains("traceparent"));
    let (_, shown) = cli(&["events", "show", &event_id], &config);
    assert!(!shown.contains("traceparent"), "{shown}");
    assert!(!daemon.logged("tracing on"));
}
