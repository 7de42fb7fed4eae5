// dc-host dashboard: plain JavaScript, no build step. Talks only to this
// origin's REST API (/api/v1) with the bearer token it got from the password
// grant (kept in sessionStorage: gone when the tab closes). Pages:
//   /                   apps with live state and progress, recent runs
//   /apps/{app_id}      one app: live state, buttons, run-history charts, runs
//   /runs/{runtime_id}  one run: live progress and its logs (Server-Sent Events)
// Every text from the API is put into the page with textContent, never as HTML.
"use strict";

const API = "/api/v1";
const POLL_MS = 2000;
const store = window.sessionStorage;
let me = null;          // {subject, role}
let timers = [];        // intervals of the current page
let sources = [];       // EventSources of the current page
let charts = [];        // uPlot instances of the current page

// ---- small helpers ---------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function toast(message, bad) {
  const t = $("toast");
  t.textContent = message;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

function ago(iso) {
  if (!iso) return "—";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  const fmt = (n, u) => `${Math.round(n)} ${u} ago`;
  if (s < 0) return in_(-s);
  if (s < 90) return fmt(s, "s");
  if (s < 5400) return fmt(s / 60, "min");
  if (s < 129600) return fmt(s / 3600, "h");
  return fmt(s / 86400, "d");
}

