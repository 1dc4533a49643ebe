/*
 * switchyard_plugin.h — the Switchyard plugin ABI, version 1.
 *
 * This header is the source of truth for the ABI. The Rust mirror in
 * plugin-api/src/ffi.rs follows it field for field, and the test suite builds
 * a plugin written in C against it (plugins/c-example).
 *
 * A plugin is a shared library that exports one symbol, SWITCHYARD_ENTRY_SYMBOL,
 * returning a pointer to a static sy_plugin table.
 *
 * Versioning (stable across every 1.x)
 *   - The host refuses a library whose abi_major differs from its own.
 *   - A minor version only appends: optional (nullable) function pointers at
 *     the end of sy_plugin, fields at the end of sy_host, sy_out and
 *     sy_request. Nothing is ever moved, resized or removed within a major;
 *     the _Static_asserts at the end of this header hold the layout.
 *   - Every struct that can grow says how large it is: struct_size (sy_out
 *     from 1.2, see there). Whoever reads one reads only the fields its
 *     struct_size covers (SY_HAS) and treats the rest as absent.
 *   - The host reads a plugin's table up to its struct_size: an entry past
 *     it (a plugin built for an older minor) is absent; entries from a newer
 *     minor than the host's are not known to it, and ignored. The smallest
 *     table is the 1.0 one, SY_PLUGIN_V1_0_SIZE bytes.
 *   - The host reads abi_minor and uses only what that minor defines (e.g.
 *     a 1.0 plugin's failure output is not read as 1.1 failure details).
 *   - A plugin learns the host's version from sy_host (abi_minor, from 1.2;
 *     a host that does not say is 1.1 or older).
 *
 * Memory
 *   - Everything the host passes in (sy_bytes, sy_request, headers) is
 *     BORROWED for the duration of the call only. Copy what you keep.
 *   - Everything a plugin returns goes out through the sy_out callbacks, which
 *     COPY the bytes before returning. The plugin owns its buffers throughout.
 *   - An sy_out (the struct and its ctx) is valid only during the call that
 *     received it, and only on that call's thread: never keep the pointer,
 *     never call it from another thread or after returning.
 *   - Nothing is freed across the boundary, except the instance through destroy().
 *
 * Threads
 *   - verify(), execute(), execute_batch(), sample() and subscriptions() may be called concurrently on one
 *     instance from several host threads. They are called from a blocking
 *     pool, never from the host's async runtime, and may block (do I/O).
 *   - create() and destroy() are never concurrent with other calls on the
 *     same instance.
 *
 * Data
 *   - Configs, events and jobs cross as UTF-8 JSON bytes (formats below).
 *   - A plugin never prints: it logs through sy_host.log.
 */
#ifndef SWITCHYARD_PLUGIN_H
#define SWITCHYARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SWITCHYARD_ABI_MAJOR 1
#define SWITCHYARD_ABI_MINOR 8
#define SWITCHYARD_ENTRY_SYMBOL "switchyard_plugin_v1"

/*
 * Whether a struct that starts with struct_size (as its writer knew it)
 * holds a field: SY_HAS(host, sy_host, abi_minor).
 */
#define SY_HAS(ptr, type, field) \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* What a plugin is for. */
typedef enum sy_role {
    SY_ROLE_PROVIDER = 1, /* verifies and parses incoming webhooks */
    SY_ROLE_ACTION = 2    /* carries out jobs decided by rules */
} sy_role;

/*
 * Status codes returned by every entry point.
 * On anything but SY_OK the plugin should set a message through sy_out.
 */
