//! The router as a library: mounted under a path of another program's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use warp::Filter;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_in_a_test_program_under_its_own_path() {
    let env = Env::new();
    let config_path = env.standard();
    std::env::set_var("SWITCHYARD_IT_SECRET", SECRET);
    let (config, _) = switchyard::app::config::load(&config_path).unwrap();
    let app = switchyard::Switchyard::start(config).await.unwrap();

    let own = warp::path("status").map(|| "mine");
    let routes = own.or(warp::path!("api" / "v1" / ..).and(app.filter()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                let _ = stop_rx.await;
            })
            .run(),
    );

    let body = invoice_viewed("inv_embedded");
    let token = tokio::task::spawn_blocking({
        let body = body.clone();
        move || pyjwt(SECRET, body.as_bytes(), &[])
    })
    .await
    .unwrap();
    let (status, own_page) = tokio::task::spawn_blocking(move || {
        let client = reqwest::blocking::Client::new();
        let status = client
            .post(format!("http://{addr}/api/v1/hooks/tight"))
            .header("Tight-Verification", token)
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16();
        let own = reqwest::blocking::get(format!("http://{addr}/status"))
            .unwrap()
            .text()
            .unwrap();
        (status, own)
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(own_page, "mine");

    let lines = tokio::task::spawn_blocking(move || {
        let lines = env.wait_audit(1);
        (lines, env)
    })
    .await
    .unwrap();
    assert_eq!(lines.0.len(), 1);
    assert_eq!(lines.0[0]["params"]["invoice"], "inv_embedded");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .unwrap();
}

#[test]
fn the_embed_example_runs() {
    let example = target_dir().join("examples/embed");
    assert!(
        example.exists(),
        "{} is built by cargo test",
        example.display()
    );
    let env = Env::new();
    let config = env.standard();
    let mut child = Command::new(&example)
        .arg(&config)
        .arg("127.0.0.1:0")
        .env("SWITCHYARD_IT_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("example prints its address")
        .to_string();
    let body = invoice_viewed("inv_example");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .post(format!("http://{addr}/integrations/hooks/tight"))
        .header("Tight-Verification", token)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        client
            .get(format!("http://{addr}/"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "the host program's own page"
    );
    assert_eq!(env.wait_audit(1).len(), 1);
    drop(child.stdin.take()); // closing stdin stops it
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "example did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}