function in_(s) {
  if (s < 90) return `in ${Math.round(s)} s`;
  if (s < 5400) return `in ${Math.round(s / 60)} min`;
  if (s < 129600) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

function until(iso) {
  if (!iso) return "—";
  const s = (Date.parse(iso) - Date.now()) / 1000;
  return s >= 0 ? in_(s) : ago(iso);
}

function duration(run) {
  if (!run.started_at) return null;
  const end = run.ended_at ? Date.parse(run.ended_at) : Date.now();
  return (end - Date.parse(run.started_at)) / 1000;
}

function fmtSecs(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

const num = (n) => (n ?? 0).toLocaleString("en");

// ---- the API ---------------------------------------------------------------

async function tokenRequest(form) {
  const r = await fetch(`${API}/auth/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error_description || body.error?.message || body.error || `HTTP ${r.status}`);
  store.setItem("dc.token", body.access_token);
  if (body.refresh_token) store.setItem("dc.refresh", body.refresh_token);
  return body;
}

async function refresh() {
  const rt = store.getItem("dc.refresh");
  if (!rt) return false;
  try {
    await tokenRequest({ grant_type: "refresh_token", refresh_token: rt });
    return true;
  } catch {
    return false;
  }
}

async function api(path, opts = {}, retried = false) {
  const headers = { Authorization: `Bearer ${store.getItem("dc.token")}` };
  if (opts.body) headers["Content-Type"] = "application/json";
  const r = await fetch(`${API}${path}`, { ...opts, headers, body: opts.body && JSON.stringify(opts.body) });
  if (r.status === 401 && !retried) {
    if (await refresh()) return api(path, opts, true);
    signOut("Your session has ended; sign in again.");
    throw new Error("signed out");
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body?.error?.message || `HTTP ${r.status}`);
  return body;
}

// An EventSource with a fresh stream ticket; reopened (after the last record
// it got) when the connection drops, until closed or ended.
function stream(path, params, handlers) {
  const s = { es: null, closed: false, after: null, close() { this.closed = true; this.es?.close(); } };
  sources.push(s);
  const open = async () => {
    if (s.closed) return;
    let ticket;
    try {
      ticket = (await api("/stream-tickets", { method: "POST" })).ticket;
    } catch (e) {
      setLive(false);
      setTimeout(open, 3000);
      return;
    }
    const q = new URLSearchParams({ ...params, ticket });
    if (s.after !== null) q.set("after", s.after);
    const es = new EventSource(`${API}${path}?${q}`);
    s.es = es;
    es.addEventListener("open", () => setLive(true));
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        if (name === "log" && ev.lastEventId) s.after = ev.lastEventId;
        fn(JSON.parse(ev.data));
      });
    }
    es.addEventListener("end", () => { s.closed = true; es.close(); });
    es.addEventListener("error", () => {
      // a ticket opens one stream once: reconnect with a new one
      es.close();
      if (!s.closed) { setLive(false); setTimeout(open, 1500); }
    });
  };
  open();
  return s;
}

function setLive(ok) {
  const l = $("live");
  l.hidden = false;
  l.classList.toggle("stale", !ok);
  l.textContent = ok ? "live" : "reconnecting";
}

// ---- sign in / out -----------------------------------------------------------

function signOut(message) {
  const rt = store.getItem("dc.refresh");
  if (rt && !message) {
    fetch(`${API}/auth/revoke`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: rt }),
    }).catch(() => {});
  }
  store.removeItem("dc.token");
  store.removeItem("dc.refresh");
  me = null;
  cleanup();
  showLogin(message);
}

function showLogin(message) {
  $("view").replaceChildren();
  $("login").hidden = false;
  $("who").hidden = $("logout").hidden = $("live").hidden = true;
  $("crumbs").replaceChildren();
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("login-user").focus();
}

async function start() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const btn = $("login-submit");
    btn.disabled = true;
    try {
      await tokenRequest({ grant_type: "password", username: $("login-user").value, password: $("login-password").value });
      $("login-password").value = "";
      await enter();
    } catch (e) {
      const err = $("login-error");
      err.hidden = false;
      err.textContent = `Sign-in failed: ${e.message}`;
    } finally {
      btn.disabled = false;
    }
  });
  $("logout").addEventListener("click", () => signOut());
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-link]");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  if (store.getItem("dc.token")) await enter();
  else showLogin();
}

async function enter() {
  try {
    me = await api("/me");
  } catch {
    return;
  }
  $("login").hidden = true;
  const who = $("who");
  who.replaceChildren(h("b", { text: me.subject }), ` · ${me.role}`);
  who.hidden = $("logout").hidden = false;
  route();
}

const canOperate = () => me && (me.role === "operator" || me.role === "admin");

// ---- routing ---------------------------------------------------------------

function go(path) {
  history.pushState(null, "", path);
  route();
}

function cleanup() {
  timers.forEach(clearInterval);
  timers = [];
  sources.forEach((s) => s.close());
  sources = [];
  charts.forEach((c) => c.destroy());
  charts = [];
}

function route() {
  if (!me) return;
  cleanup();
  const path = location.pathname;
  let m;
  if ((m = path.match(/^\/runs\/([0-9a-f]+)$/))) return runPage(m[1]);
  if ((m = path.match(/^\/apps\/([^/]+)$/))) return appPage(decodeURIComponent(m[1]));
  return appsPage();
}

function crumbs(...parts) {
  $("crumbs").replaceChildren(...parts.flatMap((p, i) => [i ? " / " : "", p]));
}

// ---- pieces ----------------------------------------------------------------

function appState(app) {
  if (app.pending_command) return ["pending", `${app.pending_command.toLowerCase()} queued`];
  if (app.run_status === "RUNNING" || app.run_status === "PENDING") return ["running", app.run_status.toLowerCase()];
  if (!app.enabled) return ["disabled", app.fatal_flag !== "NONE" ? "auto-disabled" : "disabled"];
  if (!app.run_status) return ["never", "never ran"];
  return [app.run_status.toLowerCase(), app.run_status.toLowerCase()];
}

function badge(kind, text) {
  return h("span", { class: `badge ${kind}`, "data-state": kind, text });
}

function progress(p, status, big) {
  const pct = p.total > 0 ? Math.min(100, Math.floor((100 * p.current) / p.total)) : status === "SUCCESS" ? 100 : 0;
  const fill = h("span");
  fill.style.width = `${pct}%`;
  const cls = status === "FAILED" ? "bar failed" : pct === 100 ? "bar done" : "bar";
  return h(
    "div",
    {
      class: big ? "progress big" : "progress",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": String(pct),
      title: `${num(p.current)} of ${num(p.total)} items${p.errors ? `, ${num(p.errors)} failed` : ""}`,
    },
    h("div", { class: cls }, fill),
    h("span", { class: "pct", text: `${pct} %` }),
    p.errors ? h("span", { class: "errs", text: `${num(p.errors)} err` }) : null,
  );
}

async function command(app, cmd) {
  try {
    await api(`/apps/${app.app_id}/commands`, { method: "POST", body: { command: cmd } });
    toast(`${cmd} queued for ${app.path}`);
  } catch (e) {
    toast(`${cmd} ${app.path}: ${e.message}`, true);
  }
}

function buttons(app, after) {
  if (!canOperate()) return h("span", { class: "desc", text: "view only" });
  const b = (cmd, label, cls) =>
    h("button", {
      class: cls,
      "data-command": cmd,
      onclick: async (ev) => {
        ev.target.disabled = true;
        await command(app, cmd);
        ev.target.disabled = false;
        after?.();
      },
    }, label);
  const running = app.run_status === "RUNNING" || app.run_status === "PENDING";
  return h(
    "div",
    { class: "actions" },
    running ? b("STOP", "Stop", "danger") : b("START", "Start", "primary"),
    app.enabled ? b("DISABLE", "Disable") : b("ENABLE", "Enable"),
  );
}

function runStatus(run) {
  return badge(run.status.toLowerCase(), run.status.toLowerCase());
}

function runsTable(runs, withApp, paths) {
  if (!runs.length) return h("p", { class: "empty", text: "No runs yet." });
  return h(
    "table",
    { class: "runs" },
    h("thead", {}, h("tr", {}, withApp ? h("th", { text: "App" }) : null,
      ["Run", "Status", "Started", "Duration", "Items", "Inserted", "Updated", "Deleted", "Errors"].map((t) => h("th", { text: t })))),
    h("tbody", {}, runs.map((r) =>
      h("tr", { "data-run": r.runtime_id },
        withApp ? h("td", {}, h("a", { href: `/apps/${r.app_id}`, "data-link": true, text: paths?.[r.app_id] || r.app_id.slice(0, 10) })) : null,
        h("td", {}, h("a", { class: "mono", href: `/runs/${r.runtime_id}`, "data-link": true, text: r.runtime_id.slice(0, 10) })),
        h("td", {}, runStatus(r)),
        h("td", { text: ago(r.started_at || r.created_at), title: r.started_at || r.created_at }),
        h("td", { class: "num", text: fmtSecs(duration(r)) }),
        h("td", { class: "num", text: `${num(r.items.current)} / ${num(r.items.total)}` }),
        h("td", { class: "num", text: num(r.rows.inserted) }),
        h("td", { class: "num", text: num(r.rows.updated) }),
        h("td", { class: "num", text: num(r.rows.deleted) }),
        h("td", { class: "num", text: num(r.items.errors) }),
      ))),
  );
}

// ---- page: apps --------------------------------------------------------------

async function appsPage() {
  crumbs(h("span", { text: "Apps" }));
  const view = $("view");
  const tiles = h("div", { class: "summary" });
  const table = h("div", { id: "apps" });
  const recent = h("div", { id: "recent" });
  view.replaceChildren(tiles, table, h("h2", { text: "Recent runs" }), recent);
  const load = async () => {
    let apps = [];
    let cursor = null;
    try {
      do {
        const page = await api(`/apps?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
        apps = apps.concat(page.items);
        cursor = page.next_cursor;
      } while (cursor);
      const runs = (await api("/runs?limit=15")).items;
      setLive(true);
      const count = (k) => apps.filter((a) => appState(a)[0] === k).length;
      tiles.replaceChildren(
        h("div", { class: "tile" }, h("div", { class: "n", text: apps.length }), h("div", { class: "l", text: "apps" })),
        h("div", { class: "tile running" }, h("div", { class: "n", text: count("running") }), h("div", { class: "l", text: "running" })),
        h("div", { class: "tile failed" }, h("div", { class: "n", text: count("failed") }), h("div", { class: "l", text: "failed" })),
        h("div", { class: "tile disabled" }, h("div", { class: "n", text: count("disabled") }), h("div", { class: "l", text: "disabled" })),
      );
      table.replaceChildren(appsTable(apps, load));
      const paths = Object.fromEntries(apps.map((a) => [a.app_id, a.path]));
      recent.replaceChildren(runsTable(runs, true, paths));
    } catch (e) {
      setLive(false);
    }
  };
  await load();
  timers.push(setInterval(load, POLL_MS));
}