typedef enum sy_status {
    SY_OK = 0,
    /* verify(): the request is refused. Answered 401 unless said otherwise. */
    SY_REJECT_UNAUTHENTICATED = 10, /* missing or bad signature/token: 401 */
    SY_REJECT_EXPIRED = 11,         /* signature timestamp outside tolerance: 401 */
    SY_REJECT_MALFORMED = 12,       /* authentic but unparseable: 400 */
    SY_REJECT_FORBIDDEN = 13,       /* sender address not allowed: 403 */
    SY_REJECT_DECRYPTION = 14,      /* could not be decrypted (tag, key or IV wrong): 401 */
    SY_RETRY_LATER = 15,            /* ABI 1.6: not now (a key to fetch is unreachable):
                                       503 with Retry-After: 30, so the provider retries */
    /* execute(): the job failed. */
    SY_FAIL_RETRYABLE = 20, /* try again later (timeouts, 5xx, refused connections) */
    SY_FAIL_PERMANENT = 21, /* will never succeed as is (bad params, 4xx) */
    /* any entry point */
    SY_ERR_CONFIG = 30,      /* create(): the config is invalid (say which key) */
    SY_ERR_UNSUPPORTED = 31, /* e.g. sample() for an event it has no sample of */
    SY_ERR_INTERNAL = 32,    /* a bug or unexpected state in the plugin */
    SY_ERR_PANIC = 33        /* set by the Rust export macros when a call panicked */
} sy_status;

/*
 * What the host enforces (a plugin that passes these is refused for the
 * call, never trusted past them):
 *   - Messages (set_message) and log lines (sy_host.log) are cut at 8 KiB;
 *     invalid UTF-8 is replaced.
 *   - JSON output (set_json) is at most 64 MiB a call; more is bad output.
 *   - A plugin table's struct_size is at least SY_PLUGIN_V1_0_SIZE and at
 *     most 64 KiB; otherwise the library is refused at load.
 *   - A library whose abi_major is not SWITCHYARD_ABI_MAJOR is refused at
 *     load: rebuild against this header.
 *   - verify() statuses, as the sender is answered:
 *       SY_OK with at least one event   200 {"accepted": [...]} (or the
 *                                        plugin's "answer", ABI 1.5)
 *       SY_OK with no event, or output  500, logged as the plugin's failure
 *         that is not the format below   (the sender retries)
 *       SY_REJECT_UNAUTHENTICATED,      401 {"error": "unauthorized"}
 *         _EXPIRED, _DECRYPTION
 *       SY_REJECT_MALFORMED             400 {"error": "malformed"}
 *       SY_REJECT_FORBIDDEN             403 {"error": "forbidden"}
 *       SY_RETRY_LATER (ABI 1.6)        503 {"error": "retry_later"},
 *                                        Retry-After: 30
 *       SY_ERR_PANIC, SY_ERR_INTERNAL,  500 {"error": "internal error"}
 *         any other status
 *       past plugin_timeout_ms, or      503 with Retry-After
 *         every call slot busy
 *     The reason (set_message) is logged, never sent back.
 *   - An "answer" (ABI 1.5): status 200-299 only; a 204 has no body; the
 *     body is at most 64 KiB; at most 16 headers, each a valid name and
 *     value, none of connection, content-length, content-type (say
 *     content_type instead), transfer-encoding, te, trailer, upgrade,
 *     keep-alive, proxy-connection, host, date, server, cache-control,
 *     x-content-type-options: the host sets cache-control: no-store and
 *     x-content-type-options: nosniff itself, and an answer that tries to
 *     set one of these is refused (500), not overridden.
 */

/* Log levels for sy_host.log. */
typedef enum sy_log_level {
    SY_LOG_ERROR = 1,
    SY_LOG_WARN = 2,
    SY_LOG_INFO = 3,
    SY_LOG_DEBUG = 4,
    SY_LOG_TRACE = 5
} sy_log_level;

/* A borrowed byte slice. ptr may be NULL when len is 0. Not NUL-terminated. */
typedef struct sy_bytes {
    const uint8_t *ptr;
    size_t len;
} sy_bytes;

/* One HTTP header, name in lower case, value as received. Both borrowed. */
typedef struct sy_header {
    sy_bytes name;
    sy_bytes value;
} sy_header;

/* An incoming webhook request, borrowed for the duration of verify(). */
typedef struct sy_request {
    size_t struct_size;       /* sizeof(sy_request) as the host knows it */
    sy_bytes method;          /* "POST"; from 1.5 any method create() declared ("GET", "OPTIONS") */
    sy_bytes path;            /* the path after the source's mount point, may be empty */
    sy_bytes query;           /* raw query string without '?', may be empty */
    const sy_header *headers; /* headers_len entries */
    size_t headers_len;
    sy_bytes remote_addr;     /* sender IP address as text ("203.0.113.9", "::1"), may be empty */
    sy_bytes body;            /* the raw body bytes exactly as received */
} sy_request;

