// The web terminal page (`/@OWNER/WS/terminal`): xterm.js over the pty WebSocket. Loaded before
// app.js on that page only; app.js calls terminalPage() once the page is ready.
"use strict";

// Fonts whose every glyph (the underscore's bottom row included) fits the cell at a line height
// of 1.2; the browser test compares the pixels of `_` against a blank cell.
const TERMINAL_FONT = '"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace';
const TERMINAL_LINE_HEIGHT = 1.2;
const FONT_SIZES = [10, 11, 12, 13, 14, 16, 18, 20, 24, 28];

function terminalPage() {
  const workspace = document.body.dataset.ref;
  const status = document.getElementById("term-status");
  const params = new URLSearchParams(location.search);
  let session = params.get("session");
  if (!session) {
    session = crypto.getRandomValues(new Uint32Array(4)).reduce((s, x) => s + x.toString(36), "");
    params.set("session", session);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  // The text size is kept per user (in this browser).
  const sizeKey = `outpost.terminal.fontSize.${document.body.dataset.user || ""}`;
  const saved = Number(localStorage.getItem(sizeKey));
  let fontSize = FONT_SIZES.includes(saved) ? saved : 14;
  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize,
    fontFamily: TERMINAL_FONT,
    lineHeight: TERMINAL_LINE_HEIGHT,
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  // Links in the output open in a new tab (never in this one, never with this page as opener).
  term.loadAddon(new WebLinksAddon.WebLinksAddon((ev, uri) => {
    ev.preventDefault();
    const w = window.open();
    if (w) { w.opener = null; w.location.href = uri; }
  }));
  term.open(document.getElementById("terminal"));
  fit.fit();
  window.outpostTerminal = term;
  // The visible screen as text, one line per row (used by the browser tests).
  window.outpostScreen = () => {
    const b = term.buffer.active;
    const rows = [];
    for (let i = 0; i < term.rows; i++) rows.push((b.getLine(b.viewportY + i)?.translateToString(true)) || "");
    return rows.join("\n");
  };

  // Text size: A− and A+, remembered.
  const sizeLabel = document.getElementById("font-size");
  function setSize(n) {
    fontSize = n;
    term.options.fontSize = n;
    sizeLabel.textContent = `${n}px`;
    localStorage.setItem(sizeKey, String(n));
    fit.fit();
  }
  sizeLabel.textContent = `${fontSize}px`;
  document.getElementById("font-smaller").addEventListener("click", () => {
    const i = FONT_SIZES.indexOf(fontSize);
    if (i > 0) setSize(FONT_SIZES[i - 1]);
    term.focus();
  });
  document.getElementById("font-larger").addEventListener("click", () => {
    const i = FONT_SIZES.indexOf(fontSize);
    if (i < FONT_SIZES.length - 1) setSize(FONT_SIZES[i + 1]);
    term.focus();
  });

  // Copy on select (as terminals on Linux do); paste arrives through xterm's own paste handling
  // (Ctrl+Shift+V, the context menu), with no inline script or eval for the page's CSP to refuse.
  const copied = document.getElementById("copied");
  term.onSelectionChange(() => {
    const text = term.getSelection();
    if (!text || !navigator.clipboard) return;
    navigator.clipboard.writeText(text).then(() => {
      copied.textContent = "Copied the selection.";
    }).catch(() => {
      copied.textContent = "The browser did not allow copying; use Ctrl+Shift+C.";
    });
  });
  term.attachCustomKeyEventHandler((ev) => {
    // Ctrl+Shift+C copies the selection instead of sending ^C.
    if (ev.type === "keydown" && ev.ctrlKey && ev.shiftKey && ev.code === "KeyC") {
      const text = term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
      return false;
    }
    return true;
  });

  const enc = new TextEncoder();
  let ws = null;
  let attempt = 0;
  function send(kind, payload) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const m = new Uint8Array(1 + payload.length);
    m[0] = kind;
    m.set(payload, 1);
    ws.send(m);
  }
  function sendSize() {
    const p = new Uint8Array(4);
    new DataView(p.buffer).setUint16(0, term.cols);
    new DataView(p.buffer).setUint16(2, term.rows);
    send(1, p);
  }
  function setState(state, text) {
    status.textContent = text;
    status.className = `term-state ${state}`;
    document.body.dataset.termState = state;
    document.getElementById("terminal").classList.toggle("offline", state !== "connected");
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({ session, cols: term.cols, rows: term.rows });
    // A command runs only once the user confirmed it on this page; the server also wants the
    // page's CSRF token with it, so a link alone can never run anything.
    if (command) { q.set("command", command); q.set("csrf", csrf); }
    ws = new WebSocket(`${proto}://${location.host}/api/v1/workspaces/${encodeURIComponent(workspace)}/pty?${q}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      attempt = 0;
      setState("connected", "connected");
      document.body.dataset.connected = "1";
    };
    ws.onmessage = (ev) => term.write(new Uint8Array(ev.data));
    ws.onclose = () => {
      document.body.dataset.connected = "";
      attempt += 1;
      const wait = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
      const at = Date.now() + wait;
      const tick = () => {
        const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
        if (document.body.dataset.connected === "1") return;
        setState("reconnecting", left > 0
          ? `reconnecting… (next try in ${left}s; the session and its programs keep running)`
          : "reconnecting…");
        if (left > 0) setTimeout(tick, 1000);
      };
      tick();
      setTimeout(connect, wait);
    };
  }
  term.onData((d) => send(0, enc.encode(d)));
  term.onBinary((d) => send(0, Uint8Array.from(d, (c) => c.charCodeAt(0))));
  term.onResize(() => sendSize());
  window.addEventListener("resize", () => fit.fit());
  let command = null;
  const asked = params.get("command");
  if (!asked) {
    connect();
    term.focus();
    return;
  }
  // A link asked for a command: show it and run it only if the user says so.
  const box = document.createElement("div");
  box.id = "command-confirm";
  box.className = "card";
  const title = document.createElement("p");
  title.textContent = `This link wants to run a command in ${workspace}:`;
  const text = document.createElement("pre");
  text.id = "command-text";
  text.textContent = asked;
  const run = document.createElement("button");
  run.id = "command-run";
  run.className = "danger";
  run.textContent = "Run this command";
  const shell = document.createElement("button");
  shell.id = "command-shell";
  shell.textContent = "Open a shell instead";
  box.append(title, text, run, " ", shell);
  document.querySelector(".term-bar").after(box);
  setState("waiting", "waiting for you to confirm the command");
  const go = (withCommand) => {
    box.remove();
    command = withCommand ? asked : null;
    if (!withCommand) {
      params.delete("command");
      history.replaceState(null, "", `${location.pathname}?${params}`);
    }
    connect();
    term.focus();
  };
  run.addEventListener("click", () => go(true));
  shell.addEventListener("click", () => go(false));
}
