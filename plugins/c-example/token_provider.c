/*
 * c-example: a Switchyard provider plugin written in C against
 * plugin-api/include/switchyard_plugin.h.
 *
 * It accepts a request when its X-Switchyard-Token header equals the
 * configured `token` (compared in constant time), and turns a JSON object
 * body into one event of type `message` (`c-example.message` once the host
 * prefixes it). Settings: {"token": "..."}; any other key is refused.
 *
 * Build: make   (or: cc -shared -fPIC -I../../plugin-api/include -o libswitchyard_c_example.so token_provider.c;
 *               with the Debian package's header: -I/usr/include/switchyard)
 *
 * Built against the 1.3 header its table is one entry (execute_batch, NULL
 * for a provider) past the ABI 1.0 size. It builds against the 1.1 and 1.2
 * headers too (plugin-api/tests/abi-1.1, abi-1.2), which is how the tests
 * show that a plugin built before a minor bump keeps working.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard_plugin.h"

#define HEADER "x-switchyard-token"

typedef struct instance {
    const sy_host *host;
    char *token;
    size_t token_len;
} instance;

static void say(sy_out *out, const char *msg) {
    if (out && out->set_message) out->set_message(out->ctx, (const uint8_t *)msg, strlen(msg));
}

static void host_log(const sy_host *host, uint32_t level, const char *msg) {
    if (host && host->log) host->log(host->ctx, level, (const uint8_t *)msg, strlen(msg));
}

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/*
 * A deliberately small reader for the one config shape this plugin takes:
 * {"token":"<string without escapes>"} with optional white space.
 */
static int parse_config(sy_bytes json, char **token, size_t *token_len, sy_out *out) {
    const uint8_t *p = json.ptr, *end = json.ptr + json.len;
    static const char key[] = "\"token\"";
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{') { say(out, "c-example settings: expected a JSON object"); return 0; }
    p = skip_ws(p, end);
    if (p < end && *p == '}') { say(out, "c-example settings: missing key `token`"); return 0; }
    if ((size_t)(end - p) < sizeof(key) - 1 || memcmp(p, key, sizeof(key) - 1) != 0) {
        say(out, "c-example settings: unknown key (only `token` is accepted)");
        return 0;
    }
    p = skip_ws(p + sizeof(key) - 1, end);
    if (p >= end || *p++ != ':') { say(out, "c-example settings: expected ':' after token"); return 0; }
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"') { say(out, "c-example settings: token must be a string"); return 0; }
    const uint8_t *start = p;
    while (p < end && *p != '"' && *p != '\\') p++;
    if (p >= end || *p != '"') { say(out, "c-example settings: token must be a plain string"); return 0; }
    size_t len = (size_t)(p - start);
    p = skip_ws(p + 1, end);
    if (p >= end || *p != '}') { say(out, "c-example settings: unknown key (only `token` is accepted)"); return 0; }
    if (len == 0) { say(out, "c-example settings: token is empty"); return 0; }
    *token = malloc(len);
    if (!*token) { say(out, "c-example: out of memory"); return 0; }
    memcpy(*token, start, len);
    *token_len = len;
    return 1;
}

static int32_t create(const sy_host *host, sy_bytes config_json, sy_out *out, void **result) {
    instance *inst = calloc(1, sizeof(instance));
    if (!inst) { say(out, "c-example: out of memory"); return SY_ERR_INTERNAL; }
    if (!parse_config(config_json, &inst->token, &inst->token_len, out)) {
        free(inst);
        return SY_ERR_CONFIG;
    }
    inst->host = host;
#if SWITCHYARD_ABI_MINOR >= 2
    /* From ABI 1.2 the host says its version; an older host does not, and
     * SY_HAS is false for it. (Built against an older header, this part is
     * left out: the plugin still loads and works in a newer host.) */
    if (host && SY_HAS(host, sy_host, abi_minor)) {
        char line[80];
        snprintf(line, sizeof line, "c-example instance created (host ABI %u.%u)",
                 (unsigned)host->abi_major, (unsigned)host->abi_minor);
        host_log(host, SY_LOG_INFO, line);
    } else
#endif
        host_log(host, SY_LOG_INFO, "c-example instance created");
    *result = inst;
    return SY_OK;
}

static void destroy(void *p) {
    instance *inst = p;
    if (!inst) return;
    free(inst->token);
    free(inst);
}

/* Constant-time comparison: the time taken does not depend on where they differ. */
static int same(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    if (a_len != b_len) return 0;
    uint8_t diff = 0;
    for (size_t i = 0; i < a_len; i++) diff |= a[i] ^ b[i];
    return diff == 0;
}

static int32_t verify(void *p, const sy_request *req, sy_out *out) {
    const instance *inst = p;
    const sy_bytes *token = NULL;
    for (size_t i = 0; i < req->headers_len; i++) {
        const sy_header *h = &req->headers[i];
        if (h->name.len == strlen(HEADER) && memcmp(h->name.ptr, HEADER, h->name.len) == 0) {
            token = &h->value;
            break;
        }
    }
    if (!token) { say(out, "missing X-Switchyard-Token header"); return SY_REJECT_UNAUTHENTICATED; }
    if (!same(token->ptr, token->len, (const uint8_t *)inst->token, inst->token_len)) {
        say(out, "X-Switchyard-Token does not match");
        return SY_REJECT_UNAUTHENTICATED;
    }
    /* The body must look like a JSON object; the host validates the rest. */
    const uint8_t *b = skip_ws(req->body.ptr, req->body.ptr + req->body.len);
    const uint8_t *e = req->body.ptr + req->body.len;
    while (e > b && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t')) e--;
    if (b >= e || *b != '{' || e[-1] != '}') { say(out, "body is not a JSON object"); return SY_REJECT_MALFORMED; }

    static const char head[] = "{\"events\":[{\"type\":\"message\",\"data\":";
    static const char tail[] = "}]}";
    size_t body_len = (size_t)(e - b);
    size_t len = sizeof(head) - 1 + body_len + sizeof(tail) - 1;
    uint8_t *json = malloc(len);
    if (!json) { say(out, "out of memory"); return SY_ERR_INTERNAL; }
    memcpy(json, head, sizeof(head) - 1);
    memcpy(json + sizeof(head) - 1, b, body_len);
    memcpy(json + sizeof(head) - 1 + body_len, tail, sizeof(tail) - 1);
    out->set_json(out->ctx, json, len); /* the host copies it */
    free(json);
    return SY_OK;
}

static const sy_plugin TABLE = {
    .struct_size = sizeof(sy_plugin),
    .abi_major = SWITCHYARD_ABI_MAJOR,
    .abi_minor = SWITCHYARD_ABI_MINOR,
    .role = SY_ROLE_PROVIDER,
    .name = "c-example",
    .version = "0.1.0",
    .create = create,
    .destroy = destroy,
    .verify = verify,
    .execute = NULL,
    .sample = NULL,
};

const sy_plugin *switchyard_plugin_v1(void) { return &TABLE; }
