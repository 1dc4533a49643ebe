//! The raw ABI: a field-for-field mirror of `include/switchyard_plugin.h`.
//!
//! The header is the source of truth; change it first, then this file. The
//! tests at the bottom check sizes and offsets so the two cannot drift apart
//! silently on the platforms we build for.

use std::ffi::{c_char, c_void};

pub const ABI_MAJOR: u16 = 1;
pub const ABI_MINOR: u16 = 1;
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

#[repr(C)]
pub struct SyOut {
    pub ctx: *mut c_void,
    pub set_json: extern "C" fn(ctx: *mut c_void, ptr: *const u8, len: usize),
    pub set_message: extern "C" fn(ctx: *mut c_void, ptr: *const u8, len: usize),
}

#[repr(C)]
pub struct SyHost {
    pub struct_size: usize,
    pub ctx: *mut c_void,
    pub log: extern "C" fn(ctx: *mut c_void, level: u32, ptr: *const u8, len: usize),
}

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
}

// SAFETY: a plugin table is immutable static data: two string literals and
// function pointers. Nothing in it is ever written after the library is built.
unsafe impl Sync for SyPlugin {}

pub type EntryFn = unsafe extern "C" fn() -> *const SyPlugin;

/// The size of the 1.0 table: a host never needs more from a 1.x plugin.
pub const PLUGIN_V1_0_SIZE: usize = std::mem::size_of::<SyPlugin>();

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_c_header_on_64_bit() {
        if size_of::<usize>() != 8 {
            return;
        }
        assert_eq!(size_of::<SyBytes>(), 16);
        assert_eq!(size_of::<SyHeader>(), 32);
        assert_eq!(size_of::<SyRequest>(), 8 + 16 * 3 + 8 + 8 + 16 * 2);
        assert_eq!(offset_of!(SyPlugin, abi_major), 8);
        assert_eq!(offset_of!(SyPlugin, abi_minor), 10);
        assert_eq!(offset_of!(SyPlugin, role), 12);
        assert_eq!(offset_of!(SyPlugin, name), 16);
        assert_eq!(offset_of!(SyPlugin, create), 32);
        assert_eq!(offset_of!(SyPlugin, sample), 64);
        assert_eq!(size_of::<SyPlugin>(), 72);
    }
}
