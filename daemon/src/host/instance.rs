//! Plugin instances and the calls into them.
//!
//! An [`Instance`] is one `create`d plugin object serving one source or one
//! action. Its methods are synchronous and may block: callers run them on the
//! [`CallPool`](super::CallPool), never on the async runtime. Inputs are
//! borrowed by the plugin for the call; outputs come back through callbacks
//! that copy them into an [`OutBuf`] owned by this side.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use switchyard_plugin_api::ffi::{self, SyBytes, SyHeader, SyHost, SyOut, SyRequest};
use switchyard_plugin_api::{
    Answer, BatchOutcome, BatchStatus, CreateOutput, EventType, RejectKind, Rejection,
    SampleRequest, Subscription, SubscriptionCall, SubscriptionError, SubscriptionsOutput,
    VerifyOutput,
};

use super::library::Plugin;

/// Largest JSON output a plugin may hand back; more is refused.
const MAX_JSON_OUT: usize = 64 * 1024 * 1024;
/// Longest message or log line kept from a plugin; the rest is cut.
const MAX_MESSAGE: usize = 8 * 1024;

/// A plugin call's failure that is not the plugin's verdict on the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin panicked: {0}")]
    Panicked(String),
    #[error("plugin failed: {0}")]
    Internal(String),
    #[error("plugin returned invalid output: {0}")]
    BadOutput(String),
    #[error("plugin refused its config: {0}")]
    Config(String),
    #[error("not supported by this plugin: {0}")]
    Unsupported(String),
    #[error("plugin call timed out after {0:?}")]
    Timeout(Duration),
    #[error("plugin calls are saturated (none free within {0:?})")]
    Busy(Duration),
}

/// An owned webhook request, to be lent to a provider.
#[derive(Debug, Clone)]
pub struct OwnedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub remote_addr: String,
    pub body: bytes::Bytes,
}

/// What an action plugin made of a job: the ABI's own outcome type.
pub use switchyard_plugin_api::Outcome as ExecOutcome;

/// Where a plugin's outputs are copied to.
#[derive(Default)]
struct OutBuf {
    json: Option<Vec<u8>>,
    message: Option<String>,
    too_large: bool,
}

extern "C" fn out_set_json(ctx: *mut c_void, ptr: *const u8, len: usize) {
    // SAFETY: ctx is the OutBuf of the current call; ptr/len are borrowed.
    let buf = unsafe { &mut *(ctx as *mut OutBuf) };
    if len > MAX_JSON_OUT {
        buf.too_large = true;
        return;
    }
    buf.json = Some(unsafe { SyBytes { ptr, len }.as_slice() }.to_vec());
}

extern "C" fn out_set_message(ctx: *mut c_void, ptr: *const u8, len: usize) {
    let buf = unsafe { &mut *(ctx as *mut OutBuf) };
    let bytes = unsafe { SyBytes { ptr, len }.as_slice() };
    buf.message = Some(truncate(bytes));
}

fn truncate(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_MESSAGE)];
    String::from_utf8_lossy(cut).into_owned()
}

impl OutBuf {
    /// The sink of one call. It lives on the calling thread's stack for the
    /// call only, as the ABI says.
    fn sink(&mut self) -> SyOut {
        SyOut {
            ctx: self as *mut OutBuf as *mut c_void,
            set_json: out_set_json,
            set_message: out_set_message,
            struct_size: std::mem::size_of::<SyOut>(),
        }
    }
    fn message(&mut self) -> String {
        self.message.take().unwrap_or_else(|| "(no message)".into())
    }
}

/// The host services block handed to `create`; lives as long as the instance.
struct HostBlock {
    sy: SyHost,
    plugin: String,
    label: String,
}

extern "C" fn host_log(ctx: *mut c_void, level: u32, ptr: *const u8, len: usize) {
    // SAFETY: ctx is the HostBlock that owns this SyHost.
    let block = unsafe { &*(ctx as *const HostBlock) };
    let msg = truncate(unsafe { SyBytes { ptr, len }.as_slice() });
    let (plugin, instance) = (block.plugin.as_str(), block.label.as_str());
    match level {
        ffi::LOG_ERROR => tracing::error!(plugin, instance, "{msg}"),
        ffi::LOG_WARN => tracing::warn!(plugin, instance, "{msg}"),
        ffi::LOG_INFO => tracing::info!(plugin, instance, "{msg}"),
        ffi::LOG_DEBUG => tracing::debug!(plugin, instance, "{msg}"),
        _ => tracing::trace!(plugin, instance, "{msg}"),
    }
}

