// The templates pages (`/templates`, `/templates/NAME`): loaded before app.js on those pages
// only; app.js calls templatesPage() or templatePage() once the page is ready.
"use strict";

async function templatesPage() {
  const tbody = document.querySelector("#templates tbody");
  const list = await api("GET", "/api/v1/templates");
  tbody.replaceChildren();
  if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No templates you may use.")));
  for (const t of list) {
    tbody.append(el("tr", { "data-template": t.name },
      el("td", {}, el("a", { href: `/templates/${encodeURIComponent(t.name)}` }, t.name)),
      el("td", {}, t.description || ""),
      el("td", {}, t.active_version === null ? "none" : `v${t.active_version}`),
      el("td", {}, t.organization),
      el("td", {}, t.groups.length ? t.groups.join(", ") : "everyone")));
  }
  document.body.dataset.ready = "1";
}

// What a parameter accepts, in words.
function validationText(p) {
  const parts = [];
  if (p.options && p.options.length) parts.push(`one of ${p.options.join(", ")}`);
  if (p.regex) parts.push(`matches /${p.regex}/`);
  if (p.min !== null && p.min !== undefined) parts.push(`at least ${p.min}`);
  if (p.max !== null && p.max !== undefined) parts.push(`at most ${p.max}`);
  if (p.default === null || p.default === undefined) parts.push("required");
  return parts.join("; ") || "any";
}

async function templatePage() {
  const { template, manage } = document.body.dataset;
  const base = `/api/v1/templates/${encodeURIComponent(template)}`;
  async function load() {
    const d = await api("GET", base);
    setText("template-description", d.template.description);
    const versions = document.querySelector("#versions tbody");
    versions.replaceChildren();
    for (const v of [...d.versions].reverse()) {
      const actions = el("td", {});
      if (manage && !v.active) {
        const b = el("button", { type: "button", "data-activate": String(v.version) }, `Activate v${v.version}`);
        b.addEventListener("click", async () => {
          showError(null);
          b.disabled = true;
          try {
            await api("POST", `${base}/versions/${v.version}/activate`);
            setText("activated", `Version ${v.version} is active: new workspaces use it, and Update moves existing ones to it.`);
            await load();
          } catch (e) { showError(e); b.disabled = false; }
        });
        actions.append(b);
      }
      versions.append(el("tr", { "data-version": String(v.version) },
        el("td", {}, `v${v.version}`),
        el("td", { class: v.active ? "ok" : "muted" }, v.active ? "active" : "inactive"),
        el("td", {}, v.created_by || "built in"),
        el("td", {}, fmtTime(v.created_at)),
        el("td", {}, String(v.files.length)),
        actions));
    }
    const active = d.versions.find((v) => v.active);
    const params = document.querySelector("#parameters tbody");
    params.replaceChildren();
    for (const p of (active ? active.manifest.parameters : [])) {
      params.append(el("tr", { "data-param": p.name },
        el("td", {}, p.name),
        el("td", {}, p.type),
        el("td", {}, p.default === null ? "(none)" : p.default || '""'),
        el("td", {}, validationText(p)),
        el("td", {}, p.mutable ? "on every start" : "at creation only"),
        el("td", {}, p.description || "")));
    }
    if (!params.children.length) params.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No parameters.")));
    const outdated = document.getElementById("outdated");
    outdated.replaceChildren();
    for (const w of d.outdated_workspaces) {
      outdated.append(el("li", { "data-ref": `${w.owner}/${w.name}` },
        el("a", { href: `/@${encodeURIComponent(w.owner)}/${encodeURIComponent(w.name)}` }, `${w.owner}/${w.name}`),
        ` on v${w.version}`));
    }
    if (!outdated.children.length) outdated.append(el("li", { class: "muted" }, "none"));
    document.body.dataset.ready = "1";
  }
  await load();
}
