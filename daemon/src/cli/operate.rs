//! Where the CLI's operations go: the running daemon, through its admin API
//! (its local socket `admin.sock` in `data_dir`, else `[admin]` in the
//! config), so that what the daemon holds in memory (its
//! dispatcher, its gates) learns of them at once and its log shows them; or,
//! when no daemon answers there, the store itself through the same
//! operations (`switchyard::admin::ops`). Both give the same answers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use switchyard::admin::ops::{self, ActionRow, Enabled, Redrive, Redriven, Replayed};
use switchyard::admin::types::{self, Release, Released, TypeDetail, TypeSummary};
use switchyard::app::config::{self, Config};
use switchyard::store::{EventFilter, EventSummary, JobRecord, Store};

/// A running daemon's admin API: its local socket, or its `[admin]`
/// listener with the token.
pub struct Api {
    via: Via,
    client: reqwest::blocking::Client,
}

enum Via {
    Socket(std::path::PathBuf),
    Tcp {
        addr: std::net::SocketAddr,
        token: String,
    },
}

/// The operations' target for one command.
pub enum Target {
    Api(Api),
    Store {
        store: Arc<dyn Store>,
        config: Box<Config>,
        runtime: tokio::runtime::Runtime,
    },
}

/// The admin API of the config's daemon that answers now: its local
/// socket in `data_dir` (no token: the socket's mode is the check), else
/// the `[admin]` listener if the config has one.
pub fn api(config: &Config) -> Option<Api> {
    let socket = switchyard::listener::socket::path(&config.data_dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        let client = client(reqwest::blocking::Client::builder().unix_socket(socket.clone()))?;
        return Some(Api {
            via: Via::Socket(socket),
            client,
        });
    }
    let admin = config.admin.as_ref()?;
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    Some(Api {
        via: Via::Tcp {
            addr,
            token: admin.token.clone(),
        },
        client: client(reqwest::blocking::Client::builder())?,
    })
}

fn client(builder: reqwest::blocking::ClientBuilder) -> Option<reqwest::blocking::Client> {
    builder.timeout(Duration::from_secs(60)).build().ok()
}

impl Api {
    /// Where the API is, for messages.
    fn place(&self) -> String {
        match &self.via {
            Via::Socket(path) => path.display().to_string(),
            Via::Tcp { addr, .. } => format!("http://{addr}"),
        }
    }