function appsTable(apps, reload) {
  if (!apps.length) {
    return h("p", { class: "empty" }, "No apps yet: drop a plugin file into the plugins directory and run ",
      h("code", { text: "dc-host reload" }), ".");
  }
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ["App", "State", "Progress", "Last run", "Next run", "Schedule", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, apps.map((a) => {
      const [kind, text] = appState(a);
      const sched = a.schedule.kind === "cron" ? a.schedule.cron : a.schedule.kind === "every" ? `every ${fmtSecs(a.schedule.every_secs)}` : "off";
      return h("tr", { "data-app": a.path, "data-state": kind },
        h("td", {}, h("a", { href: `/apps/${a.app_id}`, "data-link": true, text: a.path }),
          h("div", { class: "desc", text: a.description })),
        h("td", {}, badge(kind, text), a.fail_count ? h("div", { class: "desc", text: `${a.fail_count} failed in a row` }) : null),
        h("td", {}, progress(a.progress, a.run_status)),
        h("td", { text: ago(a.last_run), title: a.last_run || "" }),
        h("td", { text: a.enabled ? until(a.next_run) : "—", title: a.next_run || "" }),
        h("td", { class: "mono", text: sched }),
        h("td", {}, buttons(a, reload)),
      );
    })),
  );
}

// ---- page: one app -----------------------------------------------------------

