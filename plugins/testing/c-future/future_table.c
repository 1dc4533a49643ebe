/*
 * c-future: a test provider built as if for a newer minor of ABI 1 than the
 * host's: its table claims abi_minor SWITCHYARD_ABI_MINOR + 1 and carries an
 * entry point after `sample` that no host knows yet. A host must load it,
 * read only the entries it knows, and call them as usual.
 *
 * It accepts a request with the header `x-probe: yes` and answers one event
 * of type `probe` whose data says what the host told it: the host's ABI
 * minor (sy_host, from 1.2; -1 when the host does not say) and the size of
 * the call's sy_out (from 1.2; -1 when absent). `x-probe: later` is
 * answered SY_RETRY_LATER (ABI 1.6: the key it would need is unreachable);
 * `x-probe: empty` SY_OK with no event, which the host refuses as the
 * plugin's failure. Settings: none.
 */
#include <stdio.h>
#include <string.h>

#include "switchyard_plugin.h"

typedef struct future_table {
    sy_plugin known;
    /* Appended by the imagined next minor. */
    int32_t (*not_yet_invented)(void *instance, sy_bytes input, sy_out *out);
} future_table;

static const sy_host *g_host;

static void say(sy_out *out, const char *msg) {
    out->set_message(out->ctx, (const uint8_t *)msg, strlen(msg));
}

static int host_minor(void) {
    return g_host && SY_HAS(g_host, sy_host, abi_minor) ? (int)g_host->abi_minor : -1;
}

static int32_t create(const sy_host *host, sy_bytes config_json, sy_out *out, void **instance) {
    size_t i = 0;
    while (i < config_json.len && config_json.ptr[i] != '{') i++;
    for (i++; i < config_json.len && config_json.ptr[i] != '}'; i++) {
        if (config_json.ptr[i] != ' ') { say(out, "c-future settings: none are accepted"); return SY_ERR_CONFIG; }
    }
    g_host = host;
    *instance = (void *)&g_host;
    return SY_OK;
}

static void destroy(void *instance) { (void)instance; }

static int32_t verify(void *instance, const sy_request *req, sy_out *out) {
    (void)instance;
    int probed = 0;
    for (size_t i = 0; i < req->headers_len; i++) {
        const sy_header *h = &req->headers[i];
        if (!(h->name.len == 7 && memcmp(h->name.ptr, "x-probe", 7) == 0)) continue;
        if (h->value.len == 3 && memcmp(h->value.ptr, "yes", 3) == 0) probed = 1;
        if (h->value.len == 5 && memcmp(h->value.ptr, "later", 5) == 0) {
            say(out, "the key server did not answer");
            return SY_RETRY_LATER;
        }
        if (h->value.len == 5 && memcmp(h->value.ptr, "empty", 5) == 0) {
            out->set_json(out->ctx, (const uint8_t *)"{\"events\":[]}", 13);
            return SY_OK;
        }
    }
    if (!probed) { say(out, "no x-probe: yes"); return SY_REJECT_UNAUTHENTICATED; }
    int minor = host_minor();
    long out_size = minor >= 2 && SY_HAS(out, sy_out, struct_size) ? (long)out->struct_size : -1;
    char json[160];
    int n = snprintf(json, sizeof json,
                     "{\"events\":[{\"type\":\"probe\",\"data\":{\"host_abi_minor\":%d,\"out_struct_size\":%ld}}]}",
                     minor, out_size);
    out->set_json(out->ctx, (const uint8_t *)json, (size_t)n);
    return SY_OK;
}

static int32_t not_yet_invented(void *instance, sy_bytes input, sy_out *out) {
    (void)instance; (void)input; (void)out;
    return SY_ERR_INTERNAL;
}

static const future_table TABLE = {
    .known = {
        .struct_size = sizeof(future_table),
        .abi_major = SWITCHYARD_ABI_MAJOR,
        .abi_minor = SWITCHYARD_ABI_MINOR + 1,
        .role = SY_ROLE_PROVIDER,
        .name = "c-future",
        .version = "9.9.9",
        .create = create,
        .destroy = destroy,
        .verify = verify,
        .execute = NULL,
        .sample = NULL,
    },
    .not_yet_invented = not_yet_invented,
};

const sy_plugin *switchyard_plugin_v1(void) { return &TABLE.known; }
