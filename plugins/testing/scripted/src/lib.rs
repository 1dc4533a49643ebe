//! An action whose outcome the job's params choose, for the dispatcher's
//! tests: `{"fail": "permanent"}` fails for good, `{"fail": "retryable"}`
//! fails for now, `{"fail_unless_exists": PATH}` fails (retryably) until
//! that file exists; `{"panic": true}` panics; anything else succeeds. It
//! takes jobs in batch calls (ABI 1.3), one outcome per job.

use std::time::Duration;

use switchyard_plugin_api::{serde_json::Value, Action, Host, Job, Outcome};

pub struct Scripted;

impl Action for Scripted {
    fn create(_host: Host, _config: Value) -> Result<Self, String> {
        Ok(Scripted)
    }

    const BATCHES: bool = true;

    fn execute(&self, job: &Job, _timeout: Duration) -> Outcome {
        if job.params.get("panic").is_some() {
            panic!("told to panic");
        }
        if let Some(path) = job.params.get("fail_unless_exists").and_then(Value::as_str) {
            if !std::path::Path::new(path).exists() {
                return Outcome::Retryable(format!("{path} does not exist yet"));
            }
        }
        match job.params.get("fail").and_then(Value::as_str) {
            Some("permanent") => Outcome::Permanent("told to fail for good".into()),
            Some("retryable") => Outcome::Retryable("told to fail for now".into()),
            _ => Outcome::Done(None),
        }
    }
}

switchyard_plugin_api::export_action!("scripted", Scripted);
