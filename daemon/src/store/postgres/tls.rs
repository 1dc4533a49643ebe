//! How the store reaches the database: in TLS when the URL asks for it
//! (`?sslmode=require`), the server's certificate verified against the
//! system's roots and `[store] ca_file`; in the clear otherwise (the URL
//! says nothing, `prefer` or `disable`). Never TLS without verification:
//! a database reached in TLS is one whose certificate a trusted issuer
//! signed for the host in the URL.

use std::path::Path;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, StoreResult};

#[derive(Clone)]
pub(super) enum Tls {
    Clear,
    Verified(MakeRustlsConnect),
}

/// A connection of its own (not pooled): its client, the notifications it
/// hears (their payloads), and the task driving it (ends when it closes).
pub(super) struct Connected {
    pub client: Client,
    pub notices: mpsc::UnboundedReceiver<String>,
    pub driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Tls {
    /// What `config`'s `sslmode` asks for, trusting the system's roots and
    /// the certificates in `ca_file` (PEM).
    pub(super) fn for_config(config: &Config, ca_file: Option<&Path>) -> StoreResult<Tls> {
        if config.get_ssl_mode() != SslMode::Require {
            return Ok(Tls::Clear);
        }
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(file) = ca_file {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Other(format!("[store] ca_file {}: {e}", file.display()))
                })?;
            if certs.is_empty() {
                return Err(StoreError::Other(format!(
                    "[store] ca_file {}: no certificate in it",
                    file.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    StoreError::Other(format!("[store] ca_file {}: {e}", file.display()))
                })?;
            }
        }
        if roots.is_empty() {
            return Err(StoreError::Other(
                "sslmode=require, but no trusted roots: none in the system's store and no \
                 [store] ca_file"
                    .into(),
            ));
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::Verified(MakeRustlsConnect::new(client)))
    }

    /// A pool's connection manager.
    pub(super) fn manager(&self, config: Config) -> Manager {
        let fast = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        match self {
            Tls::Clear => Manager::from_config(config, NoTls, fast()),
            Tls::Verified(tls) => Manager::from_config(config, tls.clone(), fast()),
        }
    }

    /// Opens a connection of its own.
    pub(super) async fn connect(
        &self,
        config: &Config,
    ) -> Result<Connected, tokio_postgres::Error> {
        match self {
            Tls::Clear => connect_with(config, NoTls).await,
            Tls::Verified(tls) => connect_with(config, tls.clone()).await,
        }
    }
}

async fn connect_with<T>(config: &Config, tls: T) -> Result<Connected, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, notices) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    Ok(Connected {
        client,
        notices,
        driver,
    })
}