/*
 * Output sink for one call. The host owns it; the callbacks copy the bytes.
 * Valid only during the call that received it, on that thread (see Memory).
 * set_json:    the call's result document (see formats below). Last call wins.
 * set_message: a human-readable message (errors, rejection reasons). Never a secret.
 * struct_size: (ABI 1.2) sizeof(sy_out) as the host knows it. It comes last
 *              because 1.0 put ctx first; read it only from a host whose
 *              abi_minor (sy_host) is 2 or more, then SY_HAS as usual.
 */
typedef struct sy_out {
    void *ctx;
    void (*set_json)(void *ctx, const uint8_t *ptr, size_t len);
    void (*set_message)(void *ctx, const uint8_t *ptr, size_t len);
    /* ABI 1.2 */
    size_t struct_size;
} sy_out;

/*
 * Host services handed to create(). The pointer stays valid until destroy()
 * returns; a plugin may keep it in its instance.
 * abi_major, abi_minor: (ABI 1.2) the host's version, so a plugin knows what
 *     it honours. Absent (SY_HAS false) from a 1.1 or older host.
 */
typedef struct sy_host {
    size_t struct_size; /* sizeof(sy_host) as the host knows it */
    void *ctx;
    /* Log a UTF-8 message at a level. Thread-safe. */
    void (*log)(void *ctx, uint32_t level, const uint8_t *ptr, size_t len);
    /* ABI 1.2 */
    uint16_t abi_major;
    uint16_t abi_minor;
} sy_host;

