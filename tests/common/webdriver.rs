//! A real headless Chromium, driven over the W3C WebDriver protocol by Debian's
//! `chromedriver`: a few JSON calls over reqwest, so the tests need no
//! WebDriver crate. Screenshots go under `target/console-screenshots/`.
//!
//! `MERIDIAN_BROWSER=firefox` runs the same tests in a headless Firefox
//! (`/usr/bin/firefox-esr`, Debian's `firefox-esr`) through `geckodriver`
//! (`MERIDIAN_GECKODRIVER`, else `geckodriver` on the PATH; Debian does not
//! package it: `cargo install --locked geckodriver`). CI runs Chromium only.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const FIREFOX: &str = "/usr/bin/firefox-esr";

/// Whether `MERIDIAN_BROWSER=firefox` asks for Firefox.
pub fn firefox() -> bool {
    std::env::var("MERIDIAN_BROWSER").is_ok_and(|b| b == "firefox")
}

fn geckodriver() -> String {
    std::env::var("MERIDIAN_GECKODRIVER").unwrap_or_else(|_| "geckodriver".to_owned())
}
/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    /// Ends the WebDriver session first, so the driver closes its browser:
    /// killing the driver alone left Chromium running after the tests.
    /// Blocking, over a plain socket: `drop` cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let host = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut socket) = std::net::TcpStream::connect(&host) {
            let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if socket.write_all(request.as_bytes()).is_ok() {
                let _ = socket.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether the browser tests can run here; when they cannot, CI (which sets
/// `MERIDIAN_REQUIRE_BROWSER=1` after installing Chromium) fails instead of skipping.
pub fn available() -> bool {
    if firefox() {
        // Asked for by name: a missing Firefox is a failure, not a skip.
        assert!(
            std::path::Path::new(FIREFOX).exists(),
            "MERIDIAN_BROWSER=firefox needs {FIREFOX}"
        );
        return true;
    }
    let there =
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
    if !there && std::env::var_os("MERIDIAN_REQUIRE_BROWSER").is_some() {
        panic!("MERIDIAN_REQUIRE_BROWSER is set but {CHROMEDRIVER} or {CHROMIUM} is missing");
    }
    if !there {
        eprintln!("skipped: no {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
    }
    there
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = super::free_port();
        let driver = if firefox() {
            Command::new(geckodriver())
                .args(["--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start geckodriver")
        } else {
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver")
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["value"]["ready"].as_bool())
                    == Some(true)
                {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the WebDriver server did not start");
        let caps = if firefox() {
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "firefox",
                "moz:firefoxOptions": {
                    "binary": FIREFOX,
                    "args": ["-headless", format!("--width={width}"), format!("--height={height}")],
                },
            }}})
        } else {
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             format!("--window-size={width},{height}")],
                },
            }}})
        };
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let browser = Self {
            driver,
            base,
            session,
            http,
        };
        if firefox() {
            // Firefox's size arguments are the screen's; the window is set here.
            browser.resize(width, height).await;
        }
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 10 s) until the page's URL contains `part`: a click's
    /// navigation finishes after the click returns.
    pub async fn wait_url(&self, part: &str) -> String {
        for _ in 0..100 {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never reached …{part}…; at {}", self.url().await);
    }

    /// The first element matching a CSS selector (panics when there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match v[ELEMENT].as_str() {
            Some(e) => e.to_owned(),
            None => panic!("no element {css:?}: {v}"),
        }
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array().map_or(0, Vec::len)
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits (up to 10 s) until the first element matching `css` has text
    /// containing `part` (a live region or a preview updates after a request).
    pub async fn wait_text(&self, css: &str, part: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            if self.count(css).await > 0 {
                last = self.text(css).await;
                if last.contains(part) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed {part:?}; it shows {last:?}");
    }

    pub async fn clear(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// Sets an input's value as a picker would (a `datetime-local`'s keyboard
    /// entry depends on the browser's locale) and fires its `input` event.
    pub async fn set_value(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({
                "script": "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
                "args": [{(ELEMENT): e}, value],
            })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Whether the page's document is wider than its window (a horizontal scrollbar).
    pub async fn overflows(&self) -> bool {
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": "return document.documentElement.scrollWidth > window.innerWidth + 1", "args": []})),
            )
            .await;
        v.as_bool().unwrap_or(true)
    }

    /// Saves a PNG of the window under `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = if firefox() { "firefox-" } else { "" };
        let path = dir.join(format!("{prefix}{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}