/// One live plugin object.
pub struct Instance {
    plugin: Arc<Plugin>,
    ptr: *mut c_void,
    /// The HTTP methods a provider's source takes (`POST` unless its
    /// `create` said more, ABI 1.5).
    methods: Vec<String>,
    /// The headers its verification reads that carry a credential (ABI 1.6).
    credential_headers: Vec<String>,
    /// An action's batch is one operation at its destination (ABI 1.7).
    batch_is_one_operation: bool,
    /// A provider's event types with their schemas (ABI 1.8), as said:
    /// the catalog compiles and checks them.
    catalog: Arc<Vec<EventType>>,
    _host: Box<HostBlock>,
}

/// The most event types a provider's catalog may list.
pub const MAX_CATALOG_TYPES: usize = 4096;
/// The longest name an event type of a catalog may have, in bytes.
pub const MAX_TYPE_NAME: usize = 200;

/// The catalog a provider's `create` declared, within bounds.
fn declared_catalog(types: Vec<EventType>) -> Result<Vec<EventType>, PluginError> {
    if types.len() > MAX_CATALOG_TYPES {
        return Err(PluginError::BadOutput(format!(
            "create declared {} event types (at most {MAX_CATALOG_TYPES})",
            types.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &types {
        if t.name.is_empty() || t.name.len() > MAX_TYPE_NAME {
            return Err(PluginError::BadOutput(format!(
                "create declared an event type named {:?} (1 to {MAX_TYPE_NAME} bytes)",
                t.name.chars().take(40).collect::<String>()
            )));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(PluginError::BadOutput(format!(
                "create declared the event type {:?} twice",
                t.name
            )));
        }
    }
    Ok(types)
}

/// The methods a provider may declare for its source.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "OPTIONS"];

/// Headers an answer may not set: the connection's and the body's framing
/// (the host's to say), and what the host always sets itself.
const RESERVED_HEADERS: [&str; 14] = [
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "host",
    "date",
    "server",
    "cache-control",
    "x-content-type-options",
];

/// A provider's answer as the host will send it, or why it will not.
fn checked_answer(answer: Answer) -> Result<Answer, String> {
    if !(200..=299).contains(&answer.status) {
        return Err(format!(
            "answer status {} (a verified request is answered 2xx)",
            answer.status
        ));
    }
    if answer.body.len() > Answer::MAX_BODY {
        return Err(format!(
            "answer body of {} bytes (at most {})",
            answer.body.len(),
            Answer::MAX_BODY
        ));
    }
    if answer.status == 204 && !answer.body.is_empty() {
        return Err("a 204 answer with a body".into());
    }
    if let Some(ct) = &answer.content_type {
        if warp::http::HeaderValue::from_str(ct).is_err() {
            return Err("answer content_type is not a header value".into());
        }
    }
    for (name, value) in &answer.headers {
        let lower = name.to_ascii_lowercase();
        if warp::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(format!("answer header {name:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!("answer header {name:?} is the host's to set"));
        }
        if warp::http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "answer header {name:?} has a value that is not a header value"
            ));
        }
    }
    if answer.headers.len() > 16 {
        return Err(format!(
            "{} answer headers (at most 16)",
            answer.headers.len()
        ));
    }
    Ok(answer)
}

/// What a provider's `create` said beside its instance.
fn created(json: Option<&[u8]>) -> Result<CreateOutput, PluginError> {
    match json {
        Some(j) => serde_json::from_slice(j)
            .map_err(|e| PluginError::BadOutput(format!("create's output is not valid: {e}"))),
        None => Ok(CreateOutput::default()),
    }
}

/// The credential headers a provider's `create` declared: header names,
/// at most 16, kept lowercase.
fn declared_headers(names: Vec<String>) -> Result<Vec<String>, PluginError> {
    if names.len() > 16 {
        return Err(PluginError::BadOutput(format!(
            "create declared {} credential headers (at most 16)",
            names.len()
        )));
    }
    let mut out = Vec::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if warp::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(PluginError::BadOutput(format!(
                "create declared the credential header {name:?}, which is not a header name"
            )));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// The methods a provider's `create` declared, checked.
fn declared_methods(said: Vec<String>) -> Result<Vec<String>, PluginError> {
    let mut methods = Vec::new();
    for m in said {
        let m = m.to_ascii_uppercase();
        if !METHODS.contains(&m.as_str()) {
            return Err(PluginError::BadOutput(format!(
                "create declared the method {m:?}; the host takes {}",
                METHODS.join(", ")
            )));
        }
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.is_empty() {
        methods.push("POST".to_string());
    }
    Ok(methods)
}

// SAFETY: the ABI requires verify/execute/sample to be callable concurrently
// from any thread; create and destroy are only called with exclusive access.
unsafe impl Send for Instance {}
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: ptr came from this plugin's create; no call is in flight
        // because every call holds an Arc to the instance.
        unsafe { (self.plugin.table.destroy)(self.ptr) }
    }
}

fn status_error(status: i32, buf: &mut OutBuf) -> PluginError {
    let msg = buf.message();
    match status {
        ffi::SY_ERR_PANIC => PluginError::Panicked(msg),
        ffi::SY_ERR_CONFIG => PluginError::Config(msg),
        ffi::SY_ERR_UNSUPPORTED => PluginError::Unsupported(msg),
        ffi::SY_ERR_INTERNAL => PluginError::Internal(msg),
        other => PluginError::BadOutput(format!("unexpected status {other}: {msg}")),
    }
}

impl Instance {
    /// Creates an instance from settings (a JSON object). `label` names it in
    /// logs, e.g. `source tight-prod`.
    pub fn create(
        plugin: Arc<Plugin>,
        label: &str,
        settings: &serde_json::Value,
    ) -> Result<Instance, PluginError> {
        let mut host = Box::new(HostBlock {
            sy: SyHost {
                struct_size: std::mem::size_of::<SyHost>(),
                ctx: std::ptr::null_mut(),
                log: host_log,
                abi_major: ffi::ABI_MAJOR,
                abi_minor: ffi::ABI_MINOR,
            },
            plugin: plugin.name.clone(),
            label: label.to_string(),
        });
        host.sy.ctx = &*host as *const HostBlock as *mut c_void;
        let config = serde_json::to_vec(settings).unwrap_or_else(|_| b"{}".to_vec());
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; the host block outlives the instance.
        let status = unsafe {
            (plugin.table.create)(&host.sy, SyBytes::from_slice(&config), &mut sink, &mut ptr)
        };
        if status != ffi::SY_OK {
            return Err(status_error(status, &mut buf));
        }
        if ptr.is_null() {
            return Err(PluginError::BadOutput("create returned no instance".into()));
        }
        let provider = plugin.table.verify.is_some();
        let said = buf
            .json
            .take()
            .filter(|_| (provider && plugin.speaks(5)) || (!provider && plugin.speaks(7)));
        let speaks_6 = plugin.speaks(6);
        let mut instance = Instance {
            plugin,
            ptr,
            methods: Vec::new(),
            credential_headers: Vec::new(),
            batch_is_one_operation: false,
            catalog: Arc::new(Vec::new()),
            _host: host,
        };
        // Dropping the instance on an error destroys it.
        let said = created(said.as_deref())?;
        instance.methods = declared_methods(said.methods)?;
        instance.batch_is_one_operation = said.batch_is_one_operation;
        if speaks_6 {
            instance.credential_headers = declared_headers(said.credential_headers)?;
        }
        if provider && instance.plugin.speaks(8) {
            instance.catalog = Arc::new(declared_catalog(said.catalog)?);
        }
        Ok(instance)
    }

    /// The HTTP methods a provider's source takes.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// The headers a provider's verification reads that carry a credential
    /// (lowercase), as its `create` declared them (ABI 1.6).
    pub fn credential_headers(&self) -> &[String] {
        &self.credential_headers
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The event types a provider declared (ABI 1.8), without the plugin's
    /// prefix; empty when it declared none.
    pub fn catalog(&self) -> &Arc<Vec<EventType>> {
        &self.catalog
    }

    /// Verifies a request. `Ok(Err(_))` is the provider's verdict against the
    /// request; `Err(_)` is the plugin failing.
    pub fn verify(
        &self,
        req: &OwnedRequest,
    ) -> Result<Result<VerifyOutput, Rejection>, PluginError> {
        let Some(verify) = self.plugin.table.verify else {
            return Err(PluginError::Unsupported("verify (not a provider)".into()));
        };
        let headers: Vec<SyHeader> = req
            .headers
            .iter()
            .map(|(n, v)| SyHeader {
                name: SyBytes::from_slice(n.as_bytes()),
                value: SyBytes::from_slice(v),
            })
            .collect();
        let raw = SyRequest {
            struct_size: std::mem::size_of::<SyRequest>(),
            method: SyBytes::from_slice(req.method.as_bytes()),
            path: SyBytes::from_slice(req.path.as_bytes()),
            query: SyBytes::from_slice(req.query.as_bytes()),
            headers: headers.as_ptr(),
            headers_len: headers.len(),
            remote_addr: SyBytes::from_slice(req.remote_addr.as_bytes()),
            body: SyBytes::from_slice(&req.body),
        };
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        // SAFETY: raw and everything it points to live until the call returns.
        let status = unsafe { verify(self.ptr, &raw, &mut sink) };
        if let Some(kind) = RejectKind::from_status(status) {
            return Ok(Err(Rejection::new(kind, buf.message())));
        }
        if status != ffi::SY_OK {
            return Err(status_error(status, &mut buf));
        }
        if buf.too_large {
            return Err(PluginError::BadOutput("events larger than 64 MiB".into()));
        }
        let json = buf
            .json
            .take()
            .ok_or_else(|| PluginError::BadOutput("verify returned OK but no events".into()))?;
        let mut out: VerifyOutput = serde_json::from_slice(&json)
            .map_err(|e| PluginError::BadOutput(format!("events are not valid: {e}")))?;
        if !self.plugin.speaks(1) {
            // `order` came with ABI 1.1: not something a 1.0 plugin says.
            for event in &mut out.events {
                event.order = None;
            }
        }
        if !self.plugin.speaks(5) {
            // Handshakes and answers came with ABI 1.5.
            out.handshake = false;
            out.answer = None;
        }
        // The header's contract: SY_OK carries at least one event. A
        // request with nothing in it is the plugin's to refuse (or record as
        // a handshake); answering 2xx for it would acknowledge what nothing
        // records, so it is the plugin failing (500: the provider retries).
        if out.events.is_empty() {
            return Err(PluginError::BadOutput(if out.handshake {
                "a handshake without an event to record it".into()
            } else {
                "verify said OK with no events (at least one, or a rejection)".into()
            }));
        }
        out.answer = out
            .answer
            .map(checked_answer)
            .transpose()
            .map_err(PluginError::BadOutput)?;
        Ok(Ok(out))
    }

    /// Runs a job (JSON per the ABI) within `timeout`.
    pub fn execute(&self, job_json: &[u8], timeout: Duration) -> Result<ExecOutcome, PluginError> {
        let Some(execute) = self.plugin.table.execute else {
            return Err(PluginError::Unsupported("execute (not an action)".into()));
        };
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        // SAFETY: job_json lives until the call returns.
        let status = unsafe { execute(self.ptr, SyBytes::from_slice(job_json), ms, &mut sink) };
        let status = match status {
            ffi::SY_OK => BatchStatus::Done,
            ffi::SY_FAIL_RETRYABLE => BatchStatus::Retryable,
            ffi::SY_FAIL_PERMANENT => BatchStatus::Permanent,
            other => return Err(status_error(other, &mut buf)),
        };
        let json = buf.json.take();
        // One outcome as a batch would give it, read the same way. Failure
        // details came with ABI 1.1: a 1.0 plugin's output on failure means
        // nothing to the host.
        let outcome = BatchOutcome {
            status,
            message: buf.message(),
            result: json
                .as_deref()
                .filter(|_| status == BatchStatus::Done)
                .and_then(|j| serde_json::from_slice(j).ok()),
            detail: json
                .as_deref()
                .filter(|_| status != BatchStatus::Done && self.plugin.speaks(1))
                .and_then(|j| serde_json::from_slice(j).ok())
                .unwrap_or_default(),
        };
        Ok(ExecOutcome::from(outcome))
    }

    /// Whether the action takes several jobs in one call (ABI 1.3).
    pub fn batches(&self) -> bool {
        self.plugin.table.execute_batch.is_some()
    }

    /// Whether a batch call is one operation at the action's destination
    /// (ABI 1.7, declared by its `create`): it counts once against the
    /// action's concurrency, however many jobs it carries.
    pub fn batch_is_one_operation(&self) -> bool {
        self.batch_is_one_operation
    }

    /// Runs `n` jobs (`jobs_json`, a JSON array) in one call: an outcome
    /// per job, in order, or one error for all of them.
    pub fn execute_batch(
        &self,
        jobs_json: &[u8],
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ExecOutcome>, PluginError> {
        let Some(execute_batch) = self.plugin.table.execute_batch else {
            return Err(PluginError::Unsupported("execute_batch".into()));
        };
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        // SAFETY: jobs_json lives until the call returns.
        let status =
            unsafe { execute_batch(self.ptr, SyBytes::from_slice(jobs_json), ms, &mut sink) };
        match status {
            ffi::SY_OK => {}
            // A failure of the whole call is each job's.
            ffi::SY_FAIL_RETRYABLE => return Ok(vec![ExecOutcome::Retryable(buf.message()); n]),
            ffi::SY_FAIL_PERMANENT => return Ok(vec![ExecOutcome::Permanent(buf.message()); n]),
            other => return Err(status_error(other, &mut buf)),
        }
        let output: switchyard_plugin_api::BatchOutput = buf
            .json
            .as_deref()
            .and_then(|j| serde_json::from_slice(j).ok())
            .ok_or_else(|| PluginError::BadOutput("execute_batch gave no outcomes".into()))?;
        if output.outcomes.len() != n {
            return Err(PluginError::BadOutput(format!(
                "execute_batch gave {} outcomes for {n} jobs",
                output.outcomes.len()
            )));
        }
        Ok(output.outcomes.into_iter().map(ExecOutcome::from).collect())
    }

    /// Asks a provider for a correctly signed sample request.
    pub fn sample(&self, event: &str) -> Result<SampleRequest, PluginError> {
        let Some(sample) = self.plugin.table.sample else {
            return Err(PluginError::Unsupported(format!(
                "plugin {} has no samples",
                self.plugin.name
            )));
        };
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        // SAFETY: event lives until the call returns.
        let status = unsafe { sample(self.ptr, SyBytes::from_slice(event.as_bytes()), &mut sink) };
        if status != ffi::SY_OK {
            return Err(status_error(status, &mut buf));
        }
        let json = buf
            .json
            .take()
            .ok_or_else(|| PluginError::BadOutput("sample returned no request".into()))?;
        serde_json::from_slice(&json)
            .map_err(|e| PluginError::BadOutput(format!("sample is not valid: {e}")))
    }

    /// One call on the provider's subscriptions (ABI 1.4) within `timeout`.
    /// A plugin older than 1.4 manages none: `Unsupported`.
    pub fn subscriptions(
        &self,
        call: &SubscriptionCall,
        timeout: Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        let Some(subscriptions) = self.plugin.table.subscriptions else {
            return Err(SubscriptionError::Unsupported(format!(
                "the {} plugin (ABI {}) does not manage its provider's subscriptions",
                self.plugin.name,
                self.plugin.abi()
            )));
        };
        let call = serde_json::to_vec(call).expect("a call serializes");
        let mut buf = OutBuf::default();
        let mut sink = buf.sink();
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        // SAFETY: call lives until the call returns.
        let status = unsafe { subscriptions(self.ptr, SyBytes::from_slice(&call), ms, &mut sink) };
        match status {
            ffi::SY_OK => {}
            ffi::SY_ERR_UNSUPPORTED => return Err(SubscriptionError::Unsupported(buf.message())),
            ffi::SY_FAIL_RETRYABLE => return Err(SubscriptionError::Retryable(buf.message())),
            ffi::SY_FAIL_PERMANENT => return Err(SubscriptionError::Permanent(buf.message())),
            other => {
                return Err(SubscriptionError::Retryable(
                    status_error(other, &mut buf).to_string(),
                ))
            }
        }
        let output: SubscriptionsOutput = buf
            .json
            .as_deref()
            .and_then(|j| serde_json::from_slice(j).ok())
            .ok_or_else(|| {
                SubscriptionError::Permanent(
                    "the plugin's answer is not {\"subscriptions\": [...]}".into(),
                )
            })?;
        Ok(output.subscriptions)
    }
}
