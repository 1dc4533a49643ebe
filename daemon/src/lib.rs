//! # Switchyard
//!
//! A webhook event router: SaaS providers post webhooks; provider plugins
//! verify and normalize them into events; rhai rules decide what happens;
//! action plugins do it.
//!
//! The data flow, one stage per module; each module imports only the layers
//! before it, no stage a later one, the services (host, store, rules) no
//! stage (`ARCHITECTURE.md`):
//! ```text
//! ingress ──verify──▶ host (provider plugins, call pool)
//!    └──request + events──▶ store ──▶ 2xx
//! router:   store (unrouted) ──▶ rules (sandboxed rhai) ──▶ store (routing + jobs)
//! dispatch: store (due jobs) ──▶ host (action plugins) ──▶ store (attempts)
//! ```
//! In the order of the flow (see `ARCHITECTURE.md` at the repository root):
//! - [`ingress`]: the warp filter for `POST /hooks/{source}`.
//! - [`host`]: loading plugin libraries through the C ABI, instances, the call pool.
//! - [`store`]: the durable store (SQLite, group commit) behind its
//!   `Pipeline` and `Operations` interfaces.
//! - [`router`]: routing stored events, recording their jobs.
//! - [`rules`]: compiling and running rule scripts.
//! - [`dispatch`]: running jobs on action plugins, with retries and dead letters.
//! - [`admin`]: the operations people ask for, and the admin API.
//! - [`subscriptions`]: the providers' side: the webhooks a source declares
//!   made real at its provider (`switchyard subscriptions`), and watched.
//!
//! Each stage owns its config section's type (`ingress::SourceConfig`,
//! `store::StoreConfig`, `dispatch::{DeliveryConfig, ActionConfig}`,
//! `listener::{HttpLimits, AdminConfig}`). Beside them: [`config`] (the
//! leaves: problems with file:line, value formats, secrets, reading the
//! file), [`event`] (the envelope), [`metrics`], [`listener`] (the sockets
//! and their server, with connection deadlines and bounds), [`app`]
//! ([`Switchyard`], the embeddable whole that wires the stages, and
//! [`Config`], the whole file composed from the sections) and [`server`]
//! (the standalone daemon: app, admin and listeners together, signals,
//! systemd).
//!
//! ## Embedding
//! ```no_run
//! # async fn example(config: switchyard::Config) {
//! use warp::Filter;
//! let app = switchyard::Switchyard::start(config).await.expect("valid config");
//! let routes = warp::path("webhooks").and(app.filter());
//! // serve `routes` with warp; POST /webhooks/hooks/{source}
//! # }
//! ```

// The stages, in the order of the flow.
// 1. A webhook arrives,
pub mod ingress;
// 2. its provider plugin verifies it,
pub mod host;
// 3. it is stored before the answer,
pub mod store;
// 4. checked against its type's schema,
pub mod catalog;
// 5. routed
pub mod router;
// 6. through the rules,
pub mod rules;
// 7. whose jobs are carried out by action plugins.
pub mod dispatch;
// People look at and act on all of it.
pub mod admin;
// The providers are told where to post, and kept at it.
pub mod subscriptions;

pub mod app;
pub mod config;
pub mod event;
pub mod listener;
pub mod metrics;
pub mod server;
pub mod telemetry;

pub use app::Config;
pub use app::{check, Switchyard};
