//! The dashboard as a Coder user expects it (issue 20), in a real Chromium: the web terminal
//! draws every glyph (the pixels of `_` against a blank cell), keeps its text size per user,
//! copies on select, pastes, opens links and says when it is reconnecting; the workspace page
//! offers only the actions its state allows, with progress and the reason a build failed, how to
//! connect (the exact VS Code and JetBrains Gateway URLs), live statistics with the last hour
//! as sparklines and sessions by kind; the workspaces list shows the template version (outdated
//! marked) and last use; the templates pages show versions with who pushed them, parameters with
//! their validation, outdated workspaces, and let an admin activate an older version; axe-core
//! finds no serious or critical accessibility violation on any page.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

/// The terminal's screen element as decoded RGBA pixels, with its width and height, and the
/// terminal's columns and rows.
struct Shot {
    rgba: Vec<u8>,
    width: usize,
    height: usize,
    cols: usize,
    rows: usize,
}

fn shot(b: &Browser) -> R<Shot> {
    use base64::Engine;
    let url = b.element_png_data_url("#terminal .xterm-screen")?;
    let data = url.trim_start_matches("data:image/png;base64,");
    let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    anyhow::ensure!(channels >= 3, "a {:?} screenshot", info.color_type);
    let mut rgba = Vec::with_capacity(info.width as usize * info.height as usize * 4);
    for px in buf[..info.buffer_size()].chunks(channels) {
        rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    let dims = b.exec(
        "return [window.outpostTerminal.cols, window.outpostTerminal.rows];",
        json!([]),
    )?;
    Ok(Shot {
        rgba,
        width: info.width as usize,
        height: info.height as usize,
        cols: dims[0].as_u64().unwrap_or(1) as usize,
        rows: dims[1].as_u64().unwrap_or(1) as usize,
    })
}

impl Shot {
    fn px(&self, x: usize, y: usize) -> [i32; 3] {
        let i = (y.min(self.height - 1) * self.width + x.min(self.width - 1)) * 4;
        [
            i32::from(self.rgba[i]),
            i32::from(self.rgba[i + 1]),
            i32::from(self.rgba[i + 2]),
        ]
    }

    /// Cell width and height in screenshot pixels.
    fn cell(&self) -> (f64, f64) {
        (
            self.width as f64 / self.cols as f64,
            self.height as f64 / self.rows as f64,
        )
    }

    /// Pixels far from the background colour in cells `[col0, col1)` of `row` (the background
    /// taken from the cell after `col1`, which the test leaves blank).
    fn ink(&self, row: usize, col0: usize, col1: usize) -> usize {
        let (cw, ch) = self.cell();
        let (x0, x1) = ((col0 as f64 * cw) as usize, (col1 as f64 * cw) as usize);
        let (y0, y1) = ((row as f64 * ch) as usize, ((row + 1) as f64 * ch) as usize);
        let bg = self.px(x1 + 2, y0 + 1);
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let p = self.px(x, y);
                if (p[0] - bg[0]).abs() + (p[1] - bg[1]).abs() + (p[2] - bg[2]).abs() > 120 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Draws 20 underscores on row 0 (cursor hidden) and checks their cells have ink: at least half
/// a full-width line each, while 20 blank cells beside them have none.
fn underscores_drawn(b: &Browser, what: &str) -> R {
    b.exec(
        "window.outpostTerminal.write('\\x1b[?25l\\x1b[2J\\x1b[H' + '_'.repeat(20)); return true;",
        json!([]),
    )?;
    b.wait_js(
        "window.outpostScreen().split('\\n')[0].startsWith('_'.repeat(20))",
        10,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let shot = shot(b)?;
    let (cw, ch) = shot.cell();
    let lines = shot.ink(0, 0, 20);
    let blank = shot.ink(0, 40, 60);
    assert_eq!(blank, 0, "{what}: blank cells have ink");
    assert!(
        lines as f64 >= 0.5 * 20.0 * cw,
        "{what}: 20 underscores left {lines} ink pixels in their cells ({cw:.1} x {ch:.1} px each): their bottom rows are clipped"
    );
    Ok(())
}

fn terminal_readable_and_comfortable(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let url = s.url.clone();
    b.sign_in(&url, "admin", "admin-password")?;
    b.goto(&format!("{url}/@admin/dev/terminal"))?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    b.wait_js("document.body.dataset.termState === 'connected'", 5)?;
    assert_eq!(b.text("#font-size")?, "14px");
    underscores_drawn(&b, "14px")?;
    b.screenshot("terminal-underscores")?;

    // The text size: A+ twice, kept across a reload (per user: another user starts at 14px).
    b.click("#font-larger")?;
    b.click("#font-larger")?;
    b.wait_js(
        "document.getElementById('font-size').textContent === '18px'",
        5,
    )?;
    b.refresh()?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    assert_eq!(b.text("#font-size")?, "18px");
    assert_eq!(
        b.exec("return window.outpostTerminal.options.fontSize;", json!([]))?,
        json!(18)
    );
    underscores_drawn(&b, "18px")?;
    b.click("#font-smaller")?;
    b.wait_js(
        "document.getElementById('font-size').textContent === '16px'",
        5,
    )?;
    // Kept for this user (another user of this browser has their own).
    assert_eq!(
        b.exec(
            "return localStorage.getItem('outpost.terminal.fontSize.admin');",
            json!([])
        )?,
        json!("16")
    );

    // Copy on select: the selection lands on the clipboard.
    let _ = b.grant("clipboard-read");
    let _ = b.grant("clipboard-write");
    b.exec(
        "const t = window.outpostTerminal; t.write('\\x1b[2J\\x1b[Hcopy-me-4711 and not this'); return true;",
        json!([]),
    )?;
    b.wait_js("window.outpostScreen().includes('copy-me-4711')", 10)?;
    b.exec(
        "window.outpostTerminal.select(0, 0, 12); return true;",
        json!([]),
    )?;
    b.wait_text("copied", "Copied")?;
    let clip = b.exec_async("return await navigator.clipboard.readText();")?;
    assert_eq!(clip, json!("copy-me-4711"));

    // Paste (as the browser delivers it: a paste event on the terminal's input).
    b.exec(
        "const dt = new DataTransfer(); dt.setData('text/plain', 'echo pasted-$((40+2))');
         document.querySelector('.xterm-helper-textarea').dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
         return true;",
        json!([]),
    )?;
    b.type_into(".xterm-helper-textarea", "\n")?;
    b.wait_js("window.outpostScreen().includes('pasted-42')", 20)?;

    // A link in the output opens in a new tab when clicked.
    let link = format!("{url}/healthz");
    b.type_into(".xterm-helper-textarea", &format!("clear; echo {link}\n"))?;
    let screen = b.wait_js(
        &format!(
            "window.outpostScreen().split('\\n').some((l) => l.startsWith({0})) && window.outpostScreen()",
            json!(link)
        ),
        20,
    )?;
    let row = screen
        .as_str()
        .unwrap_or_default()
        .lines()
        .position(|l| l.starts_with(&link))
        .unwrap_or(0);
    let geo = b.exec(
        "const t = window.outpostTerminal; const r = document.querySelector('#terminal .xterm-screen').getBoundingClientRect(); return [r.width / t.cols, r.height / t.rows];",
        json!([]),
    )?;
    let (cw, ch) = (
        geo[0].as_f64().unwrap_or(8.0),
        geo[1].as_f64().unwrap_or(16.0),
    );
    let known = b.current_tab()?;
    b.click_at("#terminal .xterm-screen", cw * 5.5, ch * (row as f64 + 0.5))?;
    let tab = b.wait_new_tab(&known)?;
    b.switch_to(&tab)?;
    b.wait_js(&format!("location.href === {}", json!(link)), 20)?;
    b.close_tab()?;
    b.switch_to(&known)?;

    // Control goes away: the page says it is reconnecting, then connects again by itself.
    let mut s = s;
    s.restart()?;
    let said = b.wait_js(
        "document.body.dataset.termState === 'reconnecting' && document.getElementById('term-status').textContent",
        20,
    )?;
    assert!(
        said.as_str()
            .unwrap_or_default()
            .starts_with("reconnecting…"),
        "{said}"
    );
    b.wait_js("document.body.dataset.termState === 'connected'", 60)?;

    // Accessibility: the terminal page.
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "terminal page: {v:#?}");
    Ok(())
}
both_backends!(terminal_readable_and_comfortable);

/// The visible action buttons of the workspace page, in order.
fn visible_actions(b: &Browser) -> R<Value> {
    b.exec(
        "return [...document.querySelectorAll('button[data-action]')].filter((x) => !x.hidden).map((x) => x.dataset.action);",
        json!([]),
    )
}

fn workspace_and_templates_pages(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    let url = s.url.clone();
    // A template with a validated parameter; version 2 changes its default.
    let dir = s.dir.path().join("tpl");
    std::fs::create_dir_all(&dir)?;
    let tpl = |default: &str| {
        format!(
            "description = \"Sized\"\n[provisioner]\ntype = \"local\"\n\n[[parameters]]\nname = \"size\"\ntype = \"number\"\ndefault = {default}\nmutable = true\ndescription = \"How big\"\n[parameters.validation]\nmin = 1\nmax = 8\n"
        )
    };
    std::fs::write(dir.join("template.toml"), tpl("2"))?;
    let d = dir.to_str().unwrap_or_default();
    s.ok(&["templates", "push", d, "--name", "sized"])?;
    s.ok(&["create", "dev", "-t", "sized"])?;
    let (w, _) = s.wait_for("dev", T, |w| {
        w["status"] == "running"
            && w["agent"]["stats"]["home_dir"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
    })?;
    let home = w["agent"]["stats"]["home_dir"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    b.sign_in(&url, "admin", "admin-password")?;
    b.goto(&format!("{url}/@admin/dev"))?;
    b.wait_js(
        "document.body.dataset.ready === '1' && document.getElementById('status').textContent === 'running'",
        60,
    )?;
    // A running workspace: stop, restart, delete, and the terminal; not start, not update.
    b.wait_js(
        "!document.querySelector('button[data-action=stop]').hidden",
        10,
    )?;
    assert_eq!(visible_actions(&b)?, json!(["stop", "restart", "delete"]));
    assert_eq!(
        b.exec(
            "return document.getElementById('open-terminal').hidden;",
            json!([])
        )?,
        json!(false)
    );
    // How to connect, and the exact editor links.
    assert_eq!(b.text("#ssh-command")?, "ssh dev.outpost");
    assert_eq!(b.text("#config-ssh")?, "outpost config-ssh");
    let path: String = home
        .split('/')
        .map(|p| {
            p.bytes()
                .map(|c| match c {
                    b'a'..=b'z'
                    | b'A'..=b'Z'
                    | b'0'..=b'9'
                    | b'-'
                    | b'_'
                    | b'.'
                    | b'~'
                    | b'!'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')' => (c as char).to_string(),
                    _ => format!("%{c:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    let href = |id: &str| -> R<String> {
        Ok(b.wait_js(
            &format!("document.getElementById('{id}').getAttribute('href')"),
            20,
        )?
        .as_str()
        .unwrap_or_default()
        .to_string())
    };
    assert_eq!(
        href("open-vscode")?,
        format!("vscode://vscode-remote/ssh-remote+dev.outpost{path}")
    );
    let home_q: String = home
        .bytes()
        .map(|c| match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (c as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect();
    assert_eq!(
        href("open-jetbrains")?,
        format!("jetbrains-gateway://connect#type=ssh&deploy=false&host=dev.outpost&port=22&user=admin&projectPath={home_q}")
    );

    // Live figures and the last hour: two samples draw a line (one every 4 heartbeats).
    b.wait_js(
        "/of \\d+ cores/.test(document.getElementById('stat-cpu').textContent)",
        20,
    )?;
    let sessions = b.text("#sessions")?;
    assert!(
        sessions.starts_with("SSH 0 · VS Code 0 · JetBrains 0 · Terminal 0 · Port forward 0"),
        "{sessions}"
    );
    let token = s.token()?;
    eventually(|| {
        let (code, h) = http(
            "GET",
            &format!("{url}/api/v1/workspaces/dev/stats"),
            Some(&token),
            None,
        )?;
        assert_eq!(code, 200);
        Ok((h.as_array().map_or(0, Vec::len) >= 2).then_some(()))
    })?;
    b.refresh()?;
    b.wait_js(
        "document.getElementById('spark-mem').dataset.points >= 2",
        30,
    )?;
    assert!(b
        .exec(
            "return document.querySelector('#spark-cpu polyline') !== null;",
            json!([])
        )?
        .as_bool()
        .unwrap_or(false));
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "workspace page: {v:#?}");
    b.screenshot("workspace-connect-stats")?;

    // Stopped: start and delete only, and no terminal. While the stop runs its button says so
    // (every text it shows is recorded).
    b.exec(
        "const btn = document.querySelector('button[data-action=stop]'); window.__seen = [];
         new MutationObserver(() => window.__seen.push(btn.textContent + (btn.disabled ? ' (disabled)' : '')))
           .observe(btn, { childList: true, characterData: true, subtree: true, attributes: true });
         return true;",
        json!([]),
    )?;
    b.click("button[data-action=stop]")?;
    b.wait_js(
        "document.getElementById('status').textContent === 'stopped'",
        60,
    )?;
    b.wait_js(
        "!document.querySelector('button[data-action=start]').hidden",
        10,
    )?;
    assert_eq!(visible_actions(&b)?, json!(["start", "delete"]));
    assert_eq!(
        b.exec(
            "return document.getElementById('open-terminal').hidden;",
            json!([])
        )?,
        json!(true)
    );
    let seen = b.exec("return window.__seen;", json!([]))?;
    assert!(
        seen.as_array()
            .is_some_and(|v| v.iter().any(|t| t == "Stopping… (disabled)")),
        "{seen}"
    );

    // Failed: the reason is shown, with start, stop and delete.
    let broken = s.dir.path().join("broken");
    std::fs::create_dir_all(&broken)?;
    std::fs::write(
        broken.join("template.toml"),
        "[provisioner]\ntype = \"docker\"\nimage = \"127.0.0.1:9/nothing:here\"\n",
    )?;
    s.ok(&[
        "templates",
        "push",
        broken.to_str().unwrap_or_default(),
        "--name",
        "broken",
    ])?;
    let _ = s.cli(&["create", "bad", "-t", "broken"])?;
    let (w, _) = s.wait_for("bad", T, |w| w["status"] == "failed")?;
    let error = w["latest_build"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!error.is_empty());
    b.goto(&format!("{url}/@admin/bad"))?;
    b.wait_js(
        "document.getElementById('status').textContent === 'failed'",
        30,
    )?;
    let said = b.wait_text("build-state", "The last start failed")?;
    assert!(said.contains(&error), "{said} / {error}");
    assert_eq!(visible_actions(&b)?, json!(["start", "stop", "delete"]));

    // A newer version makes `dev` outdated: the list marks it, Update appears when running.
    std::fs::write(dir.join("template.toml"), tpl("3"))?;
    s.ok(&["templates", "push", d, "--name", "sized"])?;
    b.goto(&url)?;
    b.wait_js(
        "document.querySelector('#workspaces tr[data-name=\"dev\"] .badge.outdated')",
        30,
    )?;
    let row = b.text("#workspaces tr[data-name=\"dev\"]")?;
    assert!(row.contains("sized v1"), "{row}");
    let used = b.text("#workspaces tr[data-name=\"dev\"] td.last-used")?;
    assert!(
        ["just now", "min ago", "never"]
            .iter()
            .any(|w| used.contains(w)),
        "{used}"
    );
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "workspaces page: {v:#?}");

    // The templates pages.
    b.goto(&format!("{url}/templates"))?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    assert!(b
        .text("#templates tr[data-template=\"sized\"]")?
        .contains("v2"));
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "templates page: {v:#?}");
    b.click("#templates tr[data-template=\"sized\"] a")?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    let v2 = b.text("#versions tr[data-version=\"2\"]")?;
    assert!(v2.contains("active") && v2.contains("admin"), "{v2}");
    let p = b.text("#parameters tr[data-param=\"size\"]")?;
    assert!(
        p.contains("at least 1") && p.contains("at most 8") && p.contains("on every start"),
        "{p}"
    );
    assert!(b.text("#outdated")?.contains("admin/dev on v1"));
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "template page: {v:#?}");
    // Roll back: activate version 1; dev is current again, version 2 inactive.
    b.click("button[data-activate=\"1\"]")?;
    b.wait_text("activated", "Version 1 is active")?;
    b.wait_js("document.querySelector('#versions tr[data-version=\"1\"]').textContent.includes('active') && !document.querySelector('#versions tr[data-version=\"1\"] button')", 10)?;
    assert_eq!(b.text("#outdated")?, "none");
    let t = s.json(&["templates", "show", "sized"])?;
    assert_eq!(t["template"]["active_version"], 1, "{t}");
    // The same from the CLI: forward to 2 again; a version that does not exist is refused.
    s.ok(&["templates", "activate", "sized", "2"])?;
    let t = s.json(&["templates", "show", "sized"])?;
    assert_eq!(t["template"]["active_version"], 2, "{t}");
    let o = s.cli(&["templates", "activate", "sized", "9"])?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no version 9"), "{err}");
    let t = s.json(&["templates", "show", "sized"])?;
    assert_eq!(t["template"]["active_version"], 2, "{t}");
    eventually(|| {
        let a = s.json(&["audit", "--action", "template.activate"])?;
        Ok(a.to_string().contains("version 1").then_some(()))
    })?;

    // Axe on the remaining pages.
    for (path, ready) in [
        ("/new", "document.querySelector('#template option')"),
        ("/settings", "document.body.dataset.ready === '1'"),
        ("/settings/schedule", "document.body.dataset.ready === '1'"),
        (
            "/templates/sized/settings",
            "document.body.dataset.ready === '1'",
        ),
        (
            "/audit",
            "document.getElementById('audit-count').textContent !== ''",
        ),
    ] {
        b.goto(&format!("{url}{path}"))?;
        b.wait_js(ready, 30)?;
        let v = b.axe_violations()?;
        assert!(v.is_empty(), "{path}: {v:#?}");
    }
    b.delete_cookies()?;
    b.goto(&format!("{url}/login"))?;
    b.wait_find("#username")?;
    let v = b.axe_violations()?;
    assert!(v.is_empty(), "/login: {v:#?}");
    // Focus is visible: Tab to a control, and it wears an outline.
    b.press_tab()?;
    b.press_tab()?;
    let focus = b.exec(
        "const e = document.activeElement; const s = getComputedStyle(e);
         return [e.tagName, e.matches(':focus-visible'), s.outlineStyle, parseFloat(s.outlineWidth)];",
        json!([]),
    )?;
    assert_eq!(focus[1], json!(true), "{focus}");
    assert_ne!(focus[2], json!("none"), "{focus}");
    assert!(focus[3].as_f64() >= Some(2.0), "{focus}");
    Ok(())
}
both_backends!(workspace_and_templates_pages);