    /// Calls a route; its JSON answer, or its error message as the error.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<T> {
        let (ok, answer) = self.send(method, path, query, body)?;
        if !ok {
            let message = answer["error"].as_str().unwrap_or("refused").to_string();
            bail!("the daemon refused: {message}");
        }
        serde_json::from_value(answer).context("the daemon's answer is not what was expected")
    }

    /// Calls a route with query parameters; whether it succeeded, and its
    /// JSON answer either way.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<(bool, Value)> {
        let host = match &self.via {
            Via::Socket(_) => "localhost".to_string(),
            Via::Tcp { addr, .. } => addr.to_string(),
        };
        let mut url = reqwest::Url::parse(&format!("http://{host}{path}"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.client.request(method, url);
        if let Via::Tcp { token, .. } = &self.via {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().with_context(|| {
            format!(
                "cannot reach the daemon's admin API at {} (is it running?)",
                self.place()
            )
        })?;
        let ok = response.status().is_success();
        Ok((ok, response.json().unwrap_or(Value::Null)))
    }
}

/// The running daemon's API when it answers, else the store of the config.
pub fn target(path: &std::path::Path) -> Result<Target> {
    let partial = config::load_partial(path).map_err(|p| anyhow!("{p}"))?;
    if let Some(api) = api(&partial.config) {
        return Ok(Target::Api(api));
    }
    let config = partial.config;
    if config.store.url.is_none() && !config.store.path.exists() {
        bail!(
            "no store at {} yet (it is made when the daemon first runs)",
            config.store.path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store: Arc<dyn Store> = runtime
        .block_on(switchyard::app::open_store(&config, false))
        .map_err(|p| anyhow!("{p}"))?;
    Ok(Target::Store {
        store,
        config: Box::new(config),
        runtime,
    })
}

#[derive(Deserialize)]
struct Events {
    events: Vec<EventSummary>,
}

#[derive(Deserialize)]
struct DeadLetters {
    dead_letters: Vec<JobRecord>,
}

#[derive(Deserialize)]
struct Actions {
    actions: Vec<ActionRow>,
}

impl Target {
    /// Runs an operation on the store (this is the store target).
    fn local<'a, F: std::future::Future>(
        &'a self,
        op: impl FnOnce(&'a dyn Store, &'a Config) -> F,
    ) -> F::Output {
        let Target::Store {
            store,
            config,
            runtime,
        } = self
        else {
            unreachable!("local operations run on the store")
        };
        runtime.block_on(op(store.as_ref(), config))
    }

    pub fn list_events(&self, filter: EventFilter) -> Result<Vec<EventSummary>> {
        match self {
            Target::Api(api) => {
                let mut query = filter.to_query();
                query.extend(
                    [("before", filter.before), ("after", filter.after)]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?))),
                );
                query.push(("limit", filter.limit.to_string()));
                Ok(api
                    .call::<Events>("GET", "/v1/events", &query, None)?
                    .events)
            }
            Target::Store { .. } => Ok(self.local(|s, _| ops::list_events(s, filter))?),
        }
    }

    pub fn show_event(&self, id: String) -> Result<Value> {
        match self {
            Target::Api(api) => api.call("GET", &format!("/v1/events/{id}"), &[], None),
            Target::Store { .. } => {
                let detail = self.local(|s, _| ops::show_event(s, id))?;
                Ok(serde_json::to_value(detail)?)
            }
        }
    }

    pub fn replay(&self, id: String) -> Result<Replayed> {
        match self {
            Target::Api(api) => api.call("POST", &format!("/v1/events/{id}/replay"), &[], None),
            Target::Store { .. } => Ok(self.local(|s, _| ops::replay(s, id))?),
        }
    }

    pub fn dead_letters(&self, limit: usize) -> Result<Vec<JobRecord>> {
        match self {
            Target::Api(api) => Ok(api
                .call::<DeadLetters>(
                    "GET",
                    "/v1/dead-letters",
                    &[("limit", limit.to_string())],
                    None,
                )?
                .dead_letters),
            Target::Store { .. } => Ok(self.local(|s, _| ops::dead_letters(s, limit))?),
        }
    }

    pub fn redrive(&self, which: Redrive) -> Result<Redriven> {
        match self {
            Target::Api(api) => api.call(
                "POST",
                "/v1/dead-letters/redrive",
                &[],
                Some(serde_json::to_value(&which)?),
            ),
            Target::Store { .. } => Ok(self.local(|s, _| ops::redrive(s, which))?),
        }
    }

    pub fn actions(&self) -> Result<Vec<ActionRow>> {
        match self {
            Target::Api(api) => Ok(api
                .call::<Actions>("GET", "/v1/actions", &[], None)?
                .actions),
            Target::Store { .. } => Ok(self.local(ops::actions)?),
        }
    }

    pub fn pause_action(&self, name: String) -> Result<ops::Paused> {
        match self {
            Target::Api(api) => api.call("POST", &format!("/v1/actions/{name}/pause"), &[], None),
            Target::Store { .. } => Ok(self.local(|s, c| ops::pause_action(s, c, name, "CLI"))?),
        }
    }

    pub fn types(&self, source: Option<String>) -> Result<Vec<TypeSummary>> {
        #[derive(Deserialize)]
        struct Types {
            types: Vec<TypeSummary>,
        }
        match self {
            Target::Api(api) => {
                let query: Vec<(&str, String)> =
                    source.into_iter().map(|s| ("source", s)).collect();
                Ok(api.call::<Types>("GET", "/v1/types", &query, None)?.types)
            }
            Target::Store { .. } => {
                let catalog = self.catalog()?;
                Ok(self.local(|s, _| types::types(s, &catalog, source))?)
            }
        }
    }

    pub fn show_type(&self, source: String, kind: String) -> Result<TypeDetail> {
        match self {
            Target::Api(api) => api.call("GET", &format!("/v1/types/{source}/{kind}"), &[], None),
            Target::Store { .. } => {
                let catalog = self.catalog()?;
                Ok(self.local(|s, _| types::show_type(s, &catalog, source, kind))?)
            }
        }
    }

    pub fn release(&self, which: Release) -> Result<Released> {
        match self {
            Target::Api(api) => api.call(
                "POST",
                "/v1/events/release",
                &[],
                Some(serde_json::to_value(&which)?),
            ),
            Target::Store { .. } => Ok(self.local(|s, _| types::release(s, which))?),
        }
    }

    /// With no daemon running, the catalog made from the config's plugins.
    fn catalog(&self) -> Result<switchyard::catalog::Catalog> {
        let Target::Store { config, .. } = self else {
            unreachable!("the store target's")
        };
        switchyard::app::catalog_for(config).map_err(|p| anyhow!("{p}"))
    }

    pub fn enable_action(&self, name: String) -> Result<Enabled> {
        match self {
            Target::Api(api) => api.call("POST", &format!("/v1/actions/{name}/enable"), &[], None),
            Target::Store { .. } => Ok(self.local(|s, c| ops::enable_action(s, c, name))?),
        }
    }
}
