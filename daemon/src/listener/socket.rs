//! The local admin socket: the admin API on a unix socket in `data_dir`
//! (`admin.sock`), so that the CLI on the same machine reaches the running
//! daemon without an `[admin]` section or a token. Its mode is 0660: the
//! daemon's user and group may use it (the `.deb` runs the daemon as
//! `switchyard`; add an operator to that group). An `[admin]` TCP listener
//! is still the way for other machines, with its bearer token.
//!
//! The socket also tells whether a daemon already runs with this
//! `data_dir`: at start, a socket that answers means another daemon owns
//! the store, and this one refuses to start; one that does not answer is
//! left from a daemon that died, and is replaced.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::config::{Problem, Problems};

/// The socket's file name in `data_dir`.
pub const SOCKET_NAME: &str = "admin.sock";

/// Longest path a unix socket can be bound at (`sun_path`, less its NUL).
const MAX_PATH: usize = 107;

/// Where the admin socket of a daemon with this `data_dir` is.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Takes the admin socket at `path`: refuses when a daemon answers there,
/// replaces a dead one's. `None` (with a warning) when the path is too long
/// for a unix socket: the daemon then runs without it.
pub fn claim(path: &Path) -> Result<Option<UnixListener>, Problems> {
    let problem =
        |message: String| Problems(vec![Problem::new(path.display().to_string(), message)]);
    if path.as_os_str().len() > MAX_PATH {
        tracing::warn!(
            path = %path.display(),
            "data_dir's path is too long for the admin socket ({MAX_PATH} bytes at most); \
             the CLI reaches this daemon only through [admin]"
        );
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| problem(format!("cannot create data_dir: {e}")))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(problem(
                    "another switchyard is running with this data_dir (its admin socket answers); \
                     stop it first: two daemons must not share a store"
                        .into(),
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                problem(format!("cannot replace a dead daemon's admin socket: {e}"))
            })?;
        }
        Ok(_) => {
            return Err(problem(
                "is in the way of the admin socket: it is not a socket".into(),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| problem(format!("cannot bind the admin socket: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| problem(format!("cannot set the admin socket's mode: {e}")))?;
    Ok(Some(listener))
}

/// Removes the socket at shutdown, if it is still the one bound.
pub fn release(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
