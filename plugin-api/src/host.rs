//! [`Host`]: the host's services a plugin instance may call (logging).

use crate::ffi;

/// A handle on the host's services, given to `create`. Cheap to copy, and
/// safe to use from any thread for as long as the instance lives.
#[derive(Clone, Copy)]
pub struct Host {
    raw: *const ffi::SyHost,
}

// SAFETY: the host guarantees the sy_host table and its log callback are
// thread-safe and outlive the instance (see the header).
unsafe impl Send for Host {}
unsafe impl Sync for Host {}

impl Host {
    /// # Safety
    /// `raw` must be null or a valid `sy_host` that outlives every use.
    pub unsafe fn from_raw(raw: *const ffi::SyHost) -> Host {
        Host { raw }
    }

    /// A host that drops every message (for unit tests of plugin code).
    pub fn detached() -> Host {
        Host {
            raw: std::ptr::null(),
        }
    }

    /// The host's ABI version `(major, minor)`, or `None` from a host of
    /// ABI 1.1 or older (which did not say) and from a detached host.
    pub fn abi(&self) -> Option<(u16, u16)> {
        if self.raw.is_null() {
            return None;
        }
        // SAFETY: see from_raw. Every sy_host starts with struct_size and
        // holds at least the 1.0 fields; only what struct_size covers is read.
        let host: ffi::SyHost = unsafe {
            let size = std::ptr::read(self.raw as *const usize);
            if size < ffi::HOST_V1_0_SIZE {
                return None;
            }
            ffi::read_prefix(self.raw as *const u8, size)
        };
        let needed = std::mem::offset_of!(ffi::SyHost, abi_minor) + 2;
        (host.struct_size >= needed).then_some((host.abi_major, host.abi_minor))
    }

    pub fn log(&self, level: u32, message: &str) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: see from_raw. The 1.0 fields are read in place, without a
        // reference to a struct that may be shorter than ours.
        unsafe {
            let (log, ctx) = ((*self.raw).log, (*self.raw).ctx);
            log(ctx, level, message.as_ptr(), message.len());
        }
    }
    pub fn error(&self, message: &str) {
        self.log(ffi::LOG_ERROR, message)
    }
    pub fn warn(&self, message: &str) {
        self.log(ffi::LOG_WARN, message)
    }
    pub fn info(&self, message: &str) {
        self.log(ffi::LOG_INFO, message)
    }
    pub fn debug(&self, message: &str) {
        self.log(ffi::LOG_DEBUG, message)
    }
}
