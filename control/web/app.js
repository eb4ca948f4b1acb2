// Outpost's dashboard scripts: a little JS over server-rendered pages. Every state change goes to
// the JSON API with the session cookie and the page's CSRF token (X-CSRF-Token).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
const page = document.body.dataset.page;

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("signed out");
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
  if (!r.ok) throw new Error((data && data.message) || r.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function showError(e) {
  const p = document.getElementById("error");
  if (p) p.textContent = e ? String(e.message || e) : "";
}

// Streams NDJSON lines from `path` into `onLine` until the response ends or `signal` aborts.
async function streamLines(path, onLine, signal) {
  const r = await fetch(path, { credentials: "same-origin", signal });
  if (!r.ok || !r.body) return;
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) { try { onLine(JSON.parse(line)); } catch (_) { /* skip */ } }
    }
  }
}

// ------------------------------------------------------------------ workspaces list
async function homePage() {
  const owner = document.body.dataset.owner;
  const tbody = document.querySelector("#workspaces tbody");
  async function refresh() {
    try {
      const list = await api("GET", "/api/v1/workspaces");
      tbody.replaceChildren();
      if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No workspaces yet.")));
      for (const w of list) {
        tbody.append(el("tr", { "data-name": w.name },
          el("td", {}, el("a", { href: `/@${owner}/${w.name}` }, w.name)),
          el("td", { class: `status ${w.status}` }, w.status),
          el("td", { class: w.health.healthy ? "healthy" : "unhealthy" }, w.health.healthy ? "healthy" : w.health.reasons.join("; ")),
          el("td", {}, `${w.template} v${w.template_version}${w.outdated ? " (outdated)" : ""}`),
          el("td", {}, w.agent ? `${w.agent.status} / ${w.agent.lifecycle}` : "-")));
      }
    } catch (e) { showError(e); }
  }
  await refresh();
  setInterval(refresh, 2000);
}

// ------------------------------------------------------------------ create
async function newPage() {
  const owner = document.body.dataset.owner;
  const select = document.getElementById("template");
  const params = document.getElementById("params");
  const templates = await api("GET", "/api/v1/templates");
  for (const t of templates.filter((t) => t.active_version !== null)) {
    select.append(el("option", { value: t.name }, t.name));
  }
  async function showParams() {
    params.replaceChildren(el("legend", {}, "Parameters"));
    if (!select.value) return;
    const d = await api("GET", `/api/v1/templates/${encodeURIComponent(select.value)}`);
    document.getElementById("template-description").textContent = d.template.description || "";
    const active = d.versions.find((v) => v.active) || d.versions[d.versions.length - 1];
    for (const p of active.manifest.parameters) {
      let input;
      if (p.options && p.options.length) {
        input = el("select", { name: p.name, "data-param": p.name });
        for (const o of p.options) input.append(el("option", { value: o }, o));
        if (p.default !== null) input.value = p.default;
      } else if (p.type === "bool") {
        input = el("select", { name: p.name, "data-param": p.name }, el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
        input.value = p.default === null ? "false" : p.default;
      } else {
        input = el("input", { name: p.name, "data-param": p.name, type: p.type === "number" ? "number" : "text" });
        if (p.default !== null) input.value = p.default; else input.required = true;
      }
      params.append(el("label", {}, `${p.name} `, input, el("span", { class: "muted" }, ` ${p.description || ""}`)));
    }
  }
  select.addEventListener("change", () => showParams().catch(showError));
  await showParams();
  document.getElementById("create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(null);
    const parameters = {};
    for (const i of params.querySelectorAll("[data-param]")) parameters[i.dataset.param] = i.value;
    const name = document.getElementById("ws-name").value.trim();
    try {
      await api("POST", "/api/v1/workspaces", { name, template: select.value, parameters });
      location.href = `/@${owner}/${name}`;
    } catch (e) { showError(e); }
  });
}

