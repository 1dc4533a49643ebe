//! The C entry points behind [`export_provider!`](crate::export_provider) and
//! [`export_action!`](crate::export_action).
//!
//! Every function here is called by the host across the C ABI. Each one turns
//! the borrowed C inputs into safe Rust values, calls the plugin's trait
//! method inside `catch_unwind`, and hands results back through the host's
//! copying callbacks. A panic becomes `SY_ERR_PANIC` with the panic message;
//! it never unwinds into the host.

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use serde_json::Value;

use crate::ffi::{self, SyBytes, SyHost, SyOut, SyRequest};
use crate::{
    Action, BatchOutcome, BatchOutput, BatchStatus, CreateOutput, Host, Job, Provider, Request,
    SampleError, SubscriptionCall, SubscriptionError, SubscriptionsOutput,
};

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

/// Panics inside a plugin are reported to the host as a status and a message,
/// never printed: replace this library's panic hook with one that records the
/// message for the guard below.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.to_string();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
        }));
    });
}

/// Host output callbacks for one call: used only inside that call, on its
/// thread, as the ABI says (the value never leaves the entry point).
struct Out(*mut SyOut);

impl Out {
    fn set_json(&self, bytes: &[u8]) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: the host's sy_out, valid for this call; the 1.0 fields
        // are read in place (an older host's struct is shorter than ours).
        unsafe {
            let (set, ctx) = ((*self.0).set_json, (*self.0).ctx);
            set(ctx, bytes.as_ptr(), bytes.len());
        }
    }
    fn set_message(&self, message: &str) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: as in set_json.
        unsafe {
            let (set, ctx) = ((*self.0).set_message, (*self.0).ctx);
            set(ctx, message.as_ptr(), message.len());
        }
    }
}

/// Runs `f`, turning a panic into `SY_ERR_PANIC` with its message.
fn guard(out: &Out, f: impl FnOnce() -> i32) -> i32 {
    install_panic_hook();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(payload) => {
            let message = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            out.set_message(&format!("plugin panicked: {message}"));
            ffi::SY_ERR_PANIC
        }
    }
}

fn create_with<T: Send + Sync + 'static>(
    host: *const SyHost,
    config_json: SyBytes,
    out: *mut SyOut,
    instance: *mut *mut c_void,
    make: fn(Host, Value) -> Result<T, String>,
    output: fn(&T) -> Option<CreateOutput>,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        if instance.is_null() {
            out.set_message("create called without an instance pointer");
            return ffi::SY_ERR_INTERNAL;
        }
        let config: Value = match serde_json::from_slice(unsafe { config_json.as_slice() }) {
            Ok(v) => v,
            Err(e) => {
                out.set_message(&format!("config is not valid JSON: {e}"));
                return ffi::SY_ERR_CONFIG;
            }
        };
        let host = unsafe { Host::from_raw(host) };
        match make(host, config) {
            Ok(t) => {
                if let Some(said) = output(&t) {
                    out.set_json(&serde_json::to_vec(&said).unwrap_or_default());
                }
                unsafe { *instance = Box::into_raw(Box::new(t)) as *mut c_void };
                ffi::SY_OK
            }
            Err(message) => {
                out.set_message(&message);
                ffi::SY_ERR_CONFIG
            }
        }
    })
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn create_provider<T: Provider>(
    host: *const SyHost,
    config_json: SyBytes,
    out: *mut SyOut,
    instance: *mut *mut c_void,
) -> i32 {
    create_with::<T>(host, config_json, out, instance, T::create, |p| {
        Some(CreateOutput {
            methods: p.methods().iter().map(|m| m.to_string()).collect(),
            credential_headers: p.credential_headers(),
            batch_is_one_operation: false,
            catalog: p.catalog(),
        })
    })
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn create_action<T: Action>(
    host: *const SyHost,
    config_json: SyBytes,
    out: *mut SyOut,
    instance: *mut *mut c_void,
) -> i32 {
    create_with::<T>(host, config_json, out, instance, T::create, |_| {
        (T::BATCHES && T::BATCH_IS_ONE_OPERATION).then(|| CreateOutput {
            batch_is_one_operation: true,
            ..CreateOutput::default()
        })
    })
}

/// # Safety
/// `instance` must come from this plugin's `create` and not be used again.
pub unsafe extern "C" fn destroy<T: Send + Sync + 'static>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    install_panic_hook();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        drop(Box::from_raw(instance as *mut T));
    }));
}

