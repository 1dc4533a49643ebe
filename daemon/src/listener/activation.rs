//! Listening sockets handed over by systemd (socket activation): the
//! kernel keeps a socket unit's sockets open while the service restarts,
//! so a restart or an upgrade refuses no connection; new ones wait in the
//! socket's backlog until the next process accepts them.
//!
//! systemd passes them as file descriptors 3, 4, … with `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES` (`FileDescriptorName=` in the socket
//! unit): `webhooks` is the webhook listener, `admin` the admin listener;
//! a single socket without a name is the webhook listener. A listener
//! without an inherited socket binds its configured address as before.
//! [`passing`] is the other side: how a program passes one, as systemd does.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

use crate::config::{Problem, Problems};

/// The sockets this process inherited, by the listener they are for.
#[derive(Debug, Default)]
pub struct Inherited {
    pub webhooks: Option<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
}

/// What systemd passed, as named file descriptors; nothing when this
/// process was not socket-activated (`LISTEN_PID` is not its pid).
pub fn passed() -> Result<Vec<(RawFd, String)>, Problems> {
    let fds = sd_notify::listen_fds_with_names().map_err(|e| {
        Problems(vec![Problem::new(
            "LISTEN_FDS",
            format!("the sockets systemd passed cannot be read: {e}"),
        )])
    })?;
    Ok(fds.collect())
}

/// Which listener a passed socket is for, by its `FileDescriptorName=`.
fn role(name: &str, count: usize) -> Option<&'static str> {
    match name {
        "webhooks" | "listen" => Some("webhooks"),
        "admin" => Some("admin"),
        // One socket, named after its unit or not at all: the webhooks'.
        _ if count == 1 => Some("webhooks"),
        _ => None,
    }
}

/// Takes the sockets systemd passed (once, at start). Each must be a
/// listening TCP socket; anything else is refused by name.
pub fn take() -> Result<Inherited, Problems> {
    let passed = passed()?;
    let mut inherited = Inherited::default();
    let mut problems = Vec::new();
    for (fd, name) in &passed {
        let Some(role) = role(name, passed.len()) else {
            problems.push(Problem::new(
                "LISTEN_FDNAMES",
                format!(
                    "socket {fd} is named {name:?}: name each socket unit's socket \
                     FileDescriptorName=webhooks or FileDescriptorName=admin"
                ),
            ));
            continue;
        };
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
        // is ours) for it to own; it is taken once, here.
        let socket = unsafe { socket2::Socket::from_raw_fd(*fd) };
        let listening = socket.is_listener().unwrap_or(false)
            && socket.r#type().ok() == Some(socket2::Type::STREAM);
        if !listening {
            problems.push(Problem::new(
                "LISTEN_FDS",
                format!("socket {fd} ({name}) is not a listening TCP socket"),
            ));
            continue;
        }
        let listener: std::net::TcpListener = socket.into();
        let slot = match role {
            "webhooks" => &mut inherited.webhooks,
            _ => &mut inherited.admin,
        };
        if slot.replace(listener).is_some() {
            problems.push(Problem::new(
                "LISTEN_FDNAMES",
                format!("two sockets are named {role}"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(inherited)
    } else {
        Err(Problems(problems))
    }
}

/// A listener on an inherited socket, for tokio; its address is logged
/// beside the configured one when they differ (the socket unit rules).
pub fn adopt(
    listener: std::net::TcpListener,
    configured: SocketAddr,
    setting: &str,
) -> Result<tokio::net::TcpListener, Problems> {
    let problem = |e: std::io::Error| {
        Problems(vec![Problem::new(
            setting,
            format!("cannot use the socket systemd passed: {e}"),
        )])
    };
    listener.set_nonblocking(true).map_err(problem)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(problem)?;
    if let Ok(addr) = listener.local_addr() {
        if addr != configured {
            tracing::warn!(
                %addr, %configured,
                "{setting}: the socket systemd passed is on {addr}, not {configured}; \
                 the socket unit's ListenStream= is what counts"
            );
        }
    }
    Ok(listener)
}

/// What `switchyard check` says of the listeners: inherited or bound.
pub fn describe(listen: SocketAddr, admin: Option<SocketAddr>) -> Vec<String> {
    let passed = passed().unwrap_or_default();
    let from = |which: &str| {
        passed
            .iter()
            .find(|(_, name)| role(name, passed.len()) == Some(which))
            .map(|(fd, name)| format!("the socket systemd passes (fd {fd}, {name})"))
    };
    let mut out = vec![format!(
        "webhooks: {}",
        from("webhooks").unwrap_or_else(|| format!("binds {listen} (no socket from systemd)"))
    )];
    if let Some(admin) = admin {
        out.push(format!(
            "admin: {}",
            from("admin").unwrap_or_else(|| format!("binds {admin} (no socket from systemd)"))
        ));
    }
    out
}

/// A command that runs `program` with `socket` passed as systemd passes a
/// socket unit's: as file descriptor 3, with `LISTEN_FDS=1`,
/// `LISTEN_FDNAMES=webhooks` and `LISTEN_PID` the program's own pid (a
/// shell sets it and `exec`s the program, keeping its pid). Arguments added
/// to the command go to `program`. For a supervisor other than systemd,
/// and for measuring or testing a restart on a held socket; `socket` must
/// stay open until the command is spawned.
pub fn passing(program: &std::path::Path, socket: &std::net::TcpListener) -> std::process::Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = socket.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(program)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "webhooks");
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                // Already 3: only let it survive the exec.
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_named_for_their_listener() {
        assert_eq!(role("webhooks", 2), Some("webhooks"));
        assert_eq!(role("admin", 2), Some("admin"));
        assert_eq!(role("switchyard.socket", 1), Some("webhooks"));
        assert_eq!(role("unknown", 1), Some("webhooks"));
        assert_eq!(role("other", 2), None);
    }
}
