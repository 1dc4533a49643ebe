//! What a queue action sends for a job, the same for every broker: the
//! body (the rule's `body` parameter, or the event's envelope) and the
//! fields that name the event and the delivery, which each broker carries
//! in its own way (a stream entry's fields, AMQP headers, NATS headers);
//! and the client certificate a queue action shows a broker that asks for
//! one ([`client_cert`]).

use serde_json::Value;
use switchyard_plugin_api::{Job, Outcome};

/// One job as a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The rule's `body` parameter (a string as it is, anything else as
    /// JSON), or the event's envelope as JSON.
    pub body: String,
    /// Whether `body` is JSON (everything but a string `body` parameter).
    pub json: bool,
    pub event_id: String,
    pub event_type: String,
    pub source: String,
    /// The same on every retry of the job: what a consumer dedupes on.
    pub idempotency_key: String,
    /// The attempt's W3C trace context, when the host traces.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Message {
    pub fn of(job: &Job) -> Message {
        let (body, json) = match job.params.get("body") {
            None | Some(Value::Null) => (job.event.to_string(), true),
            Some(Value::String(s)) => (s.clone(), false),
            Some(other) => (other.to_string(), true),
        };
        let text = |k: &str| {
            job.event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Message {
            body,
            json,
            event_id: text("id"),
            event_type: text("type"),
            source: text("source"),
            idempotency_key: job.idempotency_key.clone(),
            traceparent: job.trace.as_ref().map(|t| t.traceparent.clone()),
            tracestate: job.trace.as_ref().and_then(|t| t.tracestate.clone()),
        }
    }

    /// The fields that name the event and the delivery, by the names every
    /// queue action gives them; the trace context only when there is one.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("event_id", self.event_id.as_str()),
            ("event_type", self.event_type.as_str()),
            ("source", self.source.as_str()),
            ("idempotency_key", self.idempotency_key.as_str()),
        ];
        if let Some(t) = &self.traceparent {
            out.push(("traceparent", t));
        }
        if let Some(t) = &self.tracestate {
            out.push(("tracestate", t));
        }
        out
    }
}

/// A job's text parameter `name` (a destination: a stream, a routing key,
/// a subject), or `default` when the job gives none; an empty text or one
/// that is not a text is the rule's mistake, said by name.
pub fn destination<'a>(job: &'a Job, name: &str, default: &'a str) -> Result<&'a str, String> {
    match job.params.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        Some(_) => Err(format!(
            "the {name} parameter must be a text that is not empty"
        )),
    }
}

/// One call's jobs as a queue action handles them: each made into what the
/// broker is sent (`prepare`; its error is the rule's mistake, a permanent
/// failure), the prepared ones sent together (`send`: an outcome for each,
/// in their order, `None` for one it has no answer for), and an outcome for
/// every job in order; a job without one is retryable, saying `missing`.
pub fn batch<T>(
    jobs: &[Job],
    prepare: impl Fn(&Job) -> Result<T, String>,
    send: impl FnOnce(Vec<T>) -> Vec<Option<Outcome>>,
    missing: &str,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut prepared = Vec::new();
    let mut at = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match prepare(job) {
            Ok(p) => {
                prepared.push(p);
                at.push(i);
            }
            Err(why) => outcomes[i] = Some(Outcome::Permanent(why)),
        }
    }
    if !prepared.is_empty() {
        for (i, o) in at.into_iter().zip(send(prepared)) {
            outcomes[i] = o;
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Retryable(missing.to_string())))
        .collect()
}

/// A queue action's client certificate for TLS, for a broker that asks
/// for one: the PEM files of `cert_file` (the certificate, then its chain)
/// and `key_file` (its private key, PKCS#8 or PKCS#1 or SEC1), read once.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// The client certificate of a queue action's settings `cert_file` and
/// `key_file` (both or neither), read and checked to be PEM; an error
/// names the `plugin`'s setting and the file, never the key's contents.
pub fn client_cert(
    plugin: &str,
    cert_file: Option<&std::path::Path>,
    key_file: Option<&std::path::Path>,
) -> Result<Option<ClientCert>, String> {
    let (cert_file, key_file) = match (cert_file, key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(format!(
                "{plugin} settings: cert_file and key_file go together"
            ))
        }
    };
    let read = |setting: &str, path: &std::path::Path, marker: &str, what: &str| {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("{plugin} settings: {setting}: {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if !text.contains("-----BEGIN ") || !text.contains(marker) {
            return Err(format!(
                "{plugin} settings: {setting}: {} holds no PEM {what}",
                path.display()
            ));
        }
        Ok(bytes)
    };
    Ok(Some(ClientCert {
        cert: read("cert_file", cert_file, "CERTIFICATE-----", "certificate")?,
        key: read("key_file", key_file, "PRIVATE KEY-----", "private key")?,
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
    }))
}

