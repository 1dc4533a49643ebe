//! The Rust mirror (`src/ffi.rs`) against the C header as the C compiler
//! reads it: `tests/layout.c` is compiled against
//! `include/switchyard_plugin.h` (whose `_Static_assert`s must hold) and
//! prints every size, offset and constant; each must equal the Rust side's.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use switchyard_plugin_api::ffi::*;

/// What the C compiler says, keyed like `size sy_out` or `offset sy_out.ctx`.
fn c_layout() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("layout");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/layout.c"))
        .output()
        .expect("a C compiler (cc) is needed for the layout test");
    assert!(
        built.status.success(),
        "the header does not compile (a _Static_assert failed?):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn the_rust_mirror_matches_the_c_header() {
    let c = c_layout();
    let rust: Vec<(&str, String)> = vec![
        ("size sy_bytes", size_of::<SyBytes>().to_string()),
        ("offset sy_bytes.ptr", offset_of!(SyBytes, ptr).to_string()),
        ("offset sy_bytes.len", offset_of!(SyBytes, len).to_string()),
        ("size sy_header", size_of::<SyHeader>().to_string()),
        (
            "offset sy_header.name",
            offset_of!(SyHeader, name).to_string(),
        ),
        (
            "offset sy_header.value",
            offset_of!(SyHeader, value).to_string(),
        ),
        ("size sy_request", size_of::<SyRequest>().to_string()),
        ("size sy_out", size_of::<SyOut>().to_string()),
        ("offset sy_out.ctx", offset_of!(SyOut, ctx).to_string()),
        (
            "offset sy_out.set_json",
            offset_of!(SyOut, set_json).to_string(),
        ),
        (
            "offset sy_out.set_message",
            offset_of!(SyOut, set_message).to_string(),
        ),
        (
            "offset sy_out.struct_size",
            offset_of!(SyOut, struct_size).to_string(),
        ),
        ("size sy_host", size_of::<SyHost>().to_string()),
        (
            "offset sy_host.struct_size",
            offset_of!(SyHost, struct_size).to_string(),
        ),
        ("offset sy_host.ctx", offset_of!(SyHost, ctx).to_string()),
        ("offset sy_host.log", offset_of!(SyHost, log).to_string()),
        (
            "offset sy_host.abi_major",
            offset_of!(SyHost, abi_major).to_string(),
        ),
        (
            "offset sy_host.abi_minor",
            offset_of!(SyHost, abi_minor).to_string(),
        ),
        ("size sy_plugin", size_of::<SyPlugin>().to_string()),
        (
            "offset sy_plugin.struct_size",
            offset_of!(SyPlugin, struct_size).to_string(),
        ),
        (
            "offset sy_plugin.abi_major",
            offset_of!(SyPlugin, abi_major).to_string(),
        ),
        (
            "offset sy_plugin.abi_minor",
            offset_of!(SyPlugin, abi_minor).to_string(),
        ),
        (
            "offset sy_plugin.role",
            offset_of!(SyPlugin, role).to_string(),
        ),
        (
            "offset sy_plugin.name",
            offset_of!(SyPlugin, name).to_string(),
        ),
        (
            "offset sy_plugin.version",
            offset_of!(SyPlugin, version).to_string(),
        ),
        (
            "offset sy_plugin.create",
            offset_of!(SyPlugin, create).to_string(),
        ),
        (
            "offset sy_plugin.destroy",
            offset_of!(SyPlugin, destroy).to_string(),
        ),
        (
            "offset sy_plugin.verify",
            offset_of!(SyPlugin, verify).to_string(),
        ),
        (
            "offset sy_plugin.execute",
            offset_of!(SyPlugin, execute).to_string(),
        ),
        (
            "offset sy_plugin.sample",
            offset_of!(SyPlugin, sample).to_string(),
        ),
        (
            "offset sy_plugin.execute_batch",
            offset_of!(SyPlugin, execute_batch).to_string(),
        ),
        (
            "offset sy_plugin.subscriptions",
            offset_of!(SyPlugin, subscriptions).to_string(),
        ),
        ("const SY_PLUGIN_V1_0_SIZE", PLUGIN_V1_0_SIZE.to_string()),
        ("const SWITCHYARD_ABI_MAJOR", ABI_MAJOR.to_string()),
        ("const SWITCHYARD_ABI_MINOR", ABI_MINOR.to_string()),
        ("const SY_ROLE_PROVIDER", ROLE_PROVIDER.to_string()),
        ("const SY_ROLE_ACTION", ROLE_ACTION.to_string()),
        ("const SY_OK", SY_OK.to_string()),
        (
            "const SY_REJECT_UNAUTHENTICATED",
            SY_REJECT_UNAUTHENTICATED.to_string(),
        ),
        ("const SY_REJECT_EXPIRED", SY_REJECT_EXPIRED.to_string()),
        ("const SY_REJECT_MALFORMED", SY_REJECT_MALFORMED.to_string()),
        ("const SY_REJECT_FORBIDDEN", SY_REJECT_FORBIDDEN.to_string()),
        (
            "const SY_REJECT_DECRYPTION",
            SY_REJECT_DECRYPTION.to_string(),
        ),
        ("const SY_RETRY_LATER", SY_RETRY_LATER.to_string()),
        ("const SY_FAIL_RETRYABLE", SY_FAIL_RETRYABLE.to_string()),
        ("const SY_FAIL_PERMANENT", SY_FAIL_PERMANENT.to_string()),
        ("const SY_ERR_CONFIG", SY_ERR_CONFIG.to_string()),
        ("const SY_ERR_UNSUPPORTED", SY_ERR_UNSUPPORTED.to_string()),
        ("const SY_ERR_INTERNAL", SY_ERR_INTERNAL.to_string()),
        ("const SY_ERR_PANIC", SY_ERR_PANIC.to_string()),
        ("const SY_LOG_ERROR", LOG_ERROR.to_string()),
        ("const SY_LOG_TRACE", LOG_TRACE.to_string()),
        (
            "const SWITCHYARD_ENTRY_SYMBOL",
            std::str::from_utf8(ENTRY_SYMBOL.strip_suffix(b"\0").unwrap())
                .unwrap()
                .to_string(),
        ),
    ];
    let mut rust: Vec<(String, String)> =
        rust.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (field, offset) in [
        ("struct_size", offset_of!(SyRequest, struct_size)),
        ("method", offset_of!(SyRequest, method)),
        ("path", offset_of!(SyRequest, path)),
        ("query", offset_of!(SyRequest, query)),
        ("headers", offset_of!(SyRequest, headers)),
        ("headers_len", offset_of!(SyRequest, headers_len)),
        ("remote_addr", offset_of!(SyRequest, remote_addr)),
        ("body", offset_of!(SyRequest, body)),
    ] {
        rust.push((format!("offset sy_request.{field}"), offset.to_string()));
    }
    let rust: BTreeMap<String, String> = rust.into_iter().collect();
    assert_eq!(rust, c, "left: the Rust mirror, right: the C compiler");
}