// ------------------------------------------------------------------ one workspace
async function workspacePage() {
  const { owner, workspace } = document.body.dataset;
  const base = `/api/v1/workspaces/${encodeURIComponent(workspace)}`;
  let buildId = null;
  let buildAbort = null;
  const buildLog = document.getElementById("build-log");
  const agentLog = document.getElementById("agent-log");

  function followBuild(id) {
    if (buildAbort) buildAbort.abort();
    buildAbort = new AbortController();
    buildLog.textContent = "";
    streamLines(`/api/v1/builds/${id}/logs?follow=true`, (l) => {
      buildLog.textContent += `[${l.stage}] ${l.output}\n`;
      buildLog.scrollTop = buildLog.scrollHeight;
    }, buildAbort.signal).catch(() => {});
  }
  streamLines(`${base}/agent-logs?follow=true`, (l) => {
    agentLog.textContent += `${l.stage}: ${l.output}\n`;
    agentLog.scrollTop = agentLog.scrollHeight;
  }).catch(() => {});

  async function refresh() {
    let w;
    try { w = await api("GET", base); } catch (e) { showError(e); return; }
    const status = document.getElementById("status");
    status.textContent = w.status;
    status.className = w.status;
    const health = document.getElementById("health");
    health.textContent = w.health.healthy ? "healthy" : "unhealthy";
    health.className = w.health.healthy ? "healthy" : "unhealthy";
    document.getElementById("reasons").textContent = w.health.reasons.join("; ");
    document.getElementById("agent").textContent = w.agent ? w.agent.status : "-";
    document.getElementById("lifecycle").textContent = w.agent ? w.agent.lifecycle : "-";
    if (w.latest_build.id !== buildId) {
      buildId = w.latest_build.id;
      followBuild(buildId);
    }
    const apps = document.getElementById("apps");
    apps.replaceChildren();
    for (const a of w.apps || []) {
      apps.append(el("li", { "data-app": a.slug },
        el("a", { href: a.url, target: "_blank", rel: "noopener" }, a.display_name),
        ` · ${a.share} · `, el("span", { class: a.health }, a.health)));
    }
    if (!apps.children.length) apps.append(el("li", { class: "muted" }, "none"));
    const ports = document.getElementById("ports");
    ports.replaceChildren();
    for (const p of (w.agent && w.agent.stats && w.agent.stats.ports) || []) {
      ports.append(el("li", { "data-port": p.port },
        el("a", { href: `/@${owner}/${workspace}/ports/${p.port}/`, target: "_blank", rel: "noopener" }, String(p.port)),
        p.process ? ` (${p.process})` : ""));
    }
    if (!ports.children.length) ports.append(el("li", { class: "muted" }, "none"));
  }
  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", async () => {
      const action = b.dataset.action;
      if (action === "delete" && !confirm(`Delete ${workspace} and its home? This cannot be undone.`)) return;
      showError(null);
      try {
        await api("POST", `${base}/builds`, { action });
        await refresh();
        if (action === "delete") location.href = "/";
      } catch (e) { showError(e); }
    });
  }
  await refresh();
  setInterval(refresh, 2000);
}

// ------------------------------------------------------------------ terminal
function terminalPage() {
  const { workspace } = document.body.dataset;
  const status = document.getElementById("term-status");
  const params = new URLSearchParams(location.search);
  let session = params.get("session");
  if (!session) {
    session = crypto.getRandomValues(new Uint32Array(4)).reduce((s, x) => s + x.toString(36), "");
    params.set("session", session);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
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
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({ session, cols: term.cols, rows: term.rows });
    // A command runs only once the user confirmed it on this page; the server also wants the
    // page's CSRF token with it, so a link alone can never run anything.
    if (command) { q.set("command", command); q.set("csrf", csrf); }
    ws = new WebSocket(`${proto}://${location.host}/api/v1/workspaces/${encodeURIComponent(workspace)}/pty?${q}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { attempt = 0; status.textContent = "connected"; document.body.dataset.connected = "1"; };
    ws.onmessage = (ev) => term.write(new Uint8Array(ev.data));
    ws.onclose = () => {
      document.body.dataset.connected = "";
      attempt += 1;
      const wait = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
      status.textContent = `disconnected; reconnecting in ${Math.round(wait / 1000)}s`;
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
  status.after(box);
  status.textContent = "waiting for you to confirm the command";
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

const pages = { home: homePage, new: newPage, workspace: workspacePage, terminal: terminalPage };
if (pages[page]) Promise.resolve(pages[page]()).catch(showError);
