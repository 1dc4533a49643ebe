/*
 * Prints every size and offset of the ABI as the C compiler lays it out,
 * one "name value" line each; tests/layout.rs compares them with the Rust
 * mirror (src/ffi.rs).
 */
#include <stdio.h>

#include "switchyard_plugin.h"

#define SIZE(t) printf("size %s %zu\n", #t, sizeof(t))
#define AT(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(t, f))

int main(void) {
    SIZE(sy_bytes);
    AT(sy_bytes, ptr);
    AT(sy_bytes, len);
    SIZE(sy_header);
    AT(sy_header, name);
    AT(sy_header, value);
    SIZE(sy_request);
    AT(sy_request, struct_size);
    AT(sy_request, method);
    AT(sy_request, path);
    AT(sy_request, query);
    AT(sy_request, headers);
    AT(sy_request, headers_len);
    AT(sy_request, remote_addr);
    AT(sy_request, body);
    SIZE(sy_out);
    AT(sy_out, ctx);
    AT(sy_out, set_json);
    AT(sy_out, set_message);
    AT(sy_out, struct_size);
    SIZE(sy_host);
    AT(sy_host, struct_size);
    AT(sy_host, ctx);
    AT(sy_host, log);
    AT(sy_host, abi_major);
    AT(sy_host, abi_minor);
    SIZE(sy_plugin);
    AT(sy_plugin, struct_size);
    AT(sy_plugin, abi_major);
    AT(sy_plugin, abi_minor);
    AT(sy_plugin, role);
    AT(sy_plugin, name);
    AT(sy_plugin, version);
    AT(sy_plugin, create);
    AT(sy_plugin, destroy);
    AT(sy_plugin, verify);
    AT(sy_plugin, execute);
    AT(sy_plugin, sample);
    AT(sy_plugin, execute_batch);
    AT(sy_plugin, subscriptions);
    printf("const SY_PLUGIN_V1_0_SIZE %zu\n", (size_t)SY_PLUGIN_V1_0_SIZE);
    printf("const SWITCHYARD_ABI_MAJOR %d\n", SWITCHYARD_ABI_MAJOR);
    printf("const SWITCHYARD_ABI_MINOR %d\n", SWITCHYARD_ABI_MINOR);
    printf("const SY_ROLE_PROVIDER %d\n", SY_ROLE_PROVIDER);
    printf("const SY_ROLE_ACTION %d\n", SY_ROLE_ACTION);
    printf("const SY_OK %d\n", SY_OK);
    printf("const SY_REJECT_UNAUTHENTICATED %d\n", SY_REJECT_UNAUTHENTICATED);
    printf("const SY_REJECT_EXPIRED %d\n", SY_REJECT_EXPIRED);
    printf("const SY_REJECT_MALFORMED %d\n", SY_REJECT_MALFORMED);
    printf("const SY_REJECT_FORBIDDEN %d\n", SY_REJECT_FORBIDDEN);
    printf("const SY_REJECT_DECRYPTION %d\n", SY_REJECT_DECRYPTION);
    printf("const SY_RETRY_LATER %d\n", SY_RETRY_LATER);
    printf("const SY_FAIL_RETRYABLE %d\n", SY_FAIL_RETRYABLE);
    printf("const SY_FAIL_PERMANENT %d\n", SY_FAIL_PERMANENT);
    printf("const SY_ERR_CONFIG %d\n", SY_ERR_CONFIG);
    printf("const SY_ERR_UNSUPPORTED %d\n", SY_ERR_UNSUPPORTED);
    printf("const SY_ERR_INTERNAL %d\n", SY_ERR_INTERNAL);
    printf("const SY_ERR_PANIC %d\n", SY_ERR_PANIC);
    printf("const SY_LOG_ERROR %d\n", SY_LOG_ERROR);
    printf("const SY_LOG_TRACE %d\n", SY_LOG_TRACE);
    printf("const SWITCHYARD_ENTRY_SYMBOL %s\n", SWITCHYARD_ENTRY_SYMBOL);
    return 0;
}