/*
 * The plugin table. Returned by the entry symbol; must be static.
 *
 * create(host, config_json, out, &instance)
 *     config_json: the source's or action's settings from the config file as a
 *     JSON object, secrets already resolved, without the "plugin" key.
 *     Reject unknown keys with SY_ERR_CONFIG and a message naming the key.
 *     From ABI 1.5 a provider may set_json({"methods": ["GET", "POST"]}) on
 *     SY_OK: the HTTP methods its source takes (POST alone when it does
 *     not say; any other is answered 405 with Allow). The host takes GET,
 *     POST, PUT, PATCH and OPTIONS.
 *     From ABI 1.6 that document may also say
 *     "credential_headers": ["Tight-Verification", ...]: the headers its
 *     verify reads that carry a credential (a token, a signature); the host
 *     replaces their values whole wherever a request is kept or shown (a
 *     refused delivery's old token too). At most 16 header names.
 *     From ABI 1.7 an action with execute_batch may set_json(
 *     {"batch_is_one_operation": true}) on SY_OK: a batch is one operation
 *     at its destination (the file action: one write and one sync for all
 *     its lines), so the host counts a call as one against the action's
 *     concurrency and may hand it more jobs than that. Otherwise each job
 *     of a batch counts as one in flight (the http action sends a batch's
 *     requests at once), and a call takes at most `concurrency` jobs.
 *     From ABI 1.8 a provider's document may say "catalog": [TYPE, ...],
 *     the event types it sends (none said: an empty catalog, nothing is
 *     checked and no type is unknown):
 *       {"type": "invoiceViewed",      the provider's own name, as its
 *                                      events carry it (no plugin prefix)
 *        "description": "...",         optional, one sentence
 *        "schema": {...}}              a JSON Schema (2020-12 unless its
 *                                      $schema says) of the event's "data"
 *     The host checks each stored event against its type's schema, off
 *     the acknowledgement's path, and records what does not match as
 *     drift: a required property missing, a value of another JSON type, a
 *     property a closed object ("additionalProperties": false) does not
 *     declare, a type the catalog does not list. Close an object only
 *     where the documentation lists all of it. At most 4096 types, each
 *     named once, a name at most 200 bytes; a schema that does not compile
 *     refuses the config (at start, at a reload, in `switchyard check`),
 *     naming the source and the type. Only $refs within the schema are
 *     followed.
 * destroy(instance)
 * verify(instance, request, out)                         [providers; else NULL]
 *     On SY_OK: set_json({"events":[EVENT, ...]}) with at least one EVENT
 *     (a request that carries none is refused, or recorded as a handshake;
 *     SY_OK with an empty list fails the request, 500):
 *       {"type": "invoiceViewed",      provider's own event name, required;
 *                                      the host prefixes "<plugin name>."
 *        "subject": "inv_123",         optional
 *        "time": "2025-04-01T11:31:04.1Z",  optional, RFC 3339
 *        "dedup_key": "...",           optional, stable across the provider's retries
 *        "extensions": {...},          optional, normalized attributes
 *        "order": {"key": "product:42", "version": 7},
 *                                      optional (ABI 1.1): the host drops the
 *                                      event (2xx, not routed) unless version
 *                                      is newer than the last it accepted for key
 *        "data": <any JSON>}           the payload
 *     From ABI 1.5 the document may also say (read from a plugin of 1.5 or
 *     later; a plugin learns the host's minor from sy_host):
 *       "handshake": true              the request is the provider checking
 *                                      the endpoint (a challenge), not an
 *                                      event: its events are stored as
 *                                      handshakes and never routed
 *       "answer": {"status": 200,      what to answer once the request is
 *                  "content_type": "text/plain",   stored, instead of the
 *                  "body": "<utf-8 text>",         host's {"accepted": …}:
 *                  "headers": [["name", "value"], ...]}
 *                                      status 200-299, body at most 64 KiB;
 *                                      no header about the connection or the
 *                                      body's framing; the host adds
 *                                      cache-control: no-store and
 *                                      x-content-type-options: nosniff. An
 *                                      answer the host refuses fails the
 *                                      request (500), as bad output does.
 *     On SY_REJECT_*: set_message(reason). The reason is logged, never sent back.
 *     On SY_RETRY_LATER (ABI 1.6; a plugin should return it only to a host
 *     whose sy_host abi_minor is 6 or more, an older one answers 500):
 *     set_message(why). Nothing is stored; the provider retries.
 *     See "What the host enforces" above for every status's answer.
 * execute(instance, job_json, timeout_ms, out)           [actions; else NULL]
 *     job_json: {"id", "idempotency_key", "action", "rule", "attempt",
 *                "params": {...}, "event": {ENVELOPE},
 *                "trace": {"traceparent": "00-…"}}   (when the host traces)
 *     "trace" is the attempt's W3C trace context: an action that makes a
 *     request sends it on as `traceparent`; a plugin that does not know it
 *     ignores it (an added key, as JSON's keys may be).
 *     Must return within timeout_ms. SY_OK, SY_FAIL_RETRYABLE or
 *     SY_FAIL_PERMANENT, with a message; on SY_OK set_json may carry a result
 *     object (recorded with the attempt). From ABI 1.1, on a failure set_json
 *     may carry {"retry_after_ms": N} (retry no sooner: a Retry-After; the
 *     target refused for load, as HTTP 429 or 503 with Retry-After do: the
 *     host slows the whole action; 0 when it refused without a time) or
 *     {"disable": true} (the target is gone, HTTP 410: the host pauses the
 *     action until it is enabled again).
 * execute_batch(instance, jobs_json, timeout_ms, out)    [optional, actions; ABI 1.3]
 *     For an action that does several jobs at once more cheaply than one by
 *     one (one write and one fsync for many lines, one connection for many
 *     requests). The host then hands it every job of the action that is
 *     ready, in one call on one thread, instead of one call per job; jobs
 *     that must wait for another (an ordering key) still come one by one
 *     through execute(). An action leaves it NULL to get one call per job.
 *     jobs_json: [JOB, ...], each as execute() receives it, in order.
 *     All of them must be done within timeout_ms. On SY_OK:
 *       set_json({"outcomes": [OUTCOME, ...]}), one per job, in order:
 *       {"status": "done" | "retryable" | "permanent",
 *        "message": "...",            for a failure
 *        "result": {...},             optional, on done (as execute's)
 *        "retry_after_ms": N,         optional, on retryable
 *        "disable": true}             optional, on permanent (HTTP 410)
 *     Any other status, or a document without one outcome per job, counts
 *     for every job of the call (SY_ERR_PANIC: each may be retried).
 * sample(instance, event_name, out)                      [optional, providers]
 *     A correctly signed sample request for a named event, as
 *       {"method": "POST", "query": "", "headers": [["name","value"], ...],
 *        "body": "<utf-8 text>"}
 *     SY_ERR_UNSUPPORTED (with the list of known names in the message) for
 *     an unknown event name.
 * subscriptions(instance, call_json, timeout_ms, out)    [optional, providers; ABI 1.4]
 *     The provider's side of the webhooks: what its API holds, and changes
 *     to it. The host compares what the config declares with what the
 *     provider holds and asks for each step; the plugin does the step
 *     against its provider's API (blocking I/O, within timeout_ms).
 *     call_json, one of:
 *       {"op": "desired", "target_url": URL}  what the source's settings
 *                                       declare, for webhooks posted to URL
 *                                       (no I/O)
 *       {"op": "list"}                  what the provider holds
 *       {"op": "create", "subscription": SUB}   answers SUB with its id
 *       {"op": "delete", "id": ID}
 *       {"op": "enable", "id": ID}      switch a "failing" one on again
 *     On SY_OK: set_json({"subscriptions": [SUB, ...]}), SUB being
 *       {"id": "...",                   the provider's; not on desired ones
 *        "events": ["..."],             the provider's event names, sorted
 *        "target_url": "...",           where it posts (may hold credentials)
 *        "state": "active" | "failing" | "disabled",
 *                                       failing = off after failed deliveries,
 *                                       may be enabled; disabled = off for
 *                                       another reason, left alone
 *        "status": "...",               optional, the provider's own word
 *        "name": "...",                 optional
 *        "spec": {...},                 optional, what else must match
 *                                       (compared whole; never a secret)
 *        "revision": "..."}             optional, changes with each change
 *     SY_ERR_UNSUPPORTED with a message saying how this provider's webhooks
 *     are made instead (by email, in the provider's UI) or that the source
 *     declares none; SY_FAIL_RETRYABLE when the API did not answer or
 *     answered 5xx/429; SY_FAIL_PERMANENT when it refused (the message
 *     says why, never with a credential).
 */
