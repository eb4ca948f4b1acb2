// The workspace page (`/@OWNER/WS`): loaded before app.js on that page only; app.js calls
// workspacePage() once the page is ready (its helpers: api, el, showError, scheduleCard, ...).
"use strict";

function fmtBytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

// A sparkline: `values` (oldest first) as a polyline in the SVG's 120x30 box, 0..max.
function sparkline(svg, values, max) {
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  if (values.length < 2) return;
  const top = Math.max(max || 0, ...values, 1e-9);
  const step = 120 / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(29 - (v / top) * 28).toFixed(1)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  svg.dataset.points = String(values.length);
}

// The actions a workspace's state allows: a running one stops, restarts, updates (when
// outdated) and is deleted; a stopped one starts or is deleted; while a build runs, none (it can
// be canceled).
function allowedActions(w) {
  switch (w.status) {
    case "running": return ["stop", "restart", ...(w.outdated ? ["update"] : []), "delete"];
    case "stopped": return ["start", "delete"];
    case "failed": case "canceled": return ["start", "stop", "delete"];
    default: return [];
  }
}

const BUSY = { pending: "Queued", starting: "Starting", stopping: "Stopping", deleting: "Deleting", canceling: "Canceling" };
const ACTING = { start: "Starting…", stop: "Stopping…", restart: "Restarting…", update: "Updating…", delete: "Deleting…" };