async function appPage(appId) {
  const view = $("view");
  let app;
  try {
    app = await api(`/apps/${encodeURIComponent(appId)}`);
  } catch (e) {
    view.replaceChildren(h("p", { class: "error", text: e.message }));
    return;
  }
  crumbs(h("a", { href: "/", "data-link": true, text: "Apps" }), h("span", { text: app.path }));
  const head = h("div");
  const chartsBox = h("div", { class: "charts" });
  const runsBox = h("div");
  const logs = logBox();
  view.replaceChildren(head, h("h2", { text: "Run history" }), chartsBox, h("h2", { text: "Runs" }), runsBox,
    h("h2", { text: "Live log of this app" }), logs.el);
  const show = (a) => {
    app = a;
    const [kind, text] = appState(a);
    head.replaceChildren(
      h("div", { class: "head" }, h("h1", { text: a.path }), badge(kind, text), buttons(a)),
      h("div", { class: "desc", text: a.description }),
      progress(a.progress, a.run_status, true),
      facts([
        ["Active version", a.active_version || "—"],
        ["Last run", ago(a.last_run)],
        ["Next run", a.enabled ? until(a.next_run) : "—"],
        ["Failed in a row", String(a.fail_count)],
        ["Disabled because", a.fatal_flag !== "NONE" ? `${a.fatal_flag}: ${a.fatal_msg || ""}` : "—"],
      ]),
    );
  };
  show(app);
  let lastStatus = app.run_status;
  const loadRuns = async () => {
    const runs = (await api(`/runs?app=${app.app_id}&limit=100`)).items;
    runsBox.replaceChildren(runsTable(runs.slice(0, 20), false));
    drawHistory(chartsBox, runs);
  };
  await loadRuns();
  stream(`/apps/${app.app_id}/events`, { level: "info" }, {
    state: (a) => {
      show(a);
      if (a.run_status !== lastStatus) {
        lastStatus = a.run_status;
        loadRuns();
      }
    },
    log: (rec) => logs.add(rec),
    lagged: (d) => logs.note(`${d.skipped} records skipped (this screen read too slowly)`),
  });
}

function facts(pairs) {
  return h("div", { class: "facts" }, pairs.map(([l, v]) => h("div", {}, h("span", { class: "l", text: l }), h("span", { text: v }))));
}

function drawHistory(box, runs) {
  charts.forEach((c) => c.destroy());
  charts = [];
  const done = runs.filter((r) => r.started_at && r.ended_at).reverse();
  if (!done.length || !window.uPlot) {
    box.replaceChildren(h("p", { class: "empty", text: "Charts appear after the first finished run." }));
    return;
  }
  const x = done.map((r) => Date.parse(r.started_at) / 1000);
  const specs = [
    ["Duration (s)", [["duration", done.map((r) => duration(r)), "#58a6ff"]]],
    ["Rows", [
      ["inserted", done.map((r) => r.rows.inserted), "#3fb950"],
      ["updated", done.map((r) => r.rows.updated), "#d29922"],
      ["deleted", done.map((r) => r.rows.deleted), "#f85149"],
    ]],
    ["Error rate (%)", [["failed items", done.map((r) => (r.items.total ? (100 * r.items.errors) / r.items.total : 0)), "#f85149"]]],
  ];
  const boxes = specs.map(([title]) => h("div", { class: "chart" }, h("h3", { text: title })));
  box.replaceChildren(...boxes);
  const axis = { stroke: "#8b949e", grid: { stroke: "#21262d" }, ticks: { stroke: "#30363d" } };
  specs.forEach(([, series], i) => {
    const width = Math.max(300, boxes[i].clientWidth - 20);
    const opts = {
      width,
      height: 180,
      axes: [axis, axis],
      series: [{}, ...series.map(([label, , color]) => ({ label, stroke: color, width: 2, points: { show: done.length < 40 } }))],
      legend: { show: true },
    };
    charts.push(new uPlot(opts, [x, ...series.map(([, data]) => data)], boxes[i]));
  });
}

