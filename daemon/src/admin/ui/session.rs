//! Dashboard sessions: a token given once at sign-in, exchanged for a
//! random session id in an HttpOnly, SameSite=Strict cookie; each session
//! has its own CSRF token, which every form carries back. Kept in memory
//! (a restart signs everyone out), at most [`MAX_SESSIONS`], each for
//! [`SESSION_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Sessions at most; signing in beyond ends the oldest.
pub const MAX_SESSIONS: usize = 256;
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "switchyard_session";

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: replay, redrive, enable.
    Admin,
    /// Look only.
    ReadOnly,
}

impl Role {
    /// Who did it, as the audit log says.
    pub fn who(self) -> &'static str {
        match self {
            Role::Admin => "admin token",
            Role::ReadOnly => "read-only token",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    pub csrf: String,
    started: Instant,
}

/// The tokens that sign in, and the sessions they opened.
pub struct Sessions {
    admin: String,
    read_only: Option<String>,
    open: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

fn same(given: &str, token: &str) -> bool {
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

impl Sessions {
    pub fn new(admin: String, read_only: Option<String>) -> Sessions {
        Sessions {
            admin,
            read_only,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `token`, if it is one of the tokens: its id.
    pub fn sign_in(&self, token: &str) -> Option<(String, Role)> {
        let role = if same(token, &self.admin) {
            Role::Admin
        } else if self.read_only.as_deref().is_some_and(|t| same(token, t)) {
            Role::ReadOnly
        } else {
            return None;
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.started.elapsed() < SESSION_TTL);
        while open.len() >= MAX_SESSIONS {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => open.remove(&id),
                None => break,
            };
        }
        let id = random_id();
        open.insert(
            id.clone(),
            Session {
                role,
                csrf: random_id(),
                started: Instant::now(),
            },
        );
        Some((id, role))
    }

    /// The live session of a cookie's id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(id)
            .filter(|s| s.started.elapsed() < SESSION_TTL)
            .cloned()
    }

    pub fn sign_out(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(id);
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's.
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(g, &self.csrf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tokens_sign_in_and_each_session_is_its_own() {
        let s = Sessions::new("a".repeat(20), Some("r".repeat(20)));
        assert!(s.sign_in("nope").is_none());
        assert!(s.sign_in(&"a".repeat(19)).is_none());
        let (admin, role) = s.sign_in(&"a".repeat(20)).unwrap();
        assert_eq!(role, Role::Admin);
        let (reader, role) = s.sign_in(&"r".repeat(20)).unwrap();
        assert_eq!(role, Role::ReadOnly);
        assert_ne!(admin, reader);
        let a = s.get(&admin).unwrap();
        assert!(a.csrf_ok(Some(&a.csrf.clone())));
        assert!(!a.csrf_ok(Some(&s.get(&reader).unwrap().csrf)));
        assert!(!a.csrf_ok(None));
        s.sign_out(&admin);
        assert!(s.get(&admin).is_none());
        assert!(s.get("forged").is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new("a".repeat(20), None);
        let first = s.sign_in(&"a".repeat(20)).unwrap().0;
        for _ in 0..MAX_SESSIONS {
            s.sign_in(&"a".repeat(20)).unwrap();
        }
        assert!(s.get(&first).is_none(), "the oldest went");
        assert_eq!(s.open.lock().unwrap().len(), MAX_SESSIONS);
    }
}