/// A job as the queue actions' tests make them: event `e` of type
/// `tight.invoiceViewed` from `tight`, idempotency key `e:r:0`.
pub fn sample_job(params: Value) -> Job {
    Job {
        id: "j".into(),
        idempotency_key: "e:r:0".into(),
        action: "bus".into(),
        rule: "r".into(),
        attempt: 1,
        params,
        event: serde_json::json!({"id": "e", "type": "tight.invoiceViewed", "source": "tight", "data": {}}),
        trace: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_certificate_is_both_files_or_neither_and_pem() {
        let dir = std::env::temp_dir().join(format!("sy-client-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("c.pem");
        let key = dir.join("k.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&key, "not a key: s3cr3t-bytes").unwrap();
        assert!(client_cert("redis", None, None).unwrap().is_none());
        let e = client_cert("redis", Some(&cert), None).unwrap_err();
        assert_eq!(e, "redis settings: cert_file and key_file go together");
        let e = client_cert("nats", Some(&cert), Some(&key)).unwrap_err();
        assert!(
            e.starts_with("nats settings: key_file: ") && e.ends_with("holds no PEM private key"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = client_cert("amqp", Some(&dir.join("missing.pem")), Some(&key)).unwrap_err();
        assert!(
            e.starts_with("amqp settings: cert_file: ") && e.contains("missing.pem"),
            "{e}"
        );
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let id = client_cert("amqp", Some(&cert), Some(&key))
            .unwrap()
            .unwrap();
        assert!(id.key.starts_with(b"-----BEGIN PRIVATE KEY"));
        assert!(!format!("{id:?}").contains("MIIE"), "{id:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;
    use serde_json::json;
    use switchyard_plugin_api::TraceContext;

    fn job(params: Value) -> Job {
        sample_job(params)
    }

    #[test]
    fn a_batch_has_an_outcome_per_job_in_order() {
        let jobs = [
            job(json!({"stream": "a"})),
            job(json!({"stream": 5})),
            job(json!({"stream": "c"})),
        ];
        let sent = std::cell::Cell::new(0);
        let outcomes = batch(
            &jobs,
            |j| destination(j, "stream", "d").map(str::to_string),
            |prepared| {
                sent.set(prepared.len());
                assert_eq!(prepared, ["a", "c"]);
                vec![Some(Outcome::Done(None))]
            },
            "no answer",
        );
        assert_eq!(sent.get(), 2);
        assert_eq!(outcomes[0], Outcome::Done(None));
        assert!(matches!(&outcomes[1], Outcome::Permanent(e) if e.contains("stream")));
        assert_eq!(outcomes[2], Outcome::Retryable("no answer".into()));
    }

    #[test]
    fn the_body_is_the_event_or_what_the_rule_built() {
        let m = Message::of(&job(json!({})));
        assert!(m.json);
        let back: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(back["id"], "e");
        let m = Message::of(&job(json!({"body": "plain text"})));
        assert_eq!((m.body.as_str(), m.json), ("plain text", false));
        let m = Message::of(&job(json!({"body": {"n": 1}})));
        assert_eq!((m.body.as_str(), m.json), (r#"{"n":1}"#, true));
    }

    #[test]
    fn the_fields_name_the_event_and_the_trace_only_when_there_is_one() {
        let mut j = job(json!({}));
        let names = |m: &Message| m.fields().iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let m = Message::of(&j);
        assert_eq!(
            names(&m),
            ["event_id", "event_type", "source", "idempotency_key"]
        );
        assert_eq!(m.fields()[1].1, "tight.invoiceViewed");
        j.trace = Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: None,
        });
        assert_eq!(names(&Message::of(&j)).last(), Some(&"traceparent"));
    }

    #[test]
    fn a_destination_from_the_job_or_the_default() {
        assert_eq!(destination(&job(json!({})), "stream", "d"), Ok("d"));
        assert_eq!(
            destination(&job(json!({"stream": "s"})), "stream", "d"),
            Ok("s")
        );
        for bad in [json!(""), json!(5), json!([])] {
            let e = destination(&job(json!({ "stream": bad })), "stream", "d").unwrap_err();
            assert!(e.contains("stream parameter"), "{e}");
        }
    }
}
