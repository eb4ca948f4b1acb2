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
  // API errors are {"error": {"code", "message"}}: the message says what to do.
  if (!r.ok) throw new Error((data && data.error && data.error.message) || (data && data.message) || r.statusText);
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

// ------------------------------------------------------------------ schedules (shared)
const DURATION_UNITS = { s: 1000, m: 60000, h: 3600000, d: 86400000 };

// "8h", "30m", "7d", "1h30m", "90s" to milliseconds; "off", "manual", "never" and "0" are 0.
function parseDuration(text, what) {
  const s = String(text).trim().toLowerCase().replace(/\s+/g, "");
  if (["0", "off", "manual", "never"].includes(s)) return 0;
  if (!/^(\d+(\.\d+)?[smhd])+$/.test(s)) {
    throw new Error(`${what}: ${JSON.stringify(String(text).trim())} is not a duration; write it like 8h, 30m, 7d or 1h30m (or off)`);
  }
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)([smhd])/g)) ms += Number(m[1]) * DURATION_UNITS[m[2]];
  return Math.round(ms);
}

// Milliseconds for people: 7200000 -> "2h", 5400000 -> "1h30m", 0 -> "off".
function fmtDuration(ms) {
  if (!ms || ms <= 0) return "off";
  let secs = Math.round(ms / 1000);
  let out = "";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    const n = Math.floor(secs / size);
    if (n) { out += `${n}${unit}`; secs -= n * size; }
  }
  return out || "off";
}