/// # Safety
/// As [`SyBytes::as_slice`]: the bytes are borrowed for the current call only.
unsafe fn text<'a>(bytes: SyBytes) -> Option<&'a str> {
    std::str::from_utf8(bytes.as_slice()).ok()
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn verify<T: Provider>(
    instance: *mut c_void,
    request: *const SyRequest,
    out: *mut SyOut,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        let (Some(provider), Some(raw)) = ((instance as *const T).as_ref(), request.as_ref())
        else {
            out.set_message("verify called without an instance or request");
            return ffi::SY_ERR_INTERNAL;
        };
        if raw.struct_size < std::mem::size_of::<SyRequest>() {
            out.set_message("request struct from an older host is too small");
            return ffi::SY_ERR_INTERNAL;
        }
        let raw_headers: &[ffi::SyHeader] = if raw.headers.is_null() || raw.headers_len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(raw.headers, raw.headers_len)
        };
        let headers: Vec<(&str, &[u8])> = raw_headers
            .iter()
            .filter_map(|h| Some((text(h.name)?, h.value.as_slice())))
            .collect();
        let (Some(method), Some(path), Some(query), Some(remote_addr)) = (
            text(raw.method),
            text(raw.path),
            text(raw.query),
            text(raw.remote_addr),
        ) else {
            out.set_message("request line is not valid UTF-8");
            return ffi::SY_REJECT_MALFORMED;
        };
        let request = Request {
            method,
            path,
            query,
            headers: &headers,
            remote_addr,
            body: raw.body.as_slice(),
        };
        match provider.receive(&request) {
            Ok(received) => match serde_json::to_vec(&received) {
                Ok(json) => {
                    out.set_json(&json);
                    ffi::SY_OK
                }
                Err(e) => {
                    out.set_message(&format!("could not encode events: {e}"));
                    ffi::SY_ERR_INTERNAL
                }
            },
            Err(rejection) => {
                out.set_message(&rejection.message);
                rejection.kind.status()
            }
        }
    })
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn execute<T: Action>(
    instance: *mut c_void,
    job_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        let Some(action) = (instance as *const T).as_ref() else {
            out.set_message("execute called without an instance");
            return ffi::SY_ERR_INTERNAL;
        };
        let job: Job = match serde_json::from_slice(job_json.as_slice()) {
            Ok(job) => job,
            Err(e) => {
                out.set_message(&format!("job is not valid: {e}"));
                return ffi::SY_FAIL_PERMANENT;
            }
        };
        // The same outcome as a batch answers it, told through the status.
        let outcome = BatchOutcome::from(action.execute(&job, Duration::from_millis(timeout_ms)));
        let status = match outcome.status {
            BatchStatus::Done => {
                if let Some(result) = outcome.result {
                    out.set_json(&serde_json::to_vec(&result).unwrap_or_default());
                }
                return ffi::SY_OK;
            }
            BatchStatus::Retryable => ffi::SY_FAIL_RETRYABLE,
            BatchStatus::Permanent => ffi::SY_FAIL_PERMANENT,
        };
        out.set_message(&outcome.message);
        if outcome.detail.retry_after_ms.is_some() || outcome.detail.disable {
            out.set_json(&serde_json::to_vec(&outcome.detail).unwrap_or_default());
        }
        status
    })
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn execute_batch<T: Action>(
    instance: *mut c_void,
    jobs_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        let Some(action) = (instance as *const T).as_ref() else {
            out.set_message("execute_batch called without an instance");
            return ffi::SY_ERR_INTERNAL;
        };
        let jobs: Vec<Job> = match serde_json::from_slice(jobs_json.as_slice()) {
            Ok(jobs) => jobs,
            Err(e) => {
                out.set_message(&format!("jobs are not valid: {e}"));
                return ffi::SY_FAIL_PERMANENT;
            }
        };
        let outcomes = action.execute_batch(&jobs, Duration::from_millis(timeout_ms));
        if outcomes.len() != jobs.len() {
            out.set_message(&format!(
                "execute_batch gave {} outcomes for {} jobs",
                outcomes.len(),
                jobs.len()
            ));
            return ffi::SY_ERR_INTERNAL;
        }
        let output = BatchOutput {
            outcomes: outcomes.into_iter().map(BatchOutcome::from).collect(),
        };
        out.set_json(&serde_json::to_vec(&output).unwrap_or_default());
        ffi::SY_OK
    })
}

