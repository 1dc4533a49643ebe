//! A real browser for the dashboard's tests: Debian's `chromium`, headless,
//! driven over WebDriver (`chromedriver`) with fantoccini. Host names other
//! than 127.0.0.1 do not resolve in it, so a page that tried to load from
//! elsewhere would fail to; [`Browser::check_page`] also asserts that every
//! resource a page loaded came from the daemon and that the console holds
//! no Content-Security-Policy violation.
//!
//! Without `chromedriver` the tests say so and pass, except under CI
//! (`CI` set), where `.ci/run` installs it and its absence fails them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const DRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where screenshots go (`SWITCHYARD_SCREENSHOTS`), if anywhere.
    shots: Option<PathBuf>,
}

/// `chromedriver`'s legacy log endpoint, which Chromium still answers: the
/// console's messages since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// A headless Chromium, or `None` (and a note) where there is none.
    pub fn start() -> Option<Browser> {
        if !Path::new(DRIVER).exists() || !Path::new(CHROMIUM).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{DRIVER} and {CHROMIUM} are needed (apt-get install chromium chromium-driver)"
            );
            eprintln!("no {DRIVER}: the browser test is skipped here");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match rt.block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url),
            ) {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("chromedriver did not answer: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let shots = std::env::var_os("SWITCHYARD_SCREENSHOTS").map(PathBuf::from);
        Some(Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            shots,
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// The first element `css` finds, waiting up to 20 s for it.
    pub fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(
                self.c()
                    .wait()
                    .at_most(Duration::from_secs(20))
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("{css}: {e}\n{}", self.text("body")))
    }

    pub fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .unwrap()
    }

    pub fn text(&self, css: &str) -> String {
        let c = self.c();
        self.rt
            .block_on(async {
                match c.find(Locator::Css(css)).await {
                    // An element the page replaced between finding and
                    // reading it is read again by the caller's next poll.
                    Ok(e) => Ok(e
                        .text()
                        .await
                        .unwrap_or_else(|err| format!("(stale {css}: {err})"))),
                    Err(e) => Ok::<_, fantoccini::error::CmdError>(format!("(no {css}: {e})")),
                }
            })
            .unwrap()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.rt.block_on(async {
            e.clear().await.unwrap();
            e.send_keys(text).await.unwrap();
        });
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.rt.block_on(e.click()).unwrap();
    }

    /// Waits (up to 20 s) until `css`'s text contains `text`.
    pub fn wait_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.text(css);
            if now.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said {text:?}: {now}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn script(&self, js: &str) -> Value {
        self.rt.block_on(self.c().execute(js, vec![])).unwrap()
    }

    /// Asserts what every page must: everything it loaded came from
    /// `origin`, and the console shows no CSP violation (or other error).
    pub fn check_page(&self, origin: &str) {
        let loaded = self.script(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .concat([location.href]);",
        );
        for name in loaded.as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(
                name.starts_with(&format!("{origin}/")),
                "{} loaded {name} from outside the daemon",
                self.url()
            );
        }
        let log = self.rt.block_on(self.c().issue_cmd(BrowserLog)).unwrap();
        for entry in log.as_array().unwrap() {
            let message = entry["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("Content Security Policy") && entry["level"] != "SEVERE",
                "{}: the console says {message}",
                self.url()
            );
        }
    }

    /// Saves a screenshot as `<name>.png` where `SWITCHYARD_SCREENSHOTS`
    /// says (the README's pictures are taken this way).
    pub fn screenshot(&self, name: &str) {
        let Some(dir) = &self.shots else { return };
        // The whole page, up to a tall screen's worth.
        let height = self.script("return document.documentElement.scrollHeight;");
        let height = height.as_u64().unwrap_or(900).clamp(600, 2400) as u32;
        self.rt
            .block_on(self.c().set_window_size(1280, height + 90))
            .unwrap();
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        self.rt
            .block_on(self.c().set_window_size(1280, 900))
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
