//! The most recent refused webhooks, in memory only: a bounded ring, so a
//! flood of forged requests costs a fixed amount of memory and never a
//! byte of disk. Each entry is redacted like a stored request (credential
//! headers, the source's own credentials) and cut short (body, header
//! values, header count). The dashboard's rejections page reads it; where
//! a provider signs with a rotated secret, this is where it shows.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Entries kept; the oldest goes first.
pub const KEPT: usize = 200;
/// Bytes of a body kept.
pub const BODY_BYTES: usize = 1024;
/// Headers kept of one request, and characters of each value.
const HEADERS: usize = 40;
const VALUE_CHARS: usize = 200;

/// One refused request.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub at_ms: i64,
    pub source: String,
    /// The sender's address (behind trusted proxies: the forwarded one).
    pub sender: String,
    pub status: u16,
    /// The refusal's kind, as the `rejected` metric counts it.
    pub reason: &'static str,
    /// What was wrong, as logged.
    pub message: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body was longer than what is kept.
    pub body_cut: bool,
}

/// The ring.
#[derive(Default)]
pub struct Rejections {
    ring: Mutex<VecDeque<Rejection>>,
}

impl Rejections {
    pub fn push(&self, mut r: Rejection) {
        r.headers.truncate(HEADERS);
        for (_, v) in &mut r.headers {
            if v.chars().count() > VALUE_CHARS {
                *v = v.chars().take(VALUE_CHARS).chain(['…']).collect();
            }
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(r);
    }

    /// The newest first.
    pub fn recent(&self) -> Vec<Rejection> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// Up to [`BODY_BYTES`] of a body as text, and whether it was cut.
pub fn cut_body(body: &[u8]) -> (String, bool) {
    let kept = &body[..body.len().min(BODY_BYTES)];
    (
        String::from_utf8_lossy(kept).into_owned(),
        body.len() > BODY_BYTES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(n: usize) -> Rejection {
        Rejection {
            at_ms: n as i64,
            source: "tight".into(),
            sender: "127.0.0.1".into(),
            status: 401,
            reason: "unauthenticated",
            message: "bad signature".into(),
            method: "POST".into(),
            path: "/hooks/tight".into(),
            headers: (0..100)
                .map(|i| (format!("h{i}"), "v".repeat(1000)))
                .collect(),
            body: String::new(),
            body_cut: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_cuts_what_it_keeps() {
        let ring = Rejections::default();
        for n in 0..KEPT + 50 {
            ring.push(rejection(n));
        }
        let recent = ring.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].at_ms, (KEPT + 49) as i64);
        assert_eq!(recent[KEPT - 1].at_ms, 50);
        assert_eq!(recent[0].headers.len(), HEADERS);
        assert_eq!(recent[0].headers[0].1.chars().count(), VALUE_CHARS + 1);
        let (body, cut) = cut_body(&vec![b'x'; 5000]);
        assert_eq!((body.len(), cut), (BODY_BYTES, true));
    }
}
