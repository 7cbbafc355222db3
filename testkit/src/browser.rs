//! Debian's headless Chromium driven over W3C WebDriver (chromedriver), for the
//! dashboard's browser test. The few WebDriver commands a test needs (new session,
//! navigate, execute script, screenshot) over the kit's HTTP client: a WebDriver
//! crate would add some forty crates to the build for these four calls.

use crate::{free_port, Client};
use http::Method;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session (`width`×`height` window).
    pub async fn start(width: u32, height: u32) -> Result<Self, String> {
        let port = free_port();
        // Its own process group: Chromium and its helpers go with it, even when a test fails
        // before it could end the session.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER}: {e} (make deps installs chromium-driver)"))?;
        let client = Client::new(([127, 0, 0, 1], port).into());
        let mut browser = Browser { driver, client, session: String::new() };
        let ready = crate::eventually(Duration::from_secs(20), || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        if !ready {
            return Err("chromedriver did not start".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--hide-scrollbars"],
            },
        }}});
        let created = browser.command(Method::POST, "/session", Some(caps)).await?;
        browser.session =
            created["sessionId"].as_str().ok_or_else(|| format!("no session id in {created}"))?.to_string();
        Ok(browser)
    }

    /// One WebDriver command; the answer's `value`, or its error message.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let a = self.client.send(method, path, body.map(|b| b.to_string())).await;
        if !a.status.is_success() {
            return Err(format!("WebDriver {path}: {} {}", a.status, a.text));
        }
        Ok(a.json["value"].clone())
    }

    fn at(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    /// Loads `url` and returns when the page's load event has fired.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.command(Method::POST, &self.at("/url"), Some(json!({"url": url}))).await.map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Result<Value, String> {
        self.command(Method::POST, &self.at("/execute/sync"), Some(json!({"script": script, "args": args}))).await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let v = self.command(Method::GET, &self.at("/screenshot"), None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or("screenshot: not a string")?)
            .map_err(|e| format!("screenshot: {e}"))
    }

    /// Ends the session (Chromium quits) and then chromedriver.
    pub async fn close(self) {
        let _ = self.command(Method::DELETE, &self.at(""), None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver, Chromium and Chromium's helpers.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test that fails before it ends its session leaves no Chromium behind.
    #[tokio::test]
    async fn dropping_the_browser_ends_chromium_and_its_helpers() {
        let browser = Browser::start(400, 300).await.expect("chromium");
        browser.goto("about:blank").await.expect("navigate");
        let group = browser.driver.id();
        let alive =
            || Command::new("kill").args(["-0", "--", &format!("-{group}")]).status().is_ok_and(|s| s.success());
        assert!(alive(), "chromedriver and Chromium run in their own group");
        drop(browser);
        let gone = crate::eventually(Duration::from_secs(10), || async { !alive() }).await;
        assert!(gone, "a process of the browser's group outlived it");
    }
}
