//! What an HTTP answer means for a job, for actions that call HTTP targets.

use std::io::Read;
use std::time::{Duration, SystemTime};

use serde_json::json;
use switchyard_plugin_api::Outcome;

/// Reads `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The most of an answer's body an action reads: enough for a message. A
/// target that answers with gigabytes costs no more than this.
pub const MAX_ANSWER_BYTES: u64 = 16 * 1024;

/// The start of an answer's body as text: at most [`MAX_ANSWER_BYTES`],
/// the rest never read (the connection is then closed, not reused).
pub fn answer_text(body: impl Read) -> String {
    let mut kept = Vec::new();
    let _ = body.take(MAX_ANSWER_BYTES).read_to_end(&mut kept);
    String::from_utf8_lossy(&kept).into_owned()
}

/// What an HTTP answer means for the job.
pub fn http_outcome(code: u16, retry_after_header: Option<&str>, body: &str) -> Outcome {
    let snippet: String = body.chars().take(200).collect();
    let message = format!("HTTP {code} {}", snippet.trim())
        .trim_end()
        .to_string();
    match code {
        200..=299 => Outcome::Done(Some(json!({ "status": code }))),
        410 => Outcome::Gone(message),
        429 | 502 | 503 | 504 => {
            match retry_after_header.and_then(|v| retry_after(v, SystemTime::now())) {
                Some(after) => Outcome::RetryAfter(message, after),
                // Too many requests, no time said: still a refusal for load
                // (the host retries on its schedule and slows the action).
                None if code == 429 => Outcome::RetryAfter(message, Duration::ZERO),
                None => Outcome::Retryable(message),
            }
        }
        400..=499 => Outcome::Permanent(message),
        _ => Outcome::Retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let s = |c: u16| c;
        assert!(matches!(http_outcome(s(200), None, ""), Outcome::Done(_)));
        assert!(matches!(http_outcome(s(204), None, ""), Outcome::Done(_)));
        assert!(matches!(http_outcome(s(410), None, ""), Outcome::Gone(_)));
        assert_eq!(
            http_outcome(s(429), Some("7"), "slow down"),
            Outcome::RetryAfter("HTTP 429 slow down".into(), Duration::from_secs(7))
        );
        assert!(matches!(
            http_outcome(s(503), None, ""),
            Outcome::Retryable(_)
        ));
        assert_eq!(
            http_outcome(s(429), None, ""),
            Outcome::RetryAfter("HTTP 429".into(), Duration::ZERO)
        );
        assert!(matches!(
            http_outcome(s(500), None, ""),
            Outcome::Retryable(_)
        ));
        assert!(matches!(
            http_outcome(s(400), None, ""),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            http_outcome(s(404), Some("5"), ""),
            Outcome::Permanent(_)
        ));
    }

    #[test]
    fn only_the_start_of_an_answer_is_read() {
        let endless = std::io::repeat(b'x');
        assert_eq!(answer_text(endless).len() as u64, MAX_ANSWER_BYTES);
        assert_eq!(answer_text(&b"short"[..]), "short");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
