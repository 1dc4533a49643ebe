//! Loading plugin libraries and checking their ABI.
//!
//! A library is opened, its one entry symbol called, and the table it returns
//! checked (ABI major, size, role, required entry points) and copied. Opened
//! libraries are never closed: `dlclose` on Rust code with thread-locals is
//! unsound, so every handle is parked in a process-wide list for good.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use switchyard_plugin_api::ffi::{self, SyPlugin};

/// What a plugin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Provider,
    Action,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Provider => "provider",
            Role::Action => "action",
        })
    }
}

/// The entry points of a loaded plugin, copied out of its table.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub create: ffi::CreateFn,
    pub destroy: ffi::DestroyFn,
    pub verify: Option<ffi::VerifyFn>,
    pub execute: Option<ffi::ExecuteFn>,
    pub sample: Option<ffi::SampleFn>,
    /// ABI 1.3: several jobs in one call.
    pub execute_batch: Option<ffi::ExecuteBatchFn>,
    /// ABI 1.4: the provider's subscriptions.
    pub subscriptions: Option<ffi::SubscriptionsFn>,
}

/// One loaded plugin library.
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub role: Role,
    /// The minor ABI version the plugin was built for: the host uses only
    /// what that minor defines (and nothing newer than its own).
    pub abi_minor: u16,
    /// The size of its table, as the plugin gave it.
    pub table_size: usize,
    pub path: PathBuf,
    pub(crate) table: Table,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("role", &self.role)
            .field("abi_minor", &self.abi_minor)
            .field("path", &self.path)
            .finish()
    }
}

impl Plugin {
    /// The ABI version it was built for, as people write it: `1.2`.
    pub fn abi(&self) -> String {
        format!("{}.{}", ffi::ABI_MAJOR, self.abi_minor)
    }

    /// Whether the plugin was built for at least ABI 1.`minor`, so that what
    /// that minor added may be read from it.
    pub fn speaks(&self, minor: u16) -> bool {
        self.abi_minor >= minor
    }
}

/// Why a library was refused. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot load library: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: not a Switchyard plugin (no `switchyard_plugin_v1` symbol)")]
    NoEntry { path: PathBuf },
    #[error(
        "{path}: built for plugin ABI {major}.{minor}, but this switchyard speaks ABI {}.x; \
         rebuild the plugin against switchyard-plugin-api {} (Rust) or a switchyard_plugin.h \
         whose SWITCHYARD_ABI_MAJOR is {} (C: /usr/include/switchyard/ of this package)",
        ffi::ABI_MAJOR,
        ffi::ABI_MAJOR,
        ffi::ABI_MAJOR
    )]
    AbiMajor {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    #[error("{path}: invalid plugin table: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: a plugin named {name:?} is already loaded from {other}")]
    Duplicate {
        path: PathBuf,
        name: String,
        other: PathBuf,
    },
}

/// Every library ever opened, so none is ever unloaded.
static OPENED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());

/// The file name ending of shared libraries on this platform.
pub fn is_library(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

unsafe fn c_text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    CStr::from_ptr(p).to_str().ok().map(str::to_owned)
}

/// Where libraries are copied before loading, once a running daemon says
/// (see [`load_copies_into`]).
static COPIES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// From now on, each library is copied into `dir` under a name made of its
/// content's hash, and loaded from there: a library replaced in plugin_dir
/// loads as the new code (the loader would hand back the old one for a path
/// it has open), the same content reuses its copy, and nothing loaded is
/// ever unloaded or overwritten under a running instance (`cp` over a
/// library a process has mapped crashes that process).
///
/// What is in `dir` and is not a copy of a library now in `plugin_dir`
/// (copies of older builds, a partial copy a full disk left) is removed
/// by [`prune_copies`]. When a copy cannot be made (the disk is full,
/// `data_dir` is read-only) the library is loaded from `plugin_dir` itself,
/// with a warning: the daemon starts, and replacing that library takes a
/// restart to load.
pub fn load_copies_into(dir: PathBuf) {
    let _ = COPIES.set(dir);
}

/// A copy's file name: the library's stem and the start of its content's
/// SHA-256.
fn copy_name(path: &Path, bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(bytes)[..8]);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    format!("{stem}-{hash}.so")
}

/// Copies `bytes` to `copy` through a temporary file in the same folder,
/// which is removed when the copy fails.
fn write_copy(dir: &Path, copy: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = copy
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, copy));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Why a copy failed, in words: a full disk is said as such.
fn copy_failure(e: &std::io::Error, dir: &Path, size: usize) -> String {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => format!(
            "the disk is full: no room in {} for its {} KiB copy",
            dir.display(),
            size.div_ceil(1024)
        ),
        _ => format!("cannot copy it into {}: {e}", dir.display()),
    }
}

/// The path to load `path` from: its copy (made if missing), or `path`
/// itself when no copies are made or the copy cannot be made (said). The
/// copy's name is added to `kept` whenever the library was read, so the
/// folder's pruning needs no second read of each library.
fn copy_for_loading(path: &Path, kept: &mut Vec<String>) -> std::io::Result<PathBuf> {
    let Some(dir) = COPIES.get() else {
        return Ok(path.to_path_buf());
    };
    let bytes = std::fs::read(path)?;
    let name = copy_name(path, &bytes);
    let copy = dir.join(&name);
    kept.push(name);
    if copy.exists() {
        return Ok(copy);
    }
    match write_copy(dir, &copy, &bytes) {
        Ok(()) => Ok(copy),
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                "plugin loaded in place, not from a copy ({}): replacing it takes a restart to load",
                copy_failure(&e, dir, bytes.len())
            );
            Ok(path.to_path_buf())
        }
    }
}