/// # Safety
/// Called by the host per the ABI contract.
pub unsafe extern "C" fn sample<T: Provider>(
    instance: *mut c_void,
    event_name: SyBytes,
    out: *mut SyOut,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        let Some(provider) = (instance as *const T).as_ref() else {
            out.set_message("sample called without an instance");
            return ffi::SY_ERR_INTERNAL;
        };
        let Some(name) = text(event_name) else {
            out.set_message("event name is not valid UTF-8");
            return ffi::SY_ERR_UNSUPPORTED;
        };
        match provider.sample(name) {
            Ok(request) => match serde_json::to_vec(&request) {
                Ok(json) => {
                    out.set_json(&json);
                    ffi::SY_OK
                }
                Err(e) => {
                    out.set_message(&format!("could not encode sample: {e}"));
                    ffi::SY_ERR_INTERNAL
                }
            },
            Err(SampleError::Unknown(message)) => {
                out.set_message(&message);
                ffi::SY_ERR_UNSUPPORTED
            }
            Err(SampleError::Failed(message)) => {
                out.set_message(&message);
                ffi::SY_ERR_INTERNAL
            }
        }
    })
}

/// `subscriptions` (ABI 1.4): one call on the provider's subscriptions.
///
/// # Safety
/// As every entry point: `instance` from this plugin's `create`, `call_json`
/// readable for the call, `out` the host's sink for this call.
pub unsafe extern "C" fn subscriptions<T: Provider>(
    instance: *mut c_void,
    call_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32 {
    let out = Out(out);
    guard(&out, || {
        let Some(provider) = (instance as *const T).as_ref() else {
            out.set_message("subscriptions called without an instance");
            return ffi::SY_ERR_INTERNAL;
        };
        let call: SubscriptionCall = match serde_json::from_slice(call_json.as_slice()) {
            Ok(call) => call,
            Err(e) => {
                out.set_message(&format!("not a subscription call this plugin knows: {e}"));
                return ffi::SY_ERR_UNSUPPORTED;
            }
        };
        match provider.subscriptions(&call, Duration::from_millis(timeout_ms)) {
            Ok(subscriptions) => match serde_json::to_vec(&SubscriptionsOutput { subscriptions }) {
                Ok(json) => {
                    out.set_json(&json);
                    ffi::SY_OK
                }
                Err(e) => {
                    out.set_message(&format!("could not encode subscriptions: {e}"));
                    ffi::SY_ERR_INTERNAL
                }
            },
            Err(e) => {
                out.set_message(e.message());
                match e {
                    SubscriptionError::Unsupported(_) => ffi::SY_ERR_UNSUPPORTED,
                    SubscriptionError::Retryable(_) => ffi::SY_FAIL_RETRYABLE,
                    SubscriptionError::Permanent(_) => ffi::SY_FAIL_PERMANENT,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use serde_json::json;

    /// What a call handed back through its sy_out.
    #[derive(Default)]
    struct Sink {
        json: Vec<u8>,
        message: String,
    }

    extern "C" fn sink_json(ctx: *mut c_void, ptr: *const u8, len: usize) {
        // SAFETY: ctx is the test's Sink; ptr/len the plugin's bytes.
        unsafe { (*(ctx as *mut Sink)).json = std::slice::from_raw_parts(ptr, len).to_vec() };
    }

    extern "C" fn sink_message(ctx: *mut c_void, ptr: *const u8, len: usize) {
        // SAFETY: as in sink_json.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        unsafe { (*(ctx as *mut Sink)).message = String::from_utf8_lossy(bytes).into_owned() };
    }

    /// Done for an even `n`, a Retry-After for an odd one, gone without
    /// one; a panic for `n = 0`.
    struct Numbers;

    impl Action for Numbers {
        fn create(_host: Host, _config: Value) -> Result<Self, String> {
            Ok(Numbers)
        }
        fn execute(&self, job: &Job, _timeout: Duration) -> Outcome {
            match job.params["n"].as_u64() {
                Some(0) => panic!("zero"),
                Some(n) if n % 2 == 0 => Outcome::Done(Some(json!({ "n": n }))),
                Some(n) => Outcome::RetryAfter(format!("odd {n}"), Duration::from_millis(1500)),
                None => Outcome::Gone("no n".into()),
            }
        }
        const BATCHES: bool = true;
    }

    fn jobs(params: &[Value]) -> Vec<u8> {
        let jobs: Vec<Value> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({"id": format!("j{i}"), "idempotency_key": format!("k{i}"), "action": "a",
                       "rule": "r", "attempt": 1, "params": p, "event": {}})
            })
            .collect();
        serde_json::to_vec(&jobs).unwrap()
    }

    fn call(jobs_json: &[u8]) -> (i32, Sink) {
        let mut sink = Sink::default();
        let mut out = SyOut {
            ctx: &mut sink as *mut Sink as *mut c_void,
            set_json: sink_json,
            set_message: sink_message,
            struct_size: std::mem::size_of::<SyOut>(),
        };
        let instance = Box::into_raw(Box::new(Numbers)) as *mut c_void;
        // SAFETY: an instance of Numbers, the bytes and out live for the call.
        let status = unsafe {
            let status =
                execute_batch::<Numbers>(instance, SyBytes::from_slice(jobs_json), 1000, &mut out);
            destroy::<Numbers>(instance);
            status
        };
        (status, sink)
    }

    #[test]
    fn a_batch_answers_one_outcome_per_job_in_order() {
        let (status, sink) = call(&jobs(&[json!({"n": 2}), json!({"n": 3}), json!({})]));
        assert_eq!(status, ffi::SY_OK, "{}", sink.message);
        let output: Value = serde_json::from_slice(&sink.json).unwrap();
        assert_eq!(
            output,
            json!({"outcomes": [
                {"status": "done", "result": {"n": 2}},
                {"status": "retryable", "message": "odd 3", "retry_after_ms": 1500},
                {"status": "permanent", "message": "no n", "disable": true},
            ]})
        );
        let back: BatchOutput = serde_json::from_value(output).unwrap();
        let outcomes: Vec<Outcome> = back.outcomes.into_iter().map(Outcome::from).collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Done(Some(json!({"n": 2}))),
                Outcome::RetryAfter("odd 3".into(), Duration::from_millis(1500)),
                Outcome::Gone("no n".into()),
            ]
        );
    }

    #[test]
    fn a_panic_or_bad_jobs_fail_the_whole_call() {
        let (status, sink) = call(&jobs(&[json!({"n": 2}), json!({"n": 0})]));
        assert_eq!(status, ffi::SY_ERR_PANIC);
        assert!(sink.message.contains("zero"), "{}", sink.message);
        assert!(sink.json.is_empty());
        let (status, sink) = call(b"{\"not\": \"a list\"}");
        assert_eq!(status, ffi::SY_FAIL_PERMANENT);
        assert!(
            sink.message.contains("jobs are not valid"),
            "{}",
            sink.message
        );
    }
}
