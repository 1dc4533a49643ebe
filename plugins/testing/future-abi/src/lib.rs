//! A library that exports the entry symbol but claims ABI major 2. The host
//! must refuse to load it, naming the file and both versions.

use switchyard_plugin_api::ffi::{SyPlugin, ROLE_PROVIDER};

static TABLE: SyPlugin = SyPlugin {
    struct_size: std::mem::size_of::<SyPlugin>(),
    abi_major: 2,
    abi_minor: 0,
    role: ROLE_PROVIDER,
    name: c"future".as_ptr(),
    version: c"9.0.0".as_ptr(),
    create: None,
    destroy: None,
    verify: None,
    execute: None,
    sample: None,
    execute_batch: None,
    subscriptions: None,
};

#[no_mangle]
pub extern "C" fn switchyard_plugin_v1() -> *const SyPlugin {
    &TABLE
}