/// Removes from the copies' folder every file that is not named in `kept`
/// (the copies of the libraries just loaded, see [`load_keeping`]): copies
/// of older builds and partial copies go, so the folder holds at most one
/// copy per library. Returns what was removed. Copies still mapped by this
/// process stay mapped (the loader holds them open): removing the name
/// frees the space once they are unloaded, which for this process is at
/// its exit.
pub fn prune_copies(kept: &[String]) -> Vec<PathBuf> {
    let Some(dir) = COPIES.get() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kept.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Opens one library and reads its plugin table.
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    load_keeping(path, &mut Vec::new())
}

/// As [`load`], adding the name of the copy it loads from (when copies are
/// made) to `kept`, for [`prune_copies`].
pub fn load_keeping(path: &Path, kept: &mut Vec<String>) -> Result<Arc<Plugin>, LoadError> {
    let path_buf = path.to_path_buf();
    let from = copy_for_loading(path, kept).map_err(|e| LoadError::Open {
        path: path_buf.clone(),
        reason: format!("cannot read it: {e}"),
    })?;
    // SAFETY: loading a library runs its initializers; plugin_dir is trusted
    // configuration, like the daemon binary itself.
    let lib = unsafe { libloading::Library::new(&from) }.map_err(|e| LoadError::Open {
        path: path_buf.clone(),
        reason: e.to_string(),
    })?;
    let result = read_table(&lib, &path_buf);
    OPENED.lock().unwrap_or_else(|p| p.into_inner()).push(lib);
    result.map(Arc::new)
}

fn read_table(lib: &libloading::Library, path: &Path) -> Result<Plugin, LoadError> {
    let path = path.to_path_buf();
    let invalid = |reason: &str| LoadError::Invalid {
        path: path.clone(),
        reason: reason.into(),
    };
    // SAFETY: the symbol's type is fixed by the ABI.
    let entry = unsafe { lib.get::<ffi::EntryFn>(ffi::ENTRY_SYMBOL) }
        .map_err(|_| LoadError::NoEntry { path: path.clone() })?;
    // SAFETY: the entry point takes nothing and returns a static table.
    let raw = unsafe { entry() };
    if raw.is_null() {
        return Err(invalid("the entry symbol returned NULL"));
    }
    // Read the fixed head first: struct_size, then the versions. These fields
    // keep their place in every ABI major.
    // SAFETY: every table starts with these fields.
    let (struct_size, major, minor) = unsafe {
        let head = raw as *const u8;
        let size = std::ptr::read_unaligned(head as *const usize);
        let major = std::ptr::read_unaligned(
            head.add(std::mem::offset_of!(SyPlugin, abi_major)) as *const u16
        );
        let minor = std::ptr::read_unaligned(
            head.add(std::mem::offset_of!(SyPlugin, abi_minor)) as *const u16
        );
        (size, major, minor)
    };
    if major != ffi::ABI_MAJOR {
        return Err(LoadError::AbiMajor { path, major, minor });
    }
    if struct_size < ffi::PLUGIN_V1_0_SIZE {
        return Err(invalid(&format!(
            "struct_size {struct_size} is smaller than the ABI 1.0 table ({})",
            ffi::PLUGIN_V1_0_SIZE
        )));
    }
    if struct_size > 64 * 1024 {
        return Err(invalid(&format!(
            "struct_size {struct_size} is not the size of a plugin table"
        )));
    }
    // Only what the plugin's struct_size covers: entries of a minor newer
    // than the plugin's are absent; entries of a minor newer than ours are
    // not read.
    // SAFETY: the plugin says its table is struct_size bytes long.
    let t: SyPlugin = unsafe { ffi::read_prefix(raw as *const u8, struct_size) };
    let name = unsafe { c_text(t.name) }
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("no plugin name (or not UTF-8)"))?;
    let version = unsafe { c_text(t.version) }.unwrap_or_else(|| "unknown".into());
    let role = match t.role {
        ffi::ROLE_PROVIDER => Role::Provider,
        ffi::ROLE_ACTION => Role::Action,
        other => return Err(invalid(&format!("unknown role {other}"))),
    };
    let (Some(create), Some(destroy)) = (t.create, t.destroy) else {
        return Err(invalid("create and destroy are required"));
    };
    match role {
        Role::Provider if t.verify.is_none() => return Err(invalid("a provider must have verify")),
        Role::Action if t.execute.is_none() => return Err(invalid("an action must have execute")),
        _ => {}
    }
    Ok(Plugin {
        name,
        version,
        role,
        abi_minor: minor,
        table_size: struct_size,
        path,
        table: Table {
            create,
            destroy,
            verify: t.verify,
            execute: t.execute,
            sample: t.sample,
            // Read only from a plugin that says it speaks 1.3.
            execute_batch: t
                .execute_batch
                .filter(|_| minor >= 3 && role == Role::Action),
            // Read only from a provider that says it speaks 1.4.
            subscriptions: t
                .subscriptions
                .filter(|_| minor >= 4 && role == Role::Provider),
        },
    })
}
