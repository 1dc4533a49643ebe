//! The raw ABI: a field-for-field mirror of `include/switchyard_plugin.h`.
//!
//! The header is the source of truth; change it first, then this file. The
//! C compiler holds the header's layout (its `_Static_assert`s); the test
//! `tests/layout.rs` compiles a C program against the header and compares
//! every size and offset it prints with this file's.
//!
//! Within ABI 1, structs only grow at their end, and a reader never reads
//! past the `struct_size` its writer gave ([`read_prefix`]).

use std::ffi::{c_char, c_void};

pub const ABI_MAJOR: u16 = 1;
pub const ABI_MINOR: u16 = 8;
/// The exported entry symbol, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"switchyard_plugin_v1\0";

pub const ROLE_PROVIDER: u32 = 1;
pub const ROLE_ACTION: u32 = 2;

pub const SY_OK: i32 = 0;
pub const SY_REJECT_UNAUTHENTICATED: i32 = 10;
pub const SY_REJECT_EXPIRED: i32 = 11;
pub const SY_REJECT_MALFORMED: i32 = 12;
pub const SY_REJECT_FORBIDDEN: i32 = 13;
pub const SY_REJECT_DECRYPTION: i32 = 14;
/// verify(): not now — answered 503 with `Retry-After` (ABI 1.6).
pub const SY_RETRY_LATER: i32 = 15;
pub const SY_FAIL_RETRYABLE: i32 = 20;
pub const SY_FAIL_PERMANENT: i32 = 21;
pub const SY_ERR_CONFIG: i32 = 30;
pub const SY_ERR_UNSUPPORTED: i32 = 31;
pub const SY_ERR_INTERNAL: i32 = 32;
pub const SY_ERR_PANIC: i32 = 33;

pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// A borrowed byte slice (`sy_bytes`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl SyBytes {
    pub const EMPTY: SyBytes = SyBytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn from_slice(s: &[u8]) -> SyBytes {
        SyBytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must point at `len` readable bytes that outlive `'a` (or be null with len 0).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyHeader {
    pub name: SyBytes,
    pub value: SyBytes,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyRequest {
    pub struct_size: usize,
    pub method: SyBytes,
    pub path: SyBytes,
    pub query: SyBytes,
    pub headers: *const SyHeader,
    pub headers_len: usize,
    pub remote_addr: SyBytes,
    pub body: SyBytes,
}

/// A call's output sink (`sy_out`): valid only during the call that received
/// it, on that thread.
#[repr(C)]
pub struct SyOut {
    pub ctx: *mut c_void,
    pub set_json: extern "C" fn(ctx: *mut c_void, ptr: *const u8, len: usize),
    pub set_message: extern "C" fn(ctx: *mut c_void, ptr: *const u8, len: usize),
    /// ABI 1.2: present when the host's `abi_minor` is 2 or more.
    pub struct_size: usize,
}

/// The host's services (`sy_host`), valid until the instance is destroyed.
#[repr(C)]
pub struct SyHost {
    pub struct_size: usize,
    pub ctx: *mut c_void,
    pub log: extern "C" fn(ctx: *mut c_void, level: u32, ptr: *const u8, len: usize),
    /// ABI 1.2: the host's version, when `struct_size` covers it.
    pub abi_major: u16,
    pub abi_minor: u16,
}

/// `sy_host` as ABI 1.0 and 1.1 had it: `struct_size`, `ctx`, `log`.
pub const HOST_V1_0_SIZE: usize = 3 * std::mem::size_of::<usize>();

pub type CreateFn = unsafe extern "C" fn(
    host: *const SyHost,
    config_json: SyBytes,
    out: *mut SyOut,
    instance: *mut *mut c_void,
) -> i32;
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);
pub type VerifyFn =
    unsafe extern "C" fn(instance: *mut c_void, request: *const SyRequest, out: *mut SyOut) -> i32;
pub type ExecuteFn = unsafe extern "C" fn(
    instance: *mut c_void,
    job_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32;
/// ABI 1.3: several jobs of one action in one call (`execute_batch`).
pub type ExecuteBatchFn = unsafe extern "C" fn(
    instance: *mut c_void,
    jobs_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32;
/// ABI 1.4: a provider's subscriptions at its provider (`subscriptions`).
pub type SubscriptionsFn = unsafe extern "C" fn(
    instance: *mut c_void,
    call_json: SyBytes,
    timeout_ms: u64,
    out: *mut SyOut,
) -> i32;
pub type SampleFn =
    unsafe extern "C" fn(instance: *mut c_void, event_name: SyBytes, out: *mut SyOut) -> i32;

/// The plugin table (`sy_plugin`).
#[repr(C)]
pub struct SyPlugin {
    pub struct_size: usize,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub role: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub create: Option<CreateFn>,
    pub destroy: Option<DestroyFn>,
    pub verify: Option<VerifyFn>,
    pub execute: Option<ExecuteFn>,
    pub sample: Option<SampleFn>,
    /// ABI 1.3.
    pub execute_batch: Option<ExecuteBatchFn>,
    /// ABI 1.4.
    pub subscriptions: Option<SubscriptionsFn>,
}

// SAFETY: a plugin table is immutable static data: two string literals and
// function pointers. Nothing in it is ever written after the library is built.
unsafe impl Sync for SyPlugin {}

pub type EntryFn = unsafe extern "C" fn() -> *const SyPlugin;

/// The size of the 1.0 table (`SY_PLUGIN_V1_0_SIZE`), for ever: the smallest
/// table a 1.x host accepts. Written out, not taken from [`SyPlugin`], which
/// grows with later minors.
pub const PLUGIN_V1_0_SIZE: usize = 8 + 8 * std::mem::size_of::<usize>();

/// Reads the first `struct_size` bytes of a struct whose writer may have
/// known a smaller (older) or larger (newer) version of it: the fields past
/// `struct_size` are zero (null pointers, `None` entry points), the writer's
/// fields past `size_of::<T>()` are not read.
///
/// # Safety
/// `raw` must point at `min(struct_size, size_of::<T>())` readable bytes, and
/// `T` must be a `repr(C)` struct for which all-zero bytes are a valid value
/// (integers, raw pointers, `Option` of function pointers).
pub unsafe fn read_prefix<T>(raw: *const u8, struct_size: usize) -> T {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let n = struct_size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(raw, value.as_mut_ptr() as *mut u8, n);
    value.assume_init()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_1_0_table_size_is_frozen() {
        assert_eq!(
            PLUGIN_V1_0_SIZE,
            std::mem::offset_of!(SyPlugin, sample) + std::mem::size_of::<usize>()
        );
        assert!(std::mem::size_of::<SyPlugin>() >= PLUGIN_V1_0_SIZE);
    }

    #[test]
    fn a_prefix_read_leaves_the_rest_absent() {
        #[repr(C)]
        struct Small {
            struct_size: usize,
            a: u32,
        }
        #[repr(C)]
        struct Large {
            struct_size: usize,
            a: u32,
            more: Option<extern "C" fn()>,
        }
        let small = Small {
            struct_size: std::mem::size_of::<Small>(),
            a: 7,
        };
        // SAFETY: reads size_of::<Small>() bytes of a Small.
        let large: Large =
            unsafe { read_prefix(&small as *const Small as *const u8, small.struct_size) };
        assert_eq!((large.struct_size, large.a), (16, 7));
        assert!(large.more.is_none());
    }
}
