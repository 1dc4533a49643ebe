//! Configuration's leaves: the vocabulary every stage shares for reading
//! its own section, and nothing that names a stage.
//!
//! Owns: [`Problem`]s with the file and line they come from, value formats
//! ([`de`]: durations, networks), secret references ([`resolve_secrets`]:
//! `{ env = "VAR" }`, `{ file = "PATH" }`, `{ credential = "NAME" }`),
//! reading a resolved table into a section's type ([`settings`]) and
//! reading the file itself ([`file`]: TOML errors at file:line:col, a
//! source's or action's table checked and resolved, a problem pinned to
//! the line of the key it names).
//!
//! Imports nothing of the daemon. Each stage owns its section's type and
//! checks its values (`ingress::SourceConfig`, `store::StoreConfig`,
//! `dispatch::{DeliveryConfig, ActionConfig}`, `listener::{HttpLimits,
//! AdminConfig}`); the whole file is composed where the stages are
//! assembled, in `app::config`.

pub mod de;
pub mod file;
mod pinpoint;
mod problem;
pub mod rate;
mod secret;
pub mod settings;

pub use pinpoint::KeyLines;
pub use problem::{line_col, Problem, Problems};
pub use secret::{
    literal_secrets, looks_like_secret_key, names_a_place, resolve_secrets, SecretError,
};
