//! The provider's subscription API (ABI 1.4): how a provider plugin tells
//! the host what its provider's side holds (which webhooks are set up, to
//! which URL, in what state) and changes it.
//!
//! The host decides *what* to do — it compares what the config declares
//! ([`SubscriptionCall::Desired`]) with what the provider holds
//! ([`SubscriptionCall::List`]) — and the plugin does each step against its
//! provider's API. One shape, [`Subscription`], serves both sides, so the
//! comparison is the host's alone: the same `events`, `target_url` and
//! `spec` means nothing to do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One subscription (a webhook registration) at the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The provider's id; absent from a desired one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The provider's event names it delivers, sorted.
    pub events: Vec<String>,
    /// Where the provider posts; may carry credentials (Basic, `?token=`):
    /// the host redacts it when it shows it.
    pub target_url: String,
    #[serde(default)]
    pub state: SubscriptionState,
    /// The provider's own word for the state (`DISABLED_TOO_MANY_ERRORS`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// A label the provider shows (Teal's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What else must match for the subscription to be as declared, as the
    /// provider reports it back (Tripletex's `fields`, Teal's
    /// `include_payload`). Compared whole; secrets never go here.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    /// Changes with each change the provider records (Tripletex's
    /// `version`), so that one disabling is told once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// What state a subscription is in, in the host's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    /// Delivering.
    #[default]
    Active,
    /// Switched off by the provider because deliveries failed (Tripletex's
    /// `DISABLED_TOO_MANY_ERRORS`): may be switched on again (`enable`).
    Failing,
    /// Off for another reason (by hand, misuse, rate limits): reported,
    /// never switched on by the host.
    Disabled,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Failing => "failing",
            SubscriptionState::Disabled => "disabled",
        }
    }
}

/// One call of the `subscriptions` entry point, as the JSON `{"op": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum SubscriptionCall {
    /// The subscriptions the source's settings declare, for webhooks posted
    /// to `target_url` (`<public_url>/hooks/<source>`). No I/O.
    Desired { target_url: String },
    /// Every subscription the provider holds for these credentials.
    List,
    /// Make one (a desired one); answers it with its id.
    Create { subscription: Subscription },
    /// Remove one.
    Delete { id: String },
    /// Switch a failing one on again; answers it as it is now.
    Enable { id: String },
}

/// The entry point's answer: `{"subscriptions": [...]}` (none for `delete`,
/// one for `create` and `enable`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriptionsOutput {
    pub subscriptions: Vec<Subscription>,
}

/// Why a subscription call did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionError {
    /// The provider has no API for it, or the source declares no
    /// subscriptions: the message says what to do instead
    /// (`SY_ERR_UNSUPPORTED`).
    Unsupported(String),
    /// Worth trying again later: the API did not answer, 5xx, 429
    /// (`SY_FAIL_RETRYABLE`).
    Retryable(String),
    /// Refused: bad credentials, unknown event, not found
    /// (`SY_FAIL_PERMANENT`).
    Permanent(String),
}

impl SubscriptionError {
    pub fn message(&self) -> &str {
        match self {
            SubscriptionError::Unsupported(m)
            | SubscriptionError::Retryable(m)
            | SubscriptionError::Permanent(m) => m,
        }
    }

    /// The same error with its message rewritten (scrubbed, prefixed).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> SubscriptionError {
        match self {
            SubscriptionError::Unsupported(m) => SubscriptionError::Unsupported(f(m)),
            SubscriptionError::Retryable(m) => SubscriptionError::Retryable(f(m)),
            SubscriptionError::Permanent(m) => SubscriptionError::Permanent(f(m)),
        }
    }
}

impl std::fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_read_as_the_header_writes_them() {
        let c: SubscriptionCall =
            serde_json::from_str(r#"{"op":"desired","target_url":"https://x/hooks/t"}"#).unwrap();
        assert_eq!(
            c,
            SubscriptionCall::Desired {
                target_url: "https://x/hooks/t".into()
            }
        );
        let c: SubscriptionCall = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(c, SubscriptionCall::List);
        let s: Subscription =
            serde_json::from_str(r#"{"events":["a"],"target_url":"u","state":"failing"}"#).unwrap();
        assert_eq!(s.state, SubscriptionState::Failing);
        assert_eq!(
            serde_json::to_value(SubscriptionCall::Enable { id: "7".into() }).unwrap(),
            serde_json::json!({"op": "enable", "id": "7"})
        );
    }
}
