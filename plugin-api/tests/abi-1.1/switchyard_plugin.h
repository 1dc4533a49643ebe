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
 * Versioning
 *   - The host refuses a library whose abi_major differs from its own.
 *   - A minor version only appends optional (nullable) function pointers at the
 *     end of sy_plugin; the host never reads past struct_size, so an older
 *     plugin simply lacks the newer entries.
 *
 * Memory
 *   - Everything the host passes in (sy_bytes, sy_request, headers) is
 *     BORROWED for the duration of the call only. Copy what you keep.
 *   - Everything a plugin returns goes out through the sy_out callbacks, which
 *     COPY the bytes before returning. The plugin owns its buffers throughout.
 *   - Nothing is freed across the boundary, except the instance through destroy().
 *
 * Threads
 *   - verify(), execute() and sample() may be called concurrently on one
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
#define SWITCHYARD_ABI_MINOR 1
#define SWITCHYARD_ENTRY_SYMBOL "switchyard_plugin_v1"

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
    /* execute(): the job failed. */
    SY_FAIL_RETRYABLE = 20, /* try again later (timeouts, 5xx, refused connections) */
    SY_FAIL_PERMANENT = 21, /* will never succeed as is (bad params, 4xx) */
    /* any entry point */
    SY_ERR_CONFIG = 30,      /* create(): the config is invalid (say which key) */
    SY_ERR_UNSUPPORTED = 31, /* e.g. sample() for an event it has no sample of */
    SY_ERR_INTERNAL = 32,    /* a bug or unexpected state in the plugin */
    SY_ERR_PANIC = 33        /* set by the Rust export macros when a call panicked */
} sy_status;

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
    sy_bytes method;          /* "POST" */
    sy_bytes path;            /* the path after the source's mount point, may be empty */
    sy_bytes query;           /* raw query string without '?', may be empty */
    const sy_header *headers; /* headers_len entries */
    size_t headers_len;
    sy_bytes remote_addr;     /* sender IP address as text ("203.0.113.9", "::1"), may be empty */
    sy_bytes body;            /* the raw body bytes exactly as received */
} sy_request;

/*
 * Output sink for one call. The host owns it; the callbacks copy the bytes.
 * set_json:    the call's result document (see formats below). Last call wins.
 * set_message: a human-readable message (errors, rejection reasons). Never a secret.
 */
typedef struct sy_out {
    void *ctx;
    void (*set_json)(void *ctx, const uint8_t *ptr, size_t len);
    void (*set_message)(void *ctx, const uint8_t *ptr, size_t len);
} sy_out;

/*
 * Host services handed to create(). The pointer stays valid until destroy()
 * returns; a plugin may keep it in its instance.
 */
typedef struct sy_host {
    size_t struct_size;
    void *ctx;
    /* Log a UTF-8 message at a level. Thread-safe. */
    void (*log)(void *ctx, uint32_t level, const uint8_t *ptr, size_t len);
} sy_host;

/*
 * The plugin table. Returned by the entry symbol; must be static.
 *
 * create(host, config_json, out, &instance)
 *     config_json: the source's or action's settings from the config file as a
 *     JSON object, secrets already resolved, without the "plugin" key.
 *     Reject unknown keys with SY_ERR_CONFIG and a message naming the key.
 * destroy(instance)
 * verify(instance, request, out)                         [providers; else NULL]
 *     On SY_OK: set_json({"events":[EVENT, ...]}) with at least one EVENT:
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
 *     On SY_REJECT_*: set_message(reason). The reason is logged, never sent back.
 * execute(instance, job_json, timeout_ms, out)           [actions; else NULL]
 *     job_json: {"id", "idempotency_key", "action", "rule", "attempt",
 *                "params": {...}, "event": {ENVELOPE}}
 *     Must return within timeout_ms. SY_OK, SY_FAIL_RETRYABLE or
 *     SY_FAIL_PERMANENT, with a message; on SY_OK set_json may carry a result
 *     object (recorded with the attempt). From ABI 1.1, on a failure set_json
 *     may carry {"retry_after_ms": N} (retry no sooner: a Retry-After) or
 *     {"disable": true} (the target is gone, HTTP 410: the host pauses the
 *     action until it is enabled again).
 * sample(instance, event_name, out)                      [optional, providers]
 *     A correctly signed sample request for a named event, as
 *       {"method": "POST", "query": "", "headers": [["name","value"], ...],
 *        "body": "<utf-8 text>"}
 *     SY_ERR_UNSUPPORTED (with the list of known names in the message) for
 *     an unknown event name.
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
    /* ABI 1.1 and later append here. */
} sy_plugin;

/* The one exported symbol. */
typedef const sy_plugin *(*sy_entry_fn)(void);
const sy_plugin *switchyard_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_PLUGIN_H */