// ---- page: one run -----------------------------------------------------------

function logBox() {
  const el = h("div", { class: "logs", id: "logs" });
  let follow = true;
  el.addEventListener("scroll", () => { follow = el.scrollTop + el.clientHeight >= el.scrollHeight - 10; });
  const push = (node) => {
    el.append(node);
    while (el.childElementCount > 5000) el.firstElementChild.remove();
    if (follow) el.scrollTop = el.scrollHeight;
  };
  return {
    el,
    add(rec) {
      const t = new Date(rec.ts);
      const ctx = rec.context && Object.keys(rec.context).length ? ` ${JSON.stringify(rec.context)}` : "";
      push(h("div", { class: "rec", "data-id": rec.id },
        h("span", { class: "ts", text: t.toLocaleTimeString("en-GB", { hour12: false }) }),
        h("span", { class: `lv ${rec.level}`, text: rec.level }),
        h("span", { class: "tg", text: rec.target, title: rec.target }),
        h("span", {}, rec.message, h("span", { class: "ctx", text: ctx }))));
    },
    note(text) {
      push(h("div", { class: "note", text }));
    },
    clear() {
      el.replaceChildren();
    },
  };
}

async function runPage(runtimeId) {
  const view = $("view");
  let run;
  try {
    run = await api(`/runs/${runtimeId}`);
  } catch (e) {
    view.replaceChildren(h("p", { class: "error", text: e.message }));
    return;
  }
  crumbs(h("a", { href: "/", "data-link": true, text: "Apps" }),
    h("a", { href: `/apps/${run.app_id}`, "data-link": true, text: run.app_path || run.app_id.slice(0, 10) }),
    h("span", { class: "mono", text: run.runtime_id.slice(0, 10) }));
  const head = h("div", { id: "run" });
  const logs = logBox();
  const level = h("select", { id: "level" }, ["trace", "debug", "info", "warn", "error"].map((l) =>
    h("option", { value: l, selected: l === "info", text: l })));
  const status = h("span", { id: "stream-state", class: "desc" });
  view.replaceChildren(head, h("h2", { text: "Log" }),
    h("div", { class: "logbar" }, "Level", level, status), logs.el);
  const show = (r) => {
    run = { ...run, ...r };
    const stop = canOperate() && (r.status === "RUNNING" || r.status === "PENDING")
      ? h("button", { class: "danger", onclick: async () => {
        try { await api(`/runs/${r.runtime_id}/stop`, { method: "POST", body: {} }); toast("stop requested"); }
        catch (e) { toast(e.message, true); }
      } }, "Stop run")
      : null;
    head.replaceChildren(
      h("div", { class: "head" }, h("h1", { class: "mono", text: r.runtime_id }), runStatus(r), stop),
      progress(r.items, r.status, true),
      facts([
        ["Items", `${num(r.items.current)} / ${num(r.items.total)}`],
        ["Failed items", num(r.items.errors)],
        ["Rows inserted", num(r.rows.inserted)],
        ["Rows updated", num(r.rows.updated)],
        ["Rows deleted", num(r.rows.deleted)],
        ["Unchanged", num(r.rows.unchanged)],
        ["Started", r.started_at ? new Date(r.started_at).toLocaleString("en-GB") : "—"],
        ["Duration", fmtSecs(duration(r))],
        ["Plugin version", r.plugin_version],
        ["Host", r.host_name],
        ["Reason", r.reason || "—"],
      ]),
    );
  };
  show(run);
  let s = null;
  const open = () => {
    s?.close();
    logs.clear();
    status.textContent = "streaming";
    s = stream(`/runs/${run.runtime_id}/events`, { level: level.value }, {
      state: show,
      log: (rec) => logs.add(rec),
      lagged: (d) => logs.note(`${d.skipped} records skipped (this screen read too slowly)`),
      truncated: (d) => logs.note(`older records left out; see GET ${API}/logs?run=${run.runtime_id}`),
      end: (d) => { status.textContent = `run ended (${(d.status || "").toLowerCase()})`; status.dataset.ended = "true"; },
    });
  };
  level.addEventListener("change", open);
  open();
}

start();
