//! The queue benchmark's other side: makes the queue or stream the action
//! publishes into, reads how many messages it holds, and measures the
//! broker's own publish rate from one client in the same run — persistent
//! messages published in windows whose confirms (AMQP) or acks (JetStream)
//! are awaited together, as the actions do: the reference the actions'
//! rates are reported against.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Amqp,
    Nats,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Op {
    /// Make the durable queue (AMQP) or the file-backed stream taking
    /// `<name>.>` (NATS).
    Declare,
    /// Print how many messages it holds.
    Depth,
    /// Publish `count` messages of `bytes` and print the rate.
    Publish,
}

#[derive(Args)]
pub struct Options {
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long, value_enum)]
    op: Op,
    /// amqp://user:pass@127.0.0.1:5672/%2f or nats://user:pass@127.0.0.1:4222
    #[arg(long)]
    url: String,
    /// The queue (AMQP) or the stream (NATS).
    #[arg(long, default_value = "webhooks")]
    name: String,
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Messages whose confirms are awaited together.
    #[arg(long, default_value_t = 256)]
    window: usize,
    #[arg(long, default_value_t = 1024)]
    bytes: usize,
}

pub async fn run(o: Options) -> Result<()> {
    match o.kind {
        Kind::Amqp => amqp(o).await,
        Kind::Nats => nats(o).await,
    }
}

async fn amqp(o: Options) -> Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(&o.url, ConnectionProperties::default())
        .await
        .context("rabbitmq")?;
    let ch = conn.create_channel().await?;
    match o.op {
        Op::Declare | Op::Depth => {
            let options = QueueDeclareOptions {
                durable: true,
                passive: matches!(o.op, Op::Depth),
                ..Default::default()
            };
            let q = ch
                .queue_declare(o.name.as_str().into(), options, FieldTable::default())
                .await?;
            if matches!(o.op, Op::Depth) {
                println!("{}", q.message_count());
            }
        }
        Op::Publish => {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let body = vec![b'x'; o.bytes];
            let start = Instant::now();
            let mut sent = 0;
            while sent < o.count {
                let n = o.window.min(o.count - sent);
                let mut confirms = Vec::with_capacity(n);
                for _ in 0..n {
                    let props = BasicProperties::default().with_delivery_mode(2);
                    confirms.push(
                        ch.basic_publish(
                            "".into(),
                            o.name.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            props,
                        )
                        .await?,
                    );
                }
                for c in confirms {
                    if !c.await?.is_ack() {
                        bail!("a nack");
                    }
                }
                sent += n;
            }
            report(sent, start);
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

async fn nats(o: Options) -> Result<()> {
    use async_nats::jetstream::{self, stream};
    // nats://user:password@host:port: the credentials as options.
    let (rest, auth) = match o
        .url
        .strip_prefix("nats://")
        .and_then(|r| r.rsplit_once('@'))
    {
        Some((userinfo, host)) => (format!("nats://{host}"), userinfo.split_once(':')),
        None => (o.url.clone(), None),
    };
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = auth {
        options = options.user_and_password(user.into(), password.into());
    }
    let client = options.connect(rest.as_str()).await.context("nats")?;
    let js = jetstream::new(client);
    match o.op {
        Op::Declare => {
            js.get_or_create_stream(stream::Config {
                name: o.name.clone(),
                subjects: vec![format!("{}.>", o.name)],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        }
        Op::Depth => {
            let mut s = js.get_stream(&o.name).await?;
            println!("{}", s.info().await?.state.messages);
        }
        Op::Publish => {
            let body = bytes::Bytes::from(vec![b'x'; o.bytes]);
            let subject = format!("{}.reference", o.name);
            let start = Instant::now();
            let mut sent = 0;
            while sent < o.count {
                let n = o.window.min(o.count - sent);
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    acks.push(js.publish(subject.clone(), body.clone()).await?);
                }
                for a in acks {
                    a.await?;
                }
                sent += n;
            }
            report(sent, start);
        }
    }
    Ok(())
}

fn report(sent: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "published": sent, "seconds": secs, "rate": (sent as f64 / secs).round() })
    );
}