typedef struct sy_plugin {
    size_t struct_size; /* sizeof(sy_plugin) as the plugin was built */
    uint16_t abi_major; /* SWITCHYARD_ABI_MAJOR */
    uint16_t abi_minor; /* SWITCHYARD_ABI_MINOR */
    uint32_t role;      /* sy_role */
    const char *name;    /* NUL-terminated, static: "tight", "file", ... */
    const char *version; /* NUL-terminated, static: "0.1.0" */

    int32_t (*create)(const sy_host *host, sy_bytes config_json, sy_out *out, void **instance);
    void (*destroy)(void *instance);
    int32_t (*verify)(void *instance, const sy_request *request, sy_out *out);
    int32_t (*execute)(void *instance, sy_bytes job_json, uint64_t timeout_ms, sy_out *out);
    int32_t (*sample)(void *instance, sy_bytes event_name, sy_out *out);
    /* ABI 1.3 */
    int32_t (*execute_batch)(void *instance, sy_bytes jobs_json, uint64_t timeout_ms, sy_out *out);
    /* ABI 1.4 */
    int32_t (*subscriptions)(void *instance, sy_bytes call_json, uint64_t timeout_ms, sy_out *out);
    /* Later minors append optional entries here. */
} sy_plugin;

/* The size of the 1.0 table, for ever: the smallest table a host accepts. */
#define SY_PLUGIN_V1_0_SIZE (8 + 8 * sizeof(void *))

/*
 * The layout, held by the compiler: these sizes and offsets are the ABI.
 * They are written in terms of the pointer size (4 or 8 bytes), so they
 * hold on every platform with ordinary C alignment. A change that breaks one
 * breaks every plugin built before it.
 */
