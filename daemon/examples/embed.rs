//! Mounting Switchyard inside another tokio + warp program.
//!
//! The host program keeps its own routes and mounts the webhook router under
//! `/integrations`, so providers post to `/integrations/hooks/{source}`.
//!
//! ```text
//! cargo run -p switchyard --example embed -- switchyard.toml 127.0.0.1:3000
//! ```
//! It prints `listening on ADDR` once it serves, and stops on Ctrl-C or when
//! its standard input closes.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use warp::Filter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let config_path = args.next().unwrap_or_else(|| "switchyard.toml".into());
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;

    let (config, _warnings) = switchyard::Config::load(config_path.as_ref())?;
    let router = switchyard::Switchyard::start(config).await?;

    // The host program's own routes, and Switchyard beside them.
    let home = warp::path::end().map(|| "the host program's own page");
    let routes = home.or(warp::path("integrations").and(router.filter()));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let stop = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { while let Ok(n) = stdin.read(&mut buf).await { if n == 0 { break; } } } => {}
        }
    };
    warp::serve(routes)
        .incoming(listener)
        .graceful(stop)
        .run()
        .await;
    router.shutdown().await;
    Ok(())
}