// ------------------------------------------------------------------ one workspace
async function workspacePage() {
  // `ref` is NAME for one's own workspace, OWNER/NAME for someone else's (owners, auditors).
  const { owner, workspace, ref, manage, connect } = document.body.dataset;
  const base = `/api/v1/workspaces/${encodeURIComponent(ref)}`;
  // Only what the viewer may do is offered: auditors look, owners act, and only those who may
  // get in see the terminal and the port links.
  if (!manage) {
    for (const b of document.querySelectorAll("button[data-action], #schedule form, #activate")) b.hidden = true;
  }
  let buildId = null;
  let acting = null;
  let buildAbort = null;
  const buildLog = document.getElementById("build-log");
  const agentLog = document.getElementById("agent-log");
  const updateSchedule = scheduleCard(base);

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
    const tpl = byId("template");
    tpl.replaceChildren(`${w.template} v${w.template_version}`,
      w.outdated ? el("span", { class: "badge outdated" }, "outdated") : "");
    showActions(w);
    showConnect(w);
    showStats(w);
    updateSchedule(w);
    document.body.dataset.ready = "1";
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
        connect
          ? el("a", { href: `/@${owner}/${workspace}/ports/${p.port}/`, target: "_blank", rel: "noopener" }, String(p.port))
          : String(p.port),
        p.process ? ` (${p.process})` : ""));
    }
    if (!ports.children.length) ports.append(el("li", { class: "muted" }, "none"));
  }
  // Only the actions the state allows, each showing progress while its build runs, and why the
  // last build failed.
  function showActions(w) {
    const allowed = manage ? allowedActions(w) : [];
    const busy = BUSY[w.status];
    // The button of what is under way shows its progress: the one just pressed, or the running
    // build's transition.
    const shown = acting || (busy ? (w.latest_build.then_start ? "restart" : w.latest_build.transition) : null);
    for (const b of document.querySelectorAll("button[data-action]")) {
      const a = b.dataset.action;
      if (!b.dataset.label) b.dataset.label = b.textContent;
      const progress = manage && a === shown;
      b.hidden = !(allowed.includes(a) || progress);
      b.disabled = Boolean(busy) || acting !== null;
      b.textContent = progress ? ACTING[a] : b.dataset.label;
      b.setAttribute("aria-busy", progress ? "true" : "false");
    }
    byId("cancel-build").hidden = !(manage && busy && w.status !== "canceling");
    byId("open-terminal").hidden = !(connect && w.status === "running");
    const state = byId("build-state");
    const b = w.latest_build;
    if (busy) {
      state.className = "progress";
      state.textContent = `${busy}… build #${b.number} (${b.transition}, ${b.status})${b.started_at ? `, for ${fmtDuration(Date.now() - b.started_at)}` : ""}`;
    } else if (w.status === "failed") {
      state.className = "error";
      state.textContent = `The last ${b.transition} failed: ${b.error || "see the build log"}. Start it again, stop it, or delete it.`;
    } else if (w.status === "canceled") {
      state.className = "muted";
      state.textContent = `The last ${b.transition} was canceled.`;
    } else {
      state.className = "muted";
      state.textContent = "";
    }
  }

  // How to get in (the workspace's owner only): the host for ssh, and editor links that open it.
  function showConnect(w) {
    const vscode = byId("open-vscode");
    if (!vscode) return;
    const jetbrains = byId("open-jetbrains");
    const home = w.agent && w.agent.stats && w.agent.stats.home_dir;
    const ready = w.status === "running" && home;
    for (const a of [vscode, jetbrains]) a.setAttribute("aria-disabled", ready ? "false" : "true");
    byId("connect-note").hidden = Boolean(ready);
    if (!ready) { vscode.removeAttribute("href"); jetbrains.removeAttribute("href"); return; }
    const host = `${w.name}.outpost`;
    const path = home.split("/").map(encodeURIComponent).join("/");
    vscode.href = `vscode://vscode-remote/ssh-remote+${encodeURIComponent(host)}${path}`;
    const q = new URLSearchParams({ type: "ssh", deploy: "false", host, port: "22", user: w.owner, projectPath: home });
    jetbrains.href = `jetbrains-gateway://connect#${q}`;
  }

  // The latest figures, and the last hour's (read every 30 s) as sparklines.
  let history = [];
  let historyAt = 0;
  function showStats(w) {
    const st = w.agent && w.agent.stats;
    if (!st) {
      for (const id of ["stat-cpu", "stat-mem", "stat-disk", "stat-load"]) setText(id, "–");
      setText("sessions", "–");
    } else {
      setText("stat-cpu", `${st.cpu_percent.toFixed(0)}% of ${st.cpu_cores} cores`);
      setText("stat-mem", `${fmtBytes(st.mem_used_bytes)} of ${fmtBytes(st.mem_total_bytes)}`);
      setText("stat-disk", `${fmtBytes(st.home_disk_used_bytes)} of ${fmtBytes(st.home_disk_total_bytes)}`);
      setText("stat-load", st.load1.toFixed(2));
      const s = st.sessions;
      setText("sessions", `SSH ${s.ssh} · VS Code ${s.vscode} · JetBrains ${s.jetbrains} · Terminal ${s.pty} · Port forward ${s.port_forward}`);
    }
    if (Date.now() - historyAt > 30000) {
      historyAt = Date.now();
      api("GET", `${base}/stats`).then((h) => { history = h; drawHistory(); }).catch(() => {});
    }
  }
  function drawHistory() {
    const last = history[history.length - 1];
    sparkline(byId("spark-cpu"), history.map((p) => p.cpu_percent), 100);
    sparkline(byId("spark-mem"), history.map((p) => p.mem_used_bytes), last && last.mem_total_bytes);
    sparkline(byId("spark-disk"), history.map((p) => p.home_disk_used_bytes), last && last.home_disk_total_bytes);
    sparkline(byId("spark-load"), history.map((p) => p.load1), 0);
  }

  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", async () => {
      const action = b.dataset.action;
      if (action === "delete" && !confirm(`Delete ${workspace} and its home? This cannot be undone.`)) return;
      showError(null);
      acting = action;
      b.textContent = ACTING[action];
      for (const x of document.querySelectorAll("button[data-action]")) x.disabled = true;
      try {
        await api("POST", `${base}/builds`, { action });
        acting = null;
        await refresh();
        if (action === "delete") location.href = "/";
        else document.body.dataset.acted = action;
      } catch (e) {
        acting = null;
        showError(e);
        await refresh();
      }
    });
  }
  byId("cancel-build").addEventListener("click", async () => {
    showError(null);
    try { await api("POST", `${base}/cancel`); await refresh(); } catch (e) { showError(e); }
  });
  await refresh();
  setInterval(refresh, 2000);
}