#if defined(__cplusplus)
#define SY_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define SY_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
#define SY_P sizeof(void *)
SY_ASSERT(sizeof(size_t) == SY_P, "size_t is pointer-sized");
SY_ASSERT(sizeof(sy_bytes) == 2 * SY_P, "sy_bytes");
SY_ASSERT(offsetof(sy_bytes, len) == SY_P, "sy_bytes.len");
SY_ASSERT(sizeof(sy_header) == 4 * SY_P, "sy_header");
SY_ASSERT(offsetof(sy_header, value) == 2 * SY_P, "sy_header.value");
SY_ASSERT(offsetof(sy_request, method) == SY_P, "sy_request.method");
SY_ASSERT(offsetof(sy_request, path) == 3 * SY_P, "sy_request.path");
SY_ASSERT(offsetof(sy_request, query) == 5 * SY_P, "sy_request.query");
SY_ASSERT(offsetof(sy_request, headers) == 7 * SY_P, "sy_request.headers");
SY_ASSERT(offsetof(sy_request, headers_len) == 8 * SY_P, "sy_request.headers_len");
SY_ASSERT(offsetof(sy_request, remote_addr) == 9 * SY_P, "sy_request.remote_addr");
SY_ASSERT(offsetof(sy_request, body) == 11 * SY_P, "sy_request.body");
SY_ASSERT(sizeof(sy_request) == 13 * SY_P, "sy_request");
SY_ASSERT(offsetof(sy_out, set_json) == SY_P, "sy_out.set_json");
SY_ASSERT(offsetof(sy_out, set_message) == 2 * SY_P, "sy_out.set_message");
SY_ASSERT(offsetof(sy_out, struct_size) == 3 * SY_P, "sy_out.struct_size (1.2)");
SY_ASSERT(sizeof(sy_out) == 4 * SY_P, "sy_out");
SY_ASSERT(offsetof(sy_host, ctx) == SY_P, "sy_host.ctx");
SY_ASSERT(offsetof(sy_host, log) == 2 * SY_P, "sy_host.log");
SY_ASSERT(offsetof(sy_host, abi_major) == 3 * SY_P, "sy_host.abi_major (1.2)");
SY_ASSERT(offsetof(sy_host, abi_minor) == 3 * SY_P + 2, "sy_host.abi_minor (1.2)");
SY_ASSERT(sizeof(sy_host) == 4 * SY_P, "sy_host");
SY_ASSERT(offsetof(sy_plugin, abi_major) == SY_P, "sy_plugin.abi_major");
SY_ASSERT(offsetof(sy_plugin, abi_minor) == SY_P + 2, "sy_plugin.abi_minor");
SY_ASSERT(offsetof(sy_plugin, role) == SY_P + 4, "sy_plugin.role");
SY_ASSERT(offsetof(sy_plugin, name) == SY_P + 8, "sy_plugin.name");
SY_ASSERT(offsetof(sy_plugin, version) == 2 * SY_P + 8, "sy_plugin.version");
SY_ASSERT(offsetof(sy_plugin, create) == 3 * SY_P + 8, "sy_plugin.create");
SY_ASSERT(offsetof(sy_plugin, destroy) == 4 * SY_P + 8, "sy_plugin.destroy");
SY_ASSERT(offsetof(sy_plugin, verify) == 5 * SY_P + 8, "sy_plugin.verify");
SY_ASSERT(offsetof(sy_plugin, execute) == 6 * SY_P + 8, "sy_plugin.execute");
SY_ASSERT(offsetof(sy_plugin, sample) == 7 * SY_P + 8, "sy_plugin.sample");
SY_ASSERT(offsetof(sy_plugin, sample) + SY_P == SY_PLUGIN_V1_0_SIZE, "the 1.0 table ends with sample");
SY_ASSERT(offsetof(sy_plugin, execute_batch) == SY_PLUGIN_V1_0_SIZE, "sy_plugin.execute_batch (1.3)");
SY_ASSERT(offsetof(sy_plugin, subscriptions) == SY_PLUGIN_V1_0_SIZE + SY_P, "sy_plugin.subscriptions (1.4)");
SY_ASSERT(sizeof(sy_plugin) == SY_PLUGIN_V1_0_SIZE + 2 * SY_P, "sy_plugin as of 1.4");
#undef SY_P

/* The one exported symbol. */
typedef const sy_plugin *(*sy_entry_fn)(void);
const sy_plugin *switchyard_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_PLUGIN_H */
