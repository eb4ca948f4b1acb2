//! A small W3C WebDriver client for Debian's chromium + chromedriver (headless): enough to sign
//! in, fill forms, click, type into the terminal, read the page, and save screenshots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser at a time: two chromiums beside a server and agents on two cores make page waits
/// time out (seen once in a full run); the browser scenarios take turns instead.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Browser {
    _turn: std::sync::MutexGuard<'static, ()>,
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let d = bin_dir()
        .parent()
        .map(|p| p.join("screenshots"))
        .unwrap_or_else(|| PathBuf::from("target/screenshots"));
    let _ = std::fs::create_dir_all(&d);
    d
}

impl Browser {
    /// Starts chromedriver and a headless chromium; `None` (the test is skipped) when they are
    /// not installed, except in CI (`OUTPOST_CI=1`), where that is a failure.
    pub fn start() -> R<Option<Browser>> {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let (Some(driver_bin), Some(chromium)) = (driver_bin, chromium) else {
            if std::env::var_os("OUTPOST_CI").is_some() {
                anyhow::bail!("chromium and chromium-driver are required in CI (scripts/ci-services.sh installs them)");
            }
            eprintln!("SKIPPED (no chromium/chromedriver): browser tests");
            return Ok(None);
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir()?;
        let mut b = Browser {
            _turn: turn,
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = b.call("GET", "/status", None) {
                if v["ready"] == true {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-extensions", "--no-first-run",
                    "--window-size=1280,860",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session: {v}"))?
            .to_string();
        Ok(Some(b))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> R<Value> {
        let url = if path == "/status" || path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        rt().block_on(async move {
            let mut rb = reqwest::Client::new()
                .request(method, &url)
                .timeout(Duration::from_secs(60));
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let resp = rb.send().await?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            anyhow::ensure!(status.is_success(), "webdriver {url}: {status}: {v}");
            Ok(v["value"].clone())
        })
    }

    pub fn goto(&self, url: &str) -> R {
        self.call("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    pub fn refresh(&self) -> R {
        self.call("POST", "/refresh", Some(json!({})))?;
        Ok(())
    }

    pub fn url(&self) -> R<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn find(&self, css: &str) -> R<String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(v[ELEMENT].as_str().unwrap_or_default().to_string())
    }

    /// Waits (up to 30 s) for an element, then returns it.
    pub fn wait_find(&self, css: &str) -> R<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(e) = self.find(css) {
                return Ok(e);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no {css} on {}: {}",
                self.url()?,
                self.text("body").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) -> R {
        let e = self.wait_find(css)?;
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})))?;
        Ok(())
    }

    pub fn type_into(&self, css: &str, text: &str) -> R {
        let e = self.wait_find(css)?;
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    pub fn text(&self, css: &str) -> R<String> {
        let e = self.find(css)?;
        Ok(self
            .call("GET", &format!("/element/{e}/text"), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn exec(&self, script: &str, args: Value) -> R<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` as an async function body (it gets its result from `await`/`return`).
    pub fn exec_async(&self, script: &str) -> R<Value> {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, (e) => done('error: ' + e));"
        );
        self.call(
            "POST",
            "/execute/async",
            Some(json!({ "script": wrapped, "args": [] })),
        )
    }

    /// Waits (up to `secs`) until `js` (an expression) is truthy; returns its value.
    pub fn wait_js(&self, js: &str, secs: u64) -> R<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.exec(&format!("return {js};"), json!([]))?;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return Ok(v);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "waited {secs}s for `{js}` on {}; page text: {}",
                self.url()?,
                self.text("body").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn set_size(&self, w: u32, h: u32) -> R {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": w, "height": h})),
        )?;
        Ok(())
    }

    pub fn delete_cookies(&self) -> R {
        self.call("DELETE", "/cookie", None)?;
        Ok(())
    }

    /// Opens a new tab and switches to it; returns (old, new) window handles.
    pub fn new_tab(&self) -> R<(String, String)> {
        let old = self
            .call("GET", "/window", None)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let v = self.call("POST", "/window/new", Some(json!({"type": "tab"})))?;
        let new = v["handle"].as_str().unwrap_or_default().to_string();
        self.switch_to(&new)?;
        Ok((old, new))
    }

    pub fn current_tab(&self) -> R<String> {
        Ok(self
            .call("GET", "/window", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits for a tab other than `known` to appear (a link with target=_blank) and returns it.
    pub fn wait_new_tab(&self, known: &str) -> R<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let handles = self.call("GET", "/window/handles", None)?;
            if let Some(h) = handles
                .as_array()
                .and_then(|a| a.iter().filter_map(|h| h.as_str()).find(|h| *h != known))
            {
                return Ok(h.to_string());
            }
            anyhow::ensure!(Instant::now() < deadline, "no new tab opened");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Accepts a confirm() dialog.
    pub fn accept_alert(&self) -> R {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.call("POST", "/alert/accept", Some(json!({}))).is_ok() {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "no dialog to accept");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes the current tab (switch to another one afterwards).
    pub fn close_tab(&self) -> R {
        self.call("DELETE", "/window", None)?;
        Ok(())
    }

    pub fn switch_to(&self, handle: &str) -> R {
        self.call("POST", "/window", Some(json!({ "handle": handle })))?;
        Ok(())
    }

    /// Signs in through the dashboard's form and waits for the workspaces page.
    pub fn sign_in(&self, url: &str, user: &str, password: &str) -> R {
        self.goto(&format!("{url}/login"))?;
        self.type_into("#username", user)?;
        self.type_into("#password", password)?;
        self.click("#signin")?;
        self.wait_js("document.body.dataset.page === 'home'", 30)?;
        Ok(())
    }

    /// Replaces an input's text by typing (after clearing it).
    pub fn set_input(&self, css: &str, text: &str) -> R {
        self.wait_find(css)?;
        self.exec(
            "document.querySelector(arguments[0]).value = '';",
            serde_json::json!([css]),
        )?;
        self.type_into(css, text)
    }

    /// Waits until element `id`'s text contains `needle`; returns the text.
    pub fn wait_text(&self, id: &str, needle: &str) -> R<String> {
        let v = self.wait_js(
            &format!(
                "(document.getElementById({id}) || {{}}).textContent && document.getElementById({id}).textContent.includes({needle}) && document.getElementById({id}).textContent",
                id = serde_json::json!(id),
                needle = serde_json::json!(needle)
            ),
            30,
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// A PNG of one element, as a `data:` URL (the page can decode it into a canvas).
    pub fn element_png_data_url(&self, css: &str) -> R<String> {
        let e = self.wait_find(css)?;
        let v = self.call("GET", &format!("/element/{e}/screenshot"), None)?;
        Ok(format!(
            "data:image/png;base64,{}",
            v.as_str().unwrap_or_default()
        ))
    }

    /// Moves the mouse to `(x, y)` CSS pixels from the element's top-left corner and clicks
    /// there (WebDriver actions: what a user's pointer does).
    pub fn click_at(&self, css: &str, x: f64, y: f64) -> R {
        let e = self.wait_find(css)?;
        let rect = self.call("GET", &format!("/element/{e}/rect"), None)?;
        let w = rect["width"].as_f64().unwrap_or(0.0);
        let h = rect["height"].as_f64().unwrap_or(0.0);
        // Pointer offsets are from the element's centre, whole pixels.
        let (dx, dy) = ((x - w / 2.0).round() as i64, (y - h / 2.0).round() as i64);
        let mut o = serde_json::Map::new();
        o.insert(ELEMENT.to_string(), json!(e));
        let origin = Value::Object(o);
        self.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "duration": 0, "origin": origin, "x": dx, "y": dy},
                    {"type": "pause", "duration": 300},
                    {"type": "pointerMove", "duration": 100, "origin": origin, "x": dx + 1, "y": dy},
                    {"type": "pause", "duration": 300},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0}
                ]
            }]})),
        )?;
        Ok(())
    }

    /// Presses Tab (as a keyboard user moves focus).
    pub fn press_tab(&self) -> R {
        self.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "key", "id": "keyboard",
                "actions": [{"type": "keyDown", "value": "\u{E004}"}, {"type": "keyUp", "value": "\u{E004}"}]
            }]})),
        )?;
        Ok(())
    }

    /// Grants the page's origin a permission (`clipboard-read`, ...), as a user would.
    pub fn grant(&self, permission: &str) -> R {
        self.call(
            "POST",
            "/permissions",
            Some(json!({"descriptor": {"name": permission}, "state": "granted"})),
        )?;
        Ok(())
    }

    /// Runs axe-core (from npm, `control/web/node_modules`) on the page: the serious and
    /// critical violations, as `rule: target, ...` lines.
    pub fn axe_violations(&self) -> R<Vec<String>> {
        let axe = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../control/web/node_modules/axe-core/axe.min.js"),
        )?;
        // Load axe into the page (as a script the driver runs, not one the page fetches).
        self.exec(&format!("{axe}\nreturn typeof axe;"), json!([]))?;
        let v = self.exec_async(
            "const r = await axe.run(document, { resultTypes: ['violations'] }); \
             return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical') \
               .map((v) => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);",
        )?;
        anyhow::ensure!(v.is_array(), "axe did not run: {v}");
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect())
    }

    pub fn screenshot(&self, name: &str) -> R {
        let v = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or(""))?;
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png)?;
        Ok(())
    }
}
