//! # File action plugin
//!
//! Appends each job it is given as one JSON line to a file: an audit trail
//! users can `tail -f`, and the test suite's window into what rules decided.
//!
//! Settings:
//! - `path` (required): the file to append to; created with its parent folders.
//! - `fsync` (default `true`): flush each line to disk before reporting done.
//!
//! Each line is `{"job_id", "idempotency_key", "action", "rule", "attempt",
//! "event_id", "event_type", "params", "written_at_ms"}`; with `include_event = true`
//! the whole event envelope is added as `event`.
//!
//! Failures to open or write the file are retryable (a full disk may clear);
//! a job is never half-written, as each line goes out in one `write` call.
//!
//! With `fsync`, a job is reported done only once its line is on disk. The
//! host hands it every ready job in one call (ABI 1.3 `execute_batch`):
//! their lines go out in one `write` and one fsync. Calls running at once
//! share an fsync too: whoever syncs covers every line written before it
//! started (group commit, as the store does).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: PathBuf,
    #[serde(default = "yes")]
    fsync: bool,
    #[serde(default)]
    include_event: bool,
}

fn yes() -> bool {
    true
}

pub struct FileAction {
    path: PathBuf,
    fsync: bool,
    include_event: bool,
    /// The open file (opened lazily, so a file that cannot be opened yet is
    /// a retryable job failure rather than a refused config) and the number
    /// of writes made to it.
    file: Mutex<(Option<Arc<File>>, u64)>,
    /// Writes known to be on disk; held while syncing, so one fsync runs at a time.
    synced: Mutex<u64>,
}

impl FileAction {
    fn open(&self) -> std::io::Result<File> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    fn line(&self, job: &Job) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut line = json!({
            "job_id": job.id,
            "idempotency_key": job.idempotency_key,
            "action": job.action,
            "rule": job.rule,
            "attempt": job.attempt,
            "event_id": job.event.get("id").cloned().unwrap_or(Value::Null),
            "event_type": job.event.get("type").cloned().unwrap_or(Value::Null),
            "params": job.params,
            "written_at_ms": now,
        });
        if self.include_event {
            line["event"] = job.event.clone();
        }
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

impl Action for FileAction {
    fn create(_host: Host, config: Value) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("file settings: {e}"))?;
        if config.path.as_os_str().is_empty() {
            return Err("file settings: path is empty".into());
        }
        Ok(FileAction {
            path: config.path,
            fsync: config.fsync,
            include_event: config.include_event,
            file: Mutex::new((None, 0)),
            synced: Mutex::new(0),
        })
    }

    fn execute(&self, job: &Job, _timeout: Duration) -> Outcome {
        match self.append(&self.line(job)) {
            Ok(()) => Outcome::Done(None),
            Err(message) => Outcome::Retryable(message),
        }
    }

    /// Every ready job in one call: their lines in one `write`, one sync.
    const BATCHES: bool = true;
    /// One write and one sync for a batch's lines.
    const BATCH_IS_ONE_OPERATION: bool = true;

    fn execute_batch(&self, jobs: &[Job], _timeout: Duration) -> Vec<Outcome> {
        let lines: Vec<u8> = jobs.iter().flat_map(|job| self.line(job)).collect();
        let outcome = match self.append(&lines) {
            Ok(()) => Outcome::Done(None),
            Err(message) => Outcome::Retryable(message),
        };
        vec![outcome; jobs.len()]
    }
}

impl FileAction {
    /// Appends whole lines in one `write` and, with `fsync`, returns once
    /// they are on disk: a sync that started after the write covers them.
    fn append(&self, lines: &[u8]) -> Result<(), String> {
        let (file, seq) = {
            let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if guard.0.is_none() {
                let f = self
                    .open()
                    .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
                guard.0 = Some(Arc::new(f));
            }
            let Some(file) = guard.0.clone() else {
                return Err("file not open".into());
            };
            if let Err(e) = (&*file).write_all(lines) {
                // Reopen next time: the file may have been rotated or removed.
                guard.0 = None;
                return Err(format!("cannot write {}: {e}", self.path.display()));
            }
            guard.1 += 1;
            (file, guard.1)
        };
        if !self.fsync {
            return Ok(());
        }
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            // An fsync that started after our write covered it.
            return Ok(());
        }
        // Every write made so far is covered by the fsync about to run.
        let upto = self.file.lock().unwrap_or_else(|p| p.into_inner()).1;
        file.sync_data()
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))?;
        *synced = upto.max(*synced);
        Ok(())
    }
}

switchyard_plugin_api::export_action!("file", FileAction);

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u32) -> Job {
        Job {
            id: format!("job{n}"),
            idempotency_key: format!("ev:rule:{n}"),
            action: "audit".into(),
            rule: "rule".into(),
            attempt: 1,
            params: json!({"n": n}),
            event: json!({"id": "ev", "type": "tight.invoiceViewed"}),
            trace: None,
        }
    }

    #[test]
    fn appends_one_line_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let action = FileAction::create(Host::detached(), json!({"path": path})).unwrap();
        for n in 0..3 {
            assert_eq!(
                action.execute(&job(n), Duration::from_secs(1)),
                Outcome::Done(None)
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["params"]["n"], 2);
        assert_eq!(lines[0]["event_type"], "tight.invoiceViewed");
    }

    #[test]
    fn unwritable_path_is_retryable_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let action =
            FileAction::create(Host::detached(), json!({"path": blocker.join("x.jsonl")})).unwrap();
        assert!(matches!(
            action.execute(&job(0), Duration::from_secs(1)),
            Outcome::Retryable(_)
        ));
        let err = FileAction::create(Host::detached(), json!({"path": "x", "colour": 1}))
            .err()
            .unwrap();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn a_batch_is_one_line_per_job_in_order_and_fails_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let action = FileAction::create(Host::detached(), json!({"path": path})).unwrap();
        let jobs: Vec<Job> = (0..5).map(job).collect();
        let outcomes = action.execute_batch(&jobs, Duration::from_secs(1));
        assert_eq!(outcomes, vec![Outcome::Done(None); 5]);
        assert_eq!(
            action.execute(&job(5), Duration::from_secs(1)),
            Outcome::Done(None)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let ns: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["params"]["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ns, vec![0, 1, 2, 3, 4, 5]);

        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let action =
            FileAction::create(Host::detached(), json!({"path": blocker.join("x.jsonl")})).unwrap();
        let outcomes = action.execute_batch(&jobs[..2], Duration::from_secs(1));
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Retryable(m) if m.contains("cannot open"))));
    }
}