// A time in UTC, like the CLI: "2026-12-01 18:00 UTC".
function fmtTime(ms) {
  return `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

// The scheduler's next action in words.
function nextActionText(n) {
  if (!n) return "No automatic action";
  const t = fmtTime(n.at);
  const what = { stop: "Stops", start: "Starts", dormant: "Becomes dormant", delete: "Deleted" }[n.action] || n.action;
  return `${what} at ${t} (${n.reason})`;
}

// Why the latest build ran, when the scheduler (not a person) asked for it.
function buildReasonText(b) {
  if (!b || !b.reason || b.reason === "initiator") return "";
  const verb = { start: "Started", stop: "Stopped", delete: "Deleted" }[b.transition] || "Built";
  return `${verb} by the scheduler: ${b.reason}`;
}

function byId(id) { return document.getElementById(id); }

// "5 minutes ago", for times in the past.
function fmtAgo(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}


function setText(id, text) {
  const e = byId(id);
  if (e) e.textContent = text || "";
}

// The workspace page's Schedule card: returns update(workspace) for the page's refresh.
function scheduleCard(base) {
  const autostart = byId("autostart-input");
  const autostop = byId("autostop-input");
  const extend = byId("extend-input");
  let filled = false;
  let checkedTemplate = null;
  const saved = (msg) => { setText("schedule-error", ""); setText("schedule-saved", msg); };
  const failed = (e) => { setText("schedule-saved", ""); setText("schedule-error", e ? String(e.message || e) : ""); };

  function fill(s) {
    autostart.value = s.autostart || "";
    autostop.value = s.autostop_ms === null || s.autostop_ms === undefined ? "default"
      : s.autostop_ms === 0 ? "manual" : fmtDuration(s.autostop_ms);
    filled = true;
  }

  // What the template lets the owner change (read once per template).
  async function checkTemplate(name) {
    if (checkedTemplate === name) return;
    checkedTemplate = name;
    try {
      const t = (await api("GET", `/api/v1/templates/${encodeURIComponent(name)}`)).template.schedule;
      const notes = [];
      for (const [form, allowed, note] of [
        ["autostart-form", t.allow_user_autostart, "The template does not let users set an autostart schedule."],
        ["autostop-form", t.allow_user_autostop, `The template does not let users set their autostop (it stops workspaces after ${fmtDuration(t.default_autostop_ms)} without activity).`],
      ]) {
        for (const c of byId(form).querySelectorAll("input, button")) c.disabled = !allowed;
        if (!allowed) notes.push(note);
      }
      if (t.autostart_days && t.autostart_days.length < 7 && t.allow_user_autostart) {
        notes.push(`Autostart may start workspaces of this template only on ${t.autostart_days.join(", ") || "no day"}.`);
      }
      const n = byId("schedule-note");
      n.textContent = notes.join(" ");
      n.hidden = !notes.length;
    } catch (_) { checkedTemplate = null; }
  }

  function update(w, refill) {
    const s = w.schedule || {};
    setText("next-action", nextActionText(s.next));
    const deadline = byId("deadline-line");
    deadline.hidden = !s.deadline && w.status !== "running";
    deadline.textContent = s.deadline
      ? `Deadline: ${fmtTime(s.deadline)} (it stops then unless there is activity)`
      : "Deadline: none (no autostop)";
    const req = byId("required-stop");
    req.hidden = !s.max_deadline;
    req.textContent = s.max_deadline ? `Autostop requirement: stops at ${fmtTime(s.max_deadline)} (your quiet hours), whatever its activity` : "";
    const reason = buildReasonText(w.latest_build);
    const r = byId("build-reason");
    r.hidden = !reason;
    r.textContent = reason;
    const dormant = byId("dormant");
    dormant.hidden = !s.dormant_at;
    setText("dormant-text", s.dormant_at
      ? `Dormant since ${fmtTime(s.dormant_at)}; activate it to start it again.${s.deleting_at ? ` It will be deleted at ${fmtTime(s.deleting_at)}.` : ""}`
      : "");
    setText("autostop-current", `In force: ${s.effective_autostop_ms ? fmtDuration(s.effective_autostop_ms) : "never"}${s.autostop_ms === null || s.autostop_ms === undefined ? " (the template's default)" : ""}.`);
    if (!filled || refill) fill(s);
    checkTemplate(w.template);
  }

  async function send(method, path, body, msg) {
    const w = await api(method, `${base}/${path}`, body);
    update(w, true);
    saved(msg);
    return w;
  }

  byId("autostart-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const schedule = autostart.value.trim() || null;
    try {
      await send("PUT", "autostart", { schedule }, schedule ? `Autostart saved: ${schedule}` : "Autostart cleared.");
    } catch (e) { failed(e); }
  });
  byId("autostart-clear").addEventListener("click", async () => {
    try { await send("PUT", "autostart", { schedule: null }, "Autostart cleared."); } catch (e) { failed(e); }
  });
  byId("autostop-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const v = autostop.value.trim().toLowerCase();
      const autostop_ms = v === "default" || v === "" ? null : parseDuration(v, "Autostop");
      await send("PUT", "autostop", { autostop_ms },
        autostop_ms === null ? "Autostop: the template's default." : autostop_ms === 0 ? "Autostop off: it stops by hand only." : `Autostop saved: ${fmtDuration(autostop_ms)}`);
    } catch (e) { failed(e); }
  });
  byId("extend-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const duration_ms = parseDuration(extend.value, "Extend");
      if (!duration_ms) throw new Error("Extend by a duration such as 2h.");
      const w = await send("POST", "extend", { duration_ms }, "Deadline extended.");
      if (w.schedule.deadline) saved(`Deadline extended to ${fmtTime(w.schedule.deadline)}.`);
    } catch (e) { failed(e); }
  });
  byId("activate").addEventListener("click", async () => {
    try { await send("POST", "activate", {}, "Activated: you can start it again."); } catch (e) { failed(e); }
  });
  return update;
}

// ------------------------------------------------------------------ workspaces list
async function homePage() {
  const { owner, all } = document.body.dataset;
  const tbody = document.querySelector("#workspaces tbody");
  const cells = (w) => [
    el("td", { class: `status ${w.status}` }, w.status),
    el("td", { class: w.health.healthy ? "healthy" : "unhealthy" }, w.health.healthy ? "healthy" : w.health.reasons.join("; ")),
    el("td", {}, `${w.template} v${w.template_version}`,
      w.outdated ? el("span", { class: "badge outdated", title: "A newer template version is active: Update uses it" }, "outdated") : ""),
    el("td", {}, w.agent ? `${w.agent.status} / ${w.agent.lifecycle}` : "-"),
    el("td", { class: "last-used" }, w.schedule && w.schedule.last_used_at ? fmtAgo(w.schedule.last_used_at) : "never"),
  ];
  async function refresh() {
    try {
      const list = await api("GET", "/api/v1/workspaces");
      tbody.replaceChildren();
      if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No workspaces yet.")));
      for (const w of list) {
        tbody.append(el("tr", { "data-name": w.name },
          el("td", {}, el("a", { href: `/@${owner}/${w.name}` }, w.name)), ...cells(w)));
      }
      if (all) {
        const everyone = await api("GET", "/api/v1/workspaces?all=true");
        const body = document.querySelector("#all-workspaces tbody");
        body.replaceChildren();
        for (const w of everyone) {
          body.append(el("tr", { "data-ref": `${w.owner}/${w.name}` },
            el("td", {}, w.owner),
            el("td", {}, el("a", { href: `/@${encodeURIComponent(w.owner)}/${encodeURIComponent(w.name)}` }, w.name)),
            ...cells(w)));
        }
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
  // Each choice of template asks for its parameters; only the newest answer is shown (an
  // older one arriving late must not add its fields to the form).
  let shown = 0;
  async function showParams() {
    const asked = ++shown;
    params.replaceChildren(el("legend", {}, "Parameters"));
    if (!select.value) return;
    const d = await api("GET", `/api/v1/templates/${encodeURIComponent(select.value)}`);
    if (asked !== shown) return;
    params.replaceChildren(el("legend", {}, "Parameters"));
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

// ------------------------------------------------------------------ schedule settings
async function scheduleSettingsPage() {
  const input = byId("quiet-input");
  const saved = (msg) => { showError(null); setText("saved", msg); };
  const failed = (e) => { setText("saved", ""); showError(e); };
  function show(q, refill) {
    setText("quiet-schedule", q.schedule);
    setText("quiet-timezone", q.timezone);
    setText("quiet-next", q.next_at ? fmtTime(q.next_at) : "-");
    setText("quiet-custom", q.custom
      ? `${q.custom}${q.user_can_set ? "" : " (ignored: the server does not allow custom quiet hours)"}`
      : "none: the server's default applies");
    byId("quiet-not-allowed").hidden = q.user_can_set;
    byId("quiet-fieldset").disabled = !q.user_can_set;
    if (refill) input.value = q.custom || "";
  }
  async function put(schedule) {
    const q = await api("PUT", "/api/v1/users/me/quiet-hours", { schedule });
    show(q, true);
    saved(schedule ? `Saved: your quiet hours begin ${q.schedule}.` : `Saved: the server's default applies (${q.schedule}).`);
  }
  show(await api("GET", "/api/v1/users/me/quiet-hours"), true);
  byId("quiet-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await put(input.value.trim() || null); } catch (e) { failed(e); }
  });
  byId("quiet-default").addEventListener("click", async () => {
    try { await put(null); } catch (e) { failed(e); }
  });
  if (document.body.dataset.admin) {
    const list = byId("templates-list");
    for (const t of await api("GET", "/api/v1/templates")) {
      list.append(el("li", {}, el("a", { href: `/templates/${encodeURIComponent(t.name)}/settings` }, t.name),
        ` · autostop ${fmtDuration(t.schedule.default_autostop_ms)}`));
    }
    byId("template-links").hidden = false;
  }
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ settings (keys, tokens, dotfiles, password)
async function settingsPage() {
  const saved = (msg) => { showError(null); setText("saved", msg); };
  const failed = (e) => { setText("saved", ""); showError(e); };
  const keysList = byId("keys-list");
  async function loadKeys() {
    const keys = await api("GET", "/api/v1/users/me/keys");
    keysList.replaceChildren();
    for (const k of keys) {
      const remove = el("button", { type: "button", "aria-label": `Remove key ${k.name}`, "data-key": k.id }, "Remove");
      remove.addEventListener("click", async () => {
        if (!confirm(`Remove the SSH key ${k.name} (${k.fingerprint})?`)) return;
        try { await api("DELETE", `/api/v1/users/me/keys/${encodeURIComponent(k.id)}`); await loadKeys(); saved(`Removed the SSH key ${k.name}.`); } catch (e) { failed(e); }
      });
      keysList.append(el("tr", { "data-fingerprint": k.fingerprint }, el("td", {}, k.name), el("td", {}, el("code", {}, k.fingerprint)),
        el("td", {}, fmtTime(k.created_at)), el("td", {}, remove)));
    }
    byId("keys-empty").hidden = keys.length > 0;
  }
  byId("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const line = byId("key-public").value.trim().split("\n").find((l) => l.trim()) || "";
    const name = byId("key-name").value.trim() || line.trim().split(/\s+/)[2] || "key";
    try {
      const k = await api("POST", "/api/v1/users/me/keys", { name, public_key: line.trim() });
      byId("key-public").value = ""; byId("key-name").value = "";
      await loadKeys();
      saved(`Added the SSH key ${k.name} (${k.fingerprint}).`);
    } catch (e) { failed(e); }
  });
  const tokensList = byId("tokens-list");
  async function loadTokens() {
    const tokens = await api("GET", "/api/v1/tokens");
    tokensList.replaceChildren();
    for (const t of tokens) {
      const revoke = el("button", { type: "button", "aria-label": `Revoke token ${t.name}`, "data-token": t.id }, "Revoke");
      revoke.addEventListener("click", async () => {
        if (!confirm(`Revoke the token ${t.name}? Whatever uses it is signed out.`)) return;
        try { await api("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`); await loadTokens(); saved(`Revoked the token ${t.name}.`); } catch (e) { failed(e); }
      });
      tokensList.append(el("tr", { "data-token-row": t.id }, el("td", {}, t.name), el("td", {}, fmtTime(t.created_at)),
        el("td", {}, fmtTime(t.expires_at)), el("td", {}, t.last_used_at ? fmtTime(t.last_used_at) : "never"), el("td", {}, revoke)));
    }
  }
  byId("token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const lifetime = byId("token-lifetime").value.trim();
      const body = { name: byId("token-name").value.trim() };
      if (lifetime) body.lifetime_secs = Math.round(parseDuration(lifetime, "the lifetime") / 1000);
      const r = await api("POST", "/api/v1/tokens", body);
      setText("token-secret", r.token);
      byId("token-secret-box").hidden = false;
      byId("token-name").value = "";
      await loadTokens();
      saved(`Created the token ${r.info.name}; copy it now.`);
    } catch (e) { failed(e); }
  });
  byId("token-secret-done").addEventListener("click", () => {
    setText("token-secret", "");
    byId("token-secret-box").hidden = true;
  });
  const dotInput = byId("dotfiles-input");
  function showDotfiles(d) {
    setText("dotfiles-current", d.dotfiles_uri || "none");
    dotInput.value = d.dotfiles_uri || "";
  }
  async function putDotfiles(uri) {
    const d = await api("PUT", "/api/v1/users/me/dotfiles", { dotfiles_uri: uri });
    showDotfiles(d);
    saved(d.dotfiles_uri ? `Saved: your dotfiles repository is ${d.dotfiles_uri}.` : "Saved: no dotfiles repository.");
  }
  byId("dotfiles-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await putDotfiles(dotInput.value.trim() || null); } catch (e) { failed(e); }
  });
  byId("dotfiles-clear").addEventListener("click", async () => {
    try { await putDotfiles(null); } catch (e) { failed(e); }
  });
  byId("password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const current = byId("password-current").value, next = byId("password-new").value;
    if (next !== byId("password-repeat").value) { failed(new Error("the new passwords differ")); return; }
    try {
      await api("PUT", "/api/v1/users/me/password", { current_password: current, new_password: next });
      for (const id of ["password-current", "password-new", "password-repeat"]) byId(id).value = "";
      await loadTokens();
      saved("Password changed: your other sessions and tokens are signed out.");
    } catch (e) { failed(e); }
  });
  await Promise.all([loadKeys(), loadTokens(), api("GET", "/api/v1/users/me/dotfiles").then(showDotfiles)]);
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ template schedule settings
async function templateSettingsPage() {
  const name = document.body.dataset.template;
  const form = byId("template-schedule");
  const durations = {
    "default-autostop": ["default_autostop_ms", "Default autostop"],
    "activity-bump": ["activity_bump_ms", "Activity bump"],
    "failure-cleanup": ["failure_cleanup_ms", "Failure cleanup"],
    "dormancy-threshold": ["dormancy_threshold_ms", "Dormancy threshold"],
    "dormancy-auto-deletion": ["dormancy_auto_deletion_ms", "Dormancy auto-deletion"],
  };
  const days = byId("requirement-days");
  const weeks = byId("requirement-weeks");
  const dayBoxes = () => [...form.querySelectorAll('input[name="autostart_day"]')];
  // Weeks only count with a weekly requirement (saturday or sunday).
  const syncWeeks = () => { weeks.disabled = !["saturday", "sunday"].includes(days.value); };
  days.addEventListener("change", syncWeeks);

  function summary(s) {
    const r = s.autostop_requirement;
    const rows = [
      ["Default autostop", fmtDuration(s.default_autostop_ms)],
      ["Activity bump", fmtDuration(s.activity_bump_ms)],
      ["Autostop requirement", r.days === "off" ? "off"
        : `${r.days}${r.weeks > 1 ? ` every ${r.weeks} weeks` : ""}, in the owner's quiet hours`],
      ["Autostart days", s.autostart_days.join(", ") || "none"],
      ["Users may set", `autostart: ${s.allow_user_autostart ? "yes" : "no"}, autostop: ${s.allow_user_autostop ? "yes" : "no"}`],
      ["Failure cleanup", fmtDuration(s.failure_cleanup_ms)],
      ["Dormancy threshold", fmtDuration(s.dormancy_threshold_ms)],
      ["Dormancy auto-deletion", fmtDuration(s.dormancy_auto_deletion_ms)],
    ];
    byId("current-schedule").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }
  function fill(s) {
    for (const [id, [key]] of Object.entries(durations)) byId(id).value = fmtDuration(s[key]);
    days.value = s.autostop_requirement.days;
    weeks.value = String(s.autostop_requirement.weeks);
    for (const c of dayBoxes()) c.checked = s.autostart_days.includes(c.value);
    byId("allow-user-autostart").checked = s.allow_user_autostart;
    byId("allow-user-autostop").checked = s.allow_user_autostop;
    syncWeeks();
    summary(s);
  }
  fill((await api("GET", `/api/v1/templates/${encodeURIComponent(name)}`)).template.schedule);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(null);
    setText("saved", "");
    try {
      const update = {};
      for (const [id, [key, label]] of Object.entries(durations)) update[key] = parseDuration(byId(id).value, label);
      update.autostop_requirement_days = days.value;
      if (!weeks.disabled) {
        const w = weeks.value.trim();
        if (!/^\d+$/.test(w)) throw new Error(`Autostop requirement weeks: ${JSON.stringify(w)} is not a whole number; use 1 to 16`);
        update.autostop_requirement_weeks = Number(w);
      }
      update.autostart_days = dayBoxes().filter((c) => c.checked).map((c) => c.value);
      update.allow_user_autostart = byId("allow-user-autostart").checked;
      update.allow_user_autostop = byId("allow-user-autostop").checked;
      const s = await api("PATCH", `/api/v1/templates/${encodeURIComponent(name)}/schedule`, update);
      fill(s);
      setText("saved", "Saved.");
    } catch (e) { showError(e); }
  });
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ audit log
async function auditPage() {
  const form = byId("audit-filters");
  const tbody = document.querySelector("#audit tbody");
  const more = byId("audit-more");
  const names = ["actor", "action", "target", "outcome"];
  // The filters live in the address too, so a filtered view can be shared and reloaded.
  const url = new URL(location.href);
  for (const n of names) form.elements[n].value = url.searchParams.get(n) || "";
  let oldest = null;
  function query() {
    const q = new URLSearchParams();
    for (const n of names) {
      const v = form.elements[n].value.trim();
      if (v) q.set(n, v);
    }
    return q;
  }
  async function load(append) {
    showError(null);
    const q = query();
    q.set("limit", "100");
    if (append && oldest !== null) q.set("before_id", String(oldest));
    try {
      const events = await api("GET", "/api/v1/audit?" + q.toString());
      if (!append) tbody.replaceChildren();
      for (const e of events) {
        tbody.append(el("tr", { "data-id": String(e.id), "data-action": e.action, "data-actor": e.actor },
          el("td", {}, fmtTime(e.created_at)),
          el("td", {}, e.action),
          el("td", { class: `outcome ${e.outcome}` }, e.outcome),
          el("td", { class: "actor" }, e.actor),
          el("td", { class: "target" }, e.target || "-"),
          el("td", {}, e.remote_addr || "-"),
          el("td", {}, e.details)));
      }
      if (events.length) oldest = events[events.length - 1].id;
      more.hidden = events.length < 100;
      const rows = tbody.children.length;
      setText("audit-count", rows ? `${rows} event${rows === 1 ? "" : "s"}, newest first` : "No events match.");
    } catch (e) { showError(e); }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = query();
    history.replaceState(null, "", "/audit" + (q.toString() ? "?" + q.toString() : ""));
    oldest = null;
    load(false);
  });
  byId("audit-clear").addEventListener("click", () => {
    for (const n of names) form.elements[n].value = "";
    history.replaceState(null, "", "/audit");
    oldest = null;
    load(false);
  });
  more.addEventListener("click", () => load(true));
  await load(false);
}

const pages = {
  home: homePage,
  new: newPage,
  // Defined by the page's own script (workspace.js, terminal.js, templates.js), loaded before
  // this one on that page only.
  workspace: () => workspacePage(),
  terminal: () => terminalPage(),
  templates: () => templatesPage(),
  template: () => templatePage(),
  "schedule-settings": scheduleSettingsPage,
  settings: settingsPage,
  "template-settings": templateSettingsPage,
  audit: auditPage,
};
if (pages[page]) Promise.resolve(pages[page]()).catch(showError);
