//! # Switchyard
//!
//! A webhook event router: SaaS providers post webhooks; provider plugins
//! verify and normalize them into events; rhai rules decide what happens;
//! action plugins do it.
//!
//! The data flow, one stage per module, dependencies pointing one way:
//! ```text
//! ingress ──verify──▶ host (provider plugins, call pool)
//!    └──request + events──▶ store ──▶ 2xx
//! router:   store (unrouted) ──▶ rules (sandboxed rhai) ──▶ store (routing + jobs)
//! dispatch: store (due jobs) ──▶ host (action plugins) ──▶ store (attempts)
//! ```
//! - [`config`]: the TOML file, secrets, problems with file:line.
//! - [`host`]: loading plugin libraries through the C ABI, instances, the call pool.
//! - [`ingress`]: the warp filter for `POST /hooks/{source}`.
//! - [`store`]: the durable store (SQLite, group commit) behind the `Store` interface.
//! - [`router`]: routing stored events, recording their jobs.
//! - [`rules`]: compiling and running rule scripts.
//! - [`dispatch`]: running jobs on action plugins, with retries and dead letters.
//! - [`event`]: the event envelope.
//! - [`app`]: [`Switchyard`], the embeddable whole.
//! - [`server`]: the standalone daemon: both listeners (connection deadlines
//!   and bounds), signals, systemd.
//!
//! ## Embedding
//! ```no_run
//! # async fn example(config: switchyard::config::Config) {
//! use warp::Filter;
//! let app = switchyard::Switchyard::start(config).await.expect("valid config");
//! let routes = warp::path("webhooks").and(app.filter());
//! // serve `routes` with warp; POST /webhooks/hooks/{source}
//! # }
//! ```

pub mod admin;
pub mod app;
pub mod config;
pub mod dispatch;
pub mod event;
pub mod host;
pub mod ingress;
pub mod metrics;
pub mod ops;
pub mod router;
pub mod rules;
pub mod server;
pub mod store;

pub use app::{check, Switchyard};
pub use config::Config;
