// The dashboard: datasources, jobs, a job's detail, a driver's request stream, schedules.
// Every piece of data comes from the store's API with the tab's token: the page shows what the
// API gives that token, nothing more. Live updates come over the store's websockets.

import { api, ApiError, LiveSocket, seg } from "./api.js";
import { RateChart } from "./chart.js";
import { clearToken, describeToken, getToken, setToken } from "./token.js";

const CORE_STATUSES = ["submitted", "accepted", "retrying", "running", "stopped", "complete", "cancelled", "forbidden", "failed"];
const TERMINAL = new Set(["complete", "cancelled", "forbidden", "failed"]);
const COUNT_LIMIT = 1000;
const COUNT_RESYNC_MS = 60000;
const MAX_LIVE_DATASOURCES = 10;
const STREAM_ROWS = 1000;
const COUNTED_DATASOURCES = 20; // the overview counts the first ones; the others on request

// DOM helpers -------------------------------------------------------------------------------------

/** An element: h("a", {href: "#", class: "x", onclick: f}, "text", child...). Text is never HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && key !== "list" && key !== "form") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

/** Children for replaceChildren: flattened, without the null/false of conditionals. */
function nodes(...children) {
  return children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false);
}

function time(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function short(value, max = 80) {
  const text = JSON.stringify(value);
  return text === undefined ? "" : text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

function dsHash(dsid, ...rest) {
  return "#/ds/" + [dsid, ...rest].map(encodeURIComponent).join("/");
}

// State -------------------------------------------------------------------------------------------

const state = {
  who: null, // {role, client, dsids, expires} read from the token
  catalogue: null, // [{datasource_id, description}]
  sockets: new Map(), // dsid -> LiveSocket (the client's or the driver's view)
  index: new Map(), // dsid -> {jobs: Map(job -> {status, version, live}), more, loadedAt, ready}
  countLoads: new Map(), // dsid -> the read of the counts in flight
  listeners: new Set(), // (dsid, frame) => void, for the current view
  gapListeners: new Set(), // (dsid) => void: a socket reconnected without resuming
  cleanup: [], // what the current view stops when it is left
  generation: 0, // bumped on each navigation
  chart: new RateChart(),
};

const isDriver = () => state.who && state.who.role === "driver";
const isAdmin = () => state.who && state.who.role === "admin";
const seesJobs = () => state.who && state.who.role !== "driver";
const seesStream = () => state.who && state.who.role !== "client";

function toast(message, kind = "error") {
  const box = h("div", { class: `toast ${kind}`, role: "status" }, message);
  document.body.append(box);
  setTimeout(() => box.remove(), 6000);
}

// Live sockets, the connection pill, counts ------------------------------------------------------

function updatePill() {
  const pill = $("conn");
  const sockets = [...state.sockets.values()];
  if (!sockets.length) {
    pill.hidden = true;
    $("banner").hidden = true;
    document.body.classList.remove("disconnected");
    return;
  }
  pill.hidden = false;
  const states = sockets.map((s) => s.state);
  let text = "Live";
  let kind = "live";
  if (states.includes("expired")) {
    text = "Token expired: sign in again";
    kind = "down";
  } else if (states.includes("reconnecting")) {
    text = "Disconnected: reconnecting…";
    kind = "down";
  } else if (states.includes("connecting")) {
    text = "Connecting…";
    kind = "wait";
  }
  pill.textContent = text;
  pill.className = `pill ${kind}`;
  document.body.classList.toggle("disconnected", kind === "down");
  const banner = $("banner");
  banner.hidden = kind !== "down";
  banner.textContent = states.includes("expired")
    ? "The token has expired: sign out and sign in with a new one."
    : "The store cannot be reached. The page reconnects by itself and catches up on every change it missed; until then what it shows may be out of date.";
}

/** Count a job record in the chart: its submit, and its end if it ended. */
function chartRecord(rec) {
  const key = `${rec.datasource_id}\u0000${rec.job}`;
  state.chart.add("submits", rec.submitted_at, key + "\u0000s");
  if (TERMINAL.has(rec.status)) state.chart.add("completions", rec.updated_at, key + "\u0000c");
}

/** Count a frame in the chart: notifications by their record, request entries as submits. */
function chartFrame(frame) {
  if (frame.type === "status" && frame.data) chartRecord(frame.data);
  else if (frame.type === "request") {
    state.chart.add("submits", frame.timestamp, `${frame.datasource_id}\u0000${frame.job}\u0000s`);
  }
}

function ensureSocket(dsid) {
  if (state.sockets.has(dsid)) return;
  const path = isDriver() ? `/sub/${encodeURIComponent(dsid)}/jobs` : `/sub/${encodeURIComponent(dsid)}/job`;
  let opened = false;
  const socket = new LiveSocket(path, {
    after: null,
    onFrame: (frame) => {
      chartFrame(frame);
      countFrame(dsid, frame);
      for (const fn of state.listeners) fn(dsid, frame);
    },
    onState: updatePill,
    onOpen: (resumed) => {
      // Opened live-only: what changed before (or while away) comes from a fresh read.
      if (!resumed) {
        if (opened) loadCounts(dsid).catch(() => {});
        for (const fn of state.gapListeners) fn(dsid, !opened);
      }
      opened = true;
    },
  });
  state.sockets.set(dsid, socket);
  updatePill();
}

/** Forget a datasource's socket (the token may not use that datasource). */
function dropSocket(dsid) {
  const socket = state.sockets.get(dsid);
  if (socket) socket.stop();
  state.sockets.delete(dsid);
  updatePill();
}

function stopSockets() {
  for (const s of state.sockets.values()) s.stop();
  state.sockets.clear();
  updatePill();
}

/**
 * Job counts by status. The API has no count endpoint: the counts are read once from the list
 * endpoint (one call per status, up to 1,000 jobs each), then kept up to date from the socket's
 * notifications (each job's latest status, by version), and read again after a reconnection that
 * could not resume and at most once a minute while changes come in.
 */
function loadCounts(dsid) {
  if (!seesJobs()) return Promise.resolve(null);
  const running = state.countLoads.get(dsid);
  if (running) return running;
  if (!state.index.has(dsid)) state.index.set(dsid, { jobs: new Map(), more: new Set(), loadedAt: 0, ready: false });
  const started = Date.now();
  const jobs = new Map();
  const more = new Set();
  const promise = Promise.all(
    CORE_STATUSES.map(async (status) => {
      const { body } = await api("GET", `${seg(dsid, "job")}?status=${status}&limit=${COUNT_LIMIT}`);
      for (const rec of body.jobs) {
        chartRecord(rec);
        noteJob(jobs, rec, 0);
      }
      if (body.next) more.add(status);
    }),
  )
    .then(() => {
      // Changes seen on the socket while the lists were read are newer than what a list says.
      const old = state.index.get(dsid);
      if (old) {
        for (const [job, seen] of old.jobs) {
          const listed = jobs.get(job);
          if (listed ? seen.version > listed.version : seen.live >= started) jobs.set(job, seen);
        }
      }
      state.index.set(dsid, { jobs, more, loadedAt: Date.now(), ready: true });
      renderCounts(dsid);
    })
    .finally(() => state.countLoads.delete(dsid));
  state.countLoads.set(dsid, promise);
  return promise;
}

function noteJob(jobs, rec, live) {
  const known = jobs.get(rec.job);
  if (!known || rec.version > known.version) jobs.set(rec.job, { status: rec.status, version: rec.version, live });
}

/** A notification moves the counts without a new read. */
function countFrame(dsid, frame) {
  const entry = state.index.get(dsid);
  if (!entry || frame.type !== "status" || !frame.data) return;
  noteJob(entry.jobs, frame.data, Date.now());
  if (entry.ready && Date.now() - entry.loadedAt > COUNT_RESYNC_MS) {
    entry.loadedAt = Date.now();
    loadCounts(dsid).catch(() => {});
  }
  renderCounts(dsid);
}

function tally(dsid) {
  const entry = state.index.get(dsid);
  if (!entry || !entry.ready) return null;
  const counts = {};
  for (const { status } of entry.jobs.values()) counts[status] = (counts[status] || 0) + 1;
  return { counts, more: entry.more };
}

const countRenders = new Set();
function renderCounts(dsid) {
  if (countRenders.has(dsid)) return;
  countRenders.add(dsid);
  requestAnimationFrame(() => {
    countRenders.delete(dsid);
    for (const el of document.querySelectorAll("[data-counts]")) {
      if (el.dataset.counts === dsid) el.replaceWith(countsCell(dsid));
    }
  });
}

function countsCell(dsid) {
  const counted = tally(dsid);
  const cell = h("div", { class: "counts", "data-counts": dsid });
  if (!seesJobs()) {
    cell.append(h("span", { class: "muted" }, "job counts need a client or admin token"));
    return cell;
  }
  if (!counted) {
    const index = (state.catalogue || []).findIndex((d) => d.datasource_id === dsid);
    if (index >= COUNTED_DATASOURCES) {
      cell.append(h("button", { type: "button", class: "small ghost", onclick: (event) => { event.target.disabled = true; loadCounts(dsid).catch(() => {}); } }, "count jobs"));
    } else cell.append(h("span", { class: "muted" }, "counting…"));
    return cell;
  }
  let total = 0;
  const statuses = [...CORE_STATUSES, ...Object.keys(counted.counts).filter((s) => !CORE_STATUSES.includes(s))];
  for (const status of statuses) {
    const n = counted.counts[status] || 0;
    total += n;
    if (n) cell.append(h("a", { class: `count s-${status}`, href: dsHash(dsid) + `?status=${status}`, "data-status": status }, `${status} `, h("b", {}, counted.more.has(status) ? `${n}+` : n)));
  }
  if (!total) cell.append(h("span", { class: "muted" }, "no jobs"));
  return cell;
}

// Page frame ------------------------------------------------------------------------------------

function setCrumbs(...items) {
  const nav = $("crumbs");
  nav.replaceChildren(
    ...nodes(items.map((item, i) => [
      i ? h("span", { class: "sep" }, "/") : null,
      item.href ? h("a", { href: item.href }, item.text) : h("span", {}, item.text),
    ])),
  );
}

function mount(...children) {
  $("main").replaceChildren(...nodes(children));
}

function stateBox(kind, title, ...detail) {
  return h("div", { class: `state ${kind}`, role: kind === "loading" ? "status" : "alert" }, h("strong", {}, title), ...detail.map((d) => h("p", {}, d)));
}

/** Show an API failure as the state of the view; retry by itself when the store did not answer. */
function showFailure(error, what) {
  if (!(error instanceof ApiError)) throw error;
  if (error.status === 401) {
    mount(stateBox("forbidden", "The store refused this token.", error.message, h("button", { type: "button", onclick: signOut }, "Sign in again")));
  } else if (error.status === 403) {
    mount(stateBox("forbidden", `This token may not see ${what}.`, error.message));
  } else if (error.status === 404) {
    mount(stateBox("empty", `No ${what}.`, error.message, h("a", { href: "#/" }, "Back to the datasources")));
  } else if (error.status === 0) {
    mount(stateBox("down", "Disconnected from the store.", "Retrying by itself…"));
    const timer = setTimeout(route, 2000);
    state.cleanup.push(() => clearTimeout(timer));
  } else {
    mount(stateBox("forbidden", `The store could not show ${what}.`, error.message));
  }
}

// Sign in / out -----------------------------------------------------------------------------------

function renderSignIn(message) {
  setCrumbs({ text: "Sign in" });
  $("who").hidden = true;
  $("signout").hidden = true;
  const input = h("textarea", { id: "token", name: "token", rows: 4, autocomplete: "off", required: true, placeholder: "Paste a token made by 'jobqueue-store token'" });
  const error = h("p", { class: "error", id: "signin-error", role: "alert" }, message || "");
  const form = h(
    "form",
    {
      class: "card signin",
      method: "post",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!describeToken(token)) {
          error.textContent = "This is not a token made by 'jobqueue-store token'.";
          return;
        }
        setToken(token);
        try {
          await api("GET", "/cat");
        } catch (e) {
          clearToken();
          error.textContent = e instanceof ApiError ? e.message : String(e);
          return;
        }
        input.value = "";
        start();
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a client, driver or admin token. It is kept in this tab only (session storage) and sent to this store with each request."),
    h("label", { for: "token" }, "Token"),
    input,
    error,
    h("button", { type: "submit", id: "signin" }, "Sign in"),
  );
  mount(form);
  input.focus();
}

function signOut() {
  clearToken();
  leaveView();
  stopSockets();
  state.who = null;
  state.catalogue = null;
  state.index.clear();
  location.hash = "#/";
  renderSignIn();
}

function start() {
  const token = getToken();
  if (!token) return renderSignIn();
  state.who = describeToken(token);
  if (!state.who) {
    clearToken();
    return renderSignIn("The token kept in this tab could not be read; paste it again.");
  }
  const who = $("who");
  const expires = state.who.expires ? ` · expires ${time(state.who.expires)}` : "";
  who.textContent = (state.who.role === "client" ? `client ${state.who.client}` : state.who.role) + expires;
  who.hidden = false;
  $("signout").hidden = false;
  route();
}

// Routing ---------------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

function leaveView() {
  for (const fn of state.cleanup.splice(0)) fn();
  state.listeners.clear();
  state.gapListeners.clear();
  state.chart.detach();
}

async function route() {
  state.generation += 1; // a view whose reply comes after the user moved on shows nothing
  leaveView();
  if (!getToken()) return renderSignIn();
  const { parts, query } = parseHash();
  if (parts[0] === "ds" && parts[1]) {
    const dsid = parts[1];
    if (parts[2] === "job" && parts[3]) return viewJob(dsid, parts[3]);
    if (parts[2] === "stream" || (isDriver() && !parts[2])) return viewStream(dsid);
    if (parts[2] === "schedules") return viewSchedules(dsid);
    return viewJobs(dsid, query);
  }
  return viewOverview();
}

async function loadCatalogue(fresh = false) {
  if (!state.catalogue || fresh) {
    const { body } = await api("GET", "/cat");
    state.catalogue = body.datasources;
    for (const ds of state.catalogue.slice(0, MAX_LIVE_DATASOURCES)) ensureSocket(ds.datasource_id);
  }
  return state.catalogue;
}

function chartCard() {
  const canvas = h("canvas", { class: "chart", width: 320, height: 72, "aria-label": "submits and completions per second" });
  const legend = h("p", { class: "legend" });
  const keys = h("p", { class: "keys" }, h("span", { class: "key submits" }, "submits"), h("span", { class: "key completions" }, isDriver() ? "(completions: not in a driver's stream)" : "completions"));
  const card = h("section", { class: "card chart-card" }, h("div", { class: "row" }, h("h2", {}, "Activity"), keys, h("span", { class: "spacer" }), legend), canvas);
  queueMicrotask(() => state.chart.attach(canvas, legend));
  return card;
}

// Overview: the datasources ------------------------------------------------------------------------

async function viewOverview() {
  setCrumbs({ text: "Datasources" });
  mount(stateBox("loading", "Loading datasources…"));
  const generation = state.generation;
  let catalogue;
  try {
    catalogue = await loadCatalogue(true);
  } catch (e) {
    if (generation === state.generation) showFailure(e, "the datasources");
    return;
  }
  if (generation !== state.generation) return;
  const scope = isAdmin() ? "every datasource of this store (admin)" : isDriver() ? "the datasources this driver token may use" : "the datasources this token may use, with your own jobs";
  if (!catalogue.length) {
    return mount(chartCard(), stateBox("empty", "No datasources yet.", "A driver declares one with PUT /jobs/<DSID>; it then appears here."));
  }
  const rows = catalogue.map((ds) => {
    const id = ds.datasource_id;
    return h(
      "tr",
      { "data-ds": id },
      h("td", {}, h("a", { href: dsHash(id), class: "ds-link" }, id)),
      h("td", { class: "muted" }, ds.description || ""),
      h("td", {}, countsCell(id)),
      h(
        "td",
        { class: "links" },
        seesJobs() ? h("a", { href: dsHash(id) }, "jobs") : null,
        seesStream() ? h("a", { href: dsHash(id, "stream") }, "request stream") : null,
        seesJobs() ? h("a", { href: dsHash(id, "schedules") }, "schedules") : null,
      ),
    );
  });
  mount(
    chartCard(),
    h("section", { class: "card" }, h("h2", {}, "Datasources"), h("p", { class: "muted" }, `Showing ${scope}.`), h("table", { class: "grid", id: "datasources" }, h("thead", {}, h("tr", {}, h("th", {}, "Datasource"), h("th", {}, "Description"), h("th", {}, "Jobs by status"), h("th", {}, ""))), h("tbody", {}, rows))),
  );
  if (seesJobs()) for (const ds of catalogue.slice(0, COUNTED_DATASOURCES)) loadCounts(ds.datasource_id).catch(() => {});
}

// Jobs of one datasource --------------------------------------------------------------------------

const jobsPrefs = new Map(); // dsid -> {status, limit}

async function viewJobs(dsid, query) {
  setCrumbs({ text: "Datasources", href: "#/" }, { text: dsid });
  if (isDriver()) return viewStream(dsid);
  const prefs = jobsPrefs.get(dsid) || { status: "", limit: 50 };
  if (query.has("status")) prefs.status = query.get("status");
  jobsPrefs.set(dsid, prefs);
  const page = { cursors: [null], index: 0, next: null, records: new Map(), rows: new Map(), loading: false, pending: [], ticket: 0 };
  ensureSocket(dsid);

  const tbody = h("tbody", {});
  const info = h("span", { class: "muted", id: "page-info" });
  const prev = h("button", { type: "button", id: "prev", class: "ghost", onclick: () => go(page.index - 1) }, "‹ Newer");
  const next = h("button", { type: "button", id: "next", class: "ghost", onclick: () => go(page.index + 1) }, "Older ›");
  const statusSelect = h("select", { id: "status-filter", "aria-label": "status", onchange: () => { prefs.status = statusSelect.value; reset(); } }, h("option", { value: "" }, "all statuses"), CORE_STATUSES.map((s) => h("option", { value: s, selected: s === prefs.status }, s)));
  const limitSelect = h("select", { id: "page-size", "aria-label": "page size", onchange: () => { prefs.limit = Number(limitSelect.value); reset(); } }, [25, 50, 100, 500, 1000].map((n) => h("option", { value: n, selected: n === prefs.limit }, `${n} a page`)));
  const body = h("div", { id: "jobs-body" }, stateBox("loading", "Loading jobs…"));
  const table = h("table", { class: "grid jobs", id: "jobs" }, h("thead", {}, h("tr", {}, h("th", {}, "Job"), isAdmin() ? h("th", {}, "Client") : null, h("th", {}, "Status"), h("th", {}, "Progress"), h("th", {}, "Submitted"), h("th", {}, "Updated"), h("th", {}, ""))), tbody);

  mount(
    h("section", { class: "card" }, h("div", { class: "row" }, h("h2", {}, `Jobs on ${dsid}`), h("span", { class: "spacer" }), h("a", { href: dsHash(dsid, "schedules") }, "schedules"), isAdmin() ? h("a", { href: dsHash(dsid, "stream") }, "request stream") : null), countsCell(dsid)),
    chartCard(),
    h("section", { class: "card" }, h("div", { class: "row toolbar" }, statusSelect, limitSelect, h("span", { class: "spacer" }), info, prev, next), body),
  );

  function matches(rec) {
    return !prefs.status || rec.status === prefs.status;
  }

  function render() {
    const sorted = [...page.records.values()].sort((a, b) => b.submitted_at - a.submitted_at || (a.job < b.job ? 1 : -1));
    const fragment = document.createDocumentFragment();
    const rows = new Map();
    for (const rec of sorted) {
      const tr = page.rows.get(rec.job)?.rec === rec ? page.rows.get(rec.job) : jobRow(dsid, rec);
      rows.set(rec.job, tr);
      fragment.append(tr);
    }
    page.rows = rows;
    tbody.replaceChildren(fragment);
    if (!sorted.length) {
      const filter = prefs.status ? ` with status ${prefs.status}` : "";
      body.replaceChildren(stateBox("empty", `No jobs${filter} on ${dsid}${page.index ? " on this page" : ""}.`, isAdmin() ? "Jobs submitted by any client appear here as they arrive." : "Jobs you submit (POST /<DSID>/job/) appear here as they arrive."));
    } else if (body.firstChild !== table) {
      body.replaceChildren(table);
    }
    info.textContent = sorted.length ? `page ${page.index + 1} · ${sorted.length} job${sorted.length === 1 ? "" : "s"}` : "";
    prev.disabled = page.index === 0;
    next.disabled = !page.next;
  }

  let liveBeforeLoad = false;
  async function load() {
    page.loading = true;
    const ticket = ++page.ticket; // only the latest read of the page counts
    liveBeforeLoad = state.sockets.get(dsid)?.state === "live";
    const cursor = page.cursors[page.index];
    let url = `${seg(dsid, "job")}?limit=${prefs.limit}`;
    if (prefs.status) url += `&status=${encodeURIComponent(prefs.status)}`;
    if (cursor) url += `&cursor=${encodeURIComponent(cursor)}`;
    try {
      const { body: reply } = await api("GET", url);
      if (!alive || ticket !== page.ticket) return;
      page.next = reply.next;
      for (const rec of reply.jobs) chartRecord(rec);
      const fresh = new Map();
      for (const rec of reply.jobs) {
        const known = page.records.get(rec.job);
        fresh.set(rec.job, known && known.version > rec.version ? known : rec);
      }
      page.records = fresh;
      // Changes that arrived while the page was being read apply on top of it.
      for (const rec of page.pending.splice(0)) apply(rec);
      render();
    } catch (e) {
      if (!alive || ticket !== page.ticket) return;
      if (e instanceof ApiError && [401, 403, 404].includes(e.status)) dropSocket(dsid);
      showFailure(e, `the jobs of ${dsid}`);
    } finally {
      if (ticket === page.ticket) {
        page.loading = false;
        page.pending.length = 0;
      }
    }
  }

  function go(index) {
    if (index < 0 || (index > page.index && (!page.next || page.next === "more"))) return;
    if (index > page.index) page.cursors[index] = page.next;
    page.index = index;
    page.records = new Map();
    load();
  }

  function reset() {
    page.cursors = [null];
    page.index = 0;
    page.records = new Map();
    load();
  }

  let alive = true;
  state.cleanup.push(() => { alive = false; });
  state.listeners.add((from, frame) => {
    if (from !== dsid || frame.type !== "status" || !frame.data) return;
    if (page.loading) page.pending.push(frame.data);
    else if (apply(frame.data)) scheduleRender();
  });

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      if (alive) render();
    });
  }

  /** Merge one changed record into the page; whether the page changed. */
  function apply(rec) {
    const known = page.records.get(rec.job);
    if (known && known.version >= rec.version) return false;
    if (known) {
      if (matches(rec)) page.records.set(rec.job, rec);
      else page.records.delete(rec.job);
    } else {
      if (page.index !== 0 || !matches(rec)) return false;
      const oldest = Math.min(...[...page.records.values()].map((r) => r.submitted_at));
      if (page.records.size >= prefs.limit && rec.submitted_at < oldest) return false;
      page.records.set(rec.job, rec);
      if (page.records.size > prefs.limit) {
        const last = [...page.records.values()].sort((a, b) => a.submitted_at - b.submitted_at)[0];
        page.records.delete(last.job);
        page.next = page.next || "more";
        refreshCursor();
      }
    }
    return true;
  }
  // The socket opened after the page was read (or came back without resuming): read it again.
  state.gapListeners.add((from, first) => {
    if (from === dsid && !(first && liveBeforeLoad)) load();
  });

  // After live rows pushed older ones off the first page, the next page starts after the new
  // last row: read the first page again to get the store's cursor.
  let cursorTimer = null;
  function refreshCursor() {
    clearTimeout(cursorTimer);
    cursorTimer = setTimeout(() => { if (alive && page.index === 0) load(); }, 1000);
  }
  state.cleanup.push(() => clearTimeout(cursorTimer));

  loadCounts(dsid).catch(() => {});
  await load();
}

function jobRow(dsid, rec) {
  const progress = typeof rec.progress === "number" ? h("progress", { max: 1, value: rec.progress, title: `${Math.round(rec.progress * 100)}%` }) : h("span", { class: "muted" }, TERMINAL.has(rec.status) ? "" : "—");
  const tr = h(
    "tr",
    { "data-job": rec.job, class: TERMINAL.has(rec.status) ? "done" : "" },
    h("td", {}, h("a", { href: dsHash(dsid, "job", rec.job), class: "job-link" }, rec.job)),
    isAdmin() ? h("td", {}, rec.client) : null,
    h("td", {}, badge(rec.status), rec.cancel_requested && !TERMINAL.has(rec.status) ? h("span", { class: "flag" }, "cancel requested") : null),
    h("td", { class: "progress-cell" }, progress),
    h("td", { class: "time" }, time(rec.submitted_at)),
    h("td", { class: "time" }, time(rec.updated_at)),
    h("td", { class: "actions" }, jobActions(dsid, rec, true)),
  );
  tr.rec = rec;
  return tr;
}

/** The buttons the token allows for a job: cancel; stop/start and only when the record has them. */
function jobActions(dsid, rec, compact) {
  if (!seesJobs()) return [];
  const buttons = [];
  const act = (label, path, method = "POST") =>
    h("button", {
      type: "button",
      class: compact ? "small" : "",
      "data-action": label.toLowerCase(),
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await api(method, path);
          toast(`${label}: requested for ${rec.job}.`, "ok");
        } catch (e) {
          event.target.disabled = false;
          toast(e instanceof ApiError ? e.message : String(e));
        }
      },
    }, label);
  if (!TERMINAL.has(rec.status) && !rec.cancel_requested) buttons.push(act("Cancel", seg(dsid, "job", rec.job) + "cancel"));
  if ("desired_state" in rec && !TERMINAL.has(rec.status)) {
    if (rec.desired_state !== "stopped") buttons.push(act("Stop", seg(dsid, "job", rec.job) + "stop"));
    if (rec.desired_state === "stopped") buttons.push(act("Start", seg(dsid, "job", rec.job) + "start"));
  }
  return buttons;
}

// One job ---------------------------------------------------------------------------------------

async function viewJob(dsid, job) {
  setCrumbs({ text: "Datasources", href: "#/" }, { text: dsid, href: dsHash(dsid) }, { text: job });
  mount(stateBox("loading", `Loading job ${job}…`));
  const path = isDriver() ? seg("jobs", dsid, "job", job) : seg(dsid, "job", job);
  const generation = state.generation;
  let rec;
  try {
    rec = (await api("GET", path)).body;
  } catch (e) {
    if (generation === state.generation) showFailure(e, `job ${job}`);
    return;
  }
  if (generation !== state.generation) return;
  let alive = true;
  const history = new Map(); // seq -> frame
  const head = h("div", {});
  const historyBody = h("tbody", {});
  const historyBox = h("div", {}, stateBox("loading", "Replaying this job's history from the log…"));
  const revisionsBox = h("div", {});

  function renderRecord() {
    const fields = [
      ["Datasource", rec.datasource_id],
      ["Client", rec.client],
      ["Status", badge(rec.status)],
      ["Cancel requested", rec.cancel_requested ? "yes" : "no"],
      ["Version", rec.version],
      ["Submitted", time(rec.submitted_at)],
      ["Updated", time(rec.updated_at)],
    ];
    if ("revision" in rec) fields.push(["Revision", rec.revision]);
    if ("desired_state" in rec) fields.push(["Desired state", rec.desired_state]);
    if (rec.lease) fields.push(["Lease", `${rec.lease.worker} · attempt ${rec.lease.attempt ?? "?"} · expires ${time(rec.lease.expires_at)}`]);
    for (const key of ["schedule", "scheduled_for", "timeout"]) if (key in rec) fields.push([key, key === "scheduled_for" ? time(rec[key]) : String(rec[key])]);
    const progress = typeof rec.progress === "number" ? rec.progress : TERMINAL.has(rec.status) && rec.status === "complete" ? 1 : 0;
    head.replaceChildren(...nodes(
      h("div", { class: "row" }, h("h2", { id: "job-title" }, rec.job), badge(rec.status), h("span", { class: "spacer" }), jobActions(dsid, rec, false)),
      h("div", { class: "progress-line" }, h("progress", { id: "job-progress", max: 1, value: progress }), h("span", { class: "muted" }, typeof rec.progress === "number" ? `${Math.round(rec.progress * 100)}%` : "no progress reported")),
      h("dl", { class: "fields" }, fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h3", {}, "Request"),
      h("pre", { id: "job-request" }, json(rec.request)),
      "response" in rec ? [h("h3", {}, "Response"), h("pre", { id: "job-response" }, json(rec.response))] : null,
      rec.error !== undefined && rec.error !== null ? [h("h3", {}, "Error"), h("pre", { class: "error", id: "job-error" }, rec.error)] : null,
    ));
  }

  function renderHistory() {
    const frames = [...history.values()].sort((a, b) => a.seq - b.seq);
    historyBody.replaceChildren(
      ...frames.map((f) => {
        const d = f.data || {};
        const what = f.type === "status" ? [badge(d.status), d.cancel_requested ? " cancel requested" : "", typeof d.progress === "number" ? ` ${Math.round(d.progress * 100)}%` : "", d.error ? ` error: ${d.error}` : ""] : [h("span", { class: `badge t-${f.type}` }, f.type), d.reason ? ` reason: ${d.reason}` : ""];
        return h("tr", { "data-seq": f.seq }, h("td", {}, f.seq), h("td", { class: "time" }, time(f.type === "status" ? d.updated_at : f.timestamp)), h("td", {}, ...what), h("td", {}, f.type === "status" ? `v${d.version}` : ""));
      }),
    );
    if (frames.length) historyBox.replaceChildren(h("table", { class: "grid", id: "history" }, h("thead", {}, h("tr", {}, h("th", {}, "seq"), h("th", {}, "time"), h("th", {}, "event"), h("th", {}, ""))), historyBody));
    else historyBox.replaceChildren(stateBox("empty", "No events for this job in the log (retention may have purged them)."));
  }

  async function refresh() {
    try {
      const fresh = (await api("GET", path)).body;
      if (alive && fresh.version >= rec.version) {
        rec = fresh;
        renderRecord();
      }
    } catch {
      /* the socket will say it is disconnected */
    }
  }

  function onFrame(frame) {
    if (frame.job !== job || (frame.datasource_id && frame.datasource_id !== dsid)) return;
    history.set(frame.seq, frame);
    if (frame.type === "status" && frame.data && frame.data.version > rec.version) {
      rec = frame.data;
      renderRecord();
    } else if (frame.type !== "status") {
      refresh();
    }
    scheduleHistory();
  }

  let historyTimer = null;
  function scheduleHistory() {
    if (historyTimer) return;
    historyTimer = setTimeout(() => {
      historyTimer = null;
      if (alive) renderHistory();
    }, 100);
  }

  renderRecord();
  mount(
    h("section", { class: "card", id: "job-detail" }, head),
    h("section", { class: "card" }, h("h3", {}, "History"), h("p", { class: "muted" }, isDriver() ? "The job's request-stream entries, replayed from the log and then live." : "Every change of this job's status record, replayed from the log and then live."), historyBox),
    h("section", { class: "card" }, revisionsBox),
  );
  ensureSocket(dsid);
  // The history: the log replayed from the start (after=0), kept to this job, then live.
  const socketPath = isDriver() ? `/sub/${encodeURIComponent(dsid)}/jobs` : `/sub/${encodeURIComponent(dsid)}/job`;
  const replay = new LiveSocket(socketPath, { after: 0, onFrame, onState: () => {}, onOpen: () => setTimeout(() => alive && renderHistory(), 300) });
  state.cleanup.push(() => {
    alive = false;
    replay.stop();
    clearTimeout(historyTimer);
  });
  if ("revision" in rec) loadRevisions(dsid, job, revisionsBox);
  else revisionsBox.closest("section").hidden = true;
}

async function loadRevisions(dsid, job, box) {
  box.replaceChildren(h("h3", {}, "Revisions"), stateBox("loading", "Loading revisions…"));
  try {
    const { body } = await api("GET", seg(dsid, "job", job) + "revisions");
    const rows = (body.revisions || []).map((r) => h("tr", {}, h("td", {}, r.revision), h("td", {}, r.status ? badge(r.status) : ""), h("td", {}, r.rollback_of ?? ""), h("td", { class: "mono" }, short(r.request)), h("td", {}, r.error || ""), h("td", { class: "time" }, time(r.submitted_at ?? r.created_at))));
    box.replaceChildren(h("h3", {}, "Revisions"), rows.length ? h("table", { class: "grid", id: "revisions" }, h("thead", {}, h("tr", {}, h("th", {}, "revision"), h("th", {}, "status"), h("th", {}, "rollback of"), h("th", {}, "request"), h("th", {}, "error"), h("th", {}, "submitted"))), h("tbody", {}, rows)) : stateBox("empty", "No revisions."));
  } catch (e) {
    const text = e instanceof ApiError && (e.status === 404 || e.status === 405) ? "Revisions are not available on this store." : e.message;
    box.replaceChildren(h("h3", {}, "Revisions"), stateBox("empty", text));
  }
}

// A driver's view of the request stream ----------------------------------------------------------

const WINDOWS = [["last 15 minutes", 15 * 60e3], ["last hour", 3600e3], ["last 24 hours", 86400e3], ["everything kept", Infinity]];

async function viewStream(dsid) {
  setCrumbs({ text: "Datasources", href: "#/" }, { text: dsid, href: isDriver() ? undefined : dsHash(dsid) }, { text: "request stream" });
  if (!seesStream()) return mount(stateBox("forbidden", "The request stream is for driver and admin tokens.", "A client token sees its own jobs only."));
  const entries = new Map(); // seq -> entry
  let windowMs = 3600e3;
  let alive = true;
  let socket = null;
  const tbody = h("tbody", {});
  const body = h("div", {}, stateBox("loading", "Reading the request stream…"));
  const info = h("span", { class: "muted", id: "stream-info" });
  const select = h("select", { id: "stream-window", "aria-label": "window", onchange: () => { windowMs = Number(select.value); load(); } }, WINDOWS.map(([label, ms]) => h("option", { value: ms, selected: ms === windowMs }, label)));
  mount(
    chartCard(),
    h("section", { class: "card" }, h("div", { class: "row toolbar" }, h("h2", {}, `Request stream of ${dsid}`), h("span", { class: "spacer" }), info, select), h("p", { class: "muted" }, "Every submit (request) and cancel request, as the driver reads them with GET /jobs/<DSID>/since/<TIME> and the websocket /sub/<DSID>/jobs, newest first."), body),
  );

  function render() {
    const sorted = [...entries.values()].sort((a, b) => b.seq - a.seq).slice(0, STREAM_ROWS);
    tbody.replaceChildren(
      ...sorted.map((e) => h("tr", { "data-seq": e.seq, "data-job": e.job }, h("td", {}, e.seq), h("td", { class: "time" }, time(e.timestamp)), h("td", {}, h("span", { class: `badge t-${e.type}` }, e.type)), h("td", {}, h("a", { href: dsHash(dsid, "job", e.job), class: "job-link" }, e.job)), h("td", {}, e.client), h("td", { class: "mono" }, e.type === "request" ? short(e.data && e.data.request) : e.data && e.data.reason ? `reason: ${e.data.reason}` : ""))),
    );
    if (sorted.length) {
      if (!tbody.isConnected) body.replaceChildren(h("table", { class: "grid", id: "stream" }, h("thead", {}, h("tr", {}, h("th", {}, "seq"), h("th", {}, "time"), h("th", {}, "type"), h("th", {}, "job"), h("th", {}, "client"), h("th", {}, "request"))), tbody));
    } else {
      body.replaceChildren(stateBox("empty", "No requests in this window.", "New submits and cancel requests appear here as they arrive."));
    }
    info.textContent = `${entries.size} entr${entries.size === 1 ? "y" : "ies"}${entries.size > STREAM_ROWS ? ` (newest ${STREAM_ROWS} shown)` : ""}`;
  }

  function add(entry) {
    const since = windowMs === Infinity ? 0 : Date.now() - windowMs;
    if (entry.timestamp >= since && (entry.datasource_id === undefined || entry.datasource_id === dsid)) entries.set(entry.seq, entry);
    chartFrame(entry);
  }

  async function load() {
    if (socket) socket.stop();
    entries.clear();
    const since = windowMs === Infinity ? 0 : Math.floor(Date.now() - windowMs);
    let page;
    try {
      const reply = await api("GET", `${seg("jobs", dsid, "since", since).slice(0, -1)}?limit=${STREAM_ROWS}`);
      page = reply.body;
    } catch (e) {
      if (!alive) return;
      if (e instanceof ApiError && [401, 403, 404].includes(e.status)) dropSocket(dsid);
      showFailure(e, `the request stream of ${dsid}`);
      return;
    }
    if (!alive) return;
    for (const e of page) add(e);
    render();
    // Live from the last entry read: the socket replays whatever followed it, then continues.
    const last = page.length ? page[page.length - 1].seq : null;
    socket = new LiveSocket(`/sub/${encodeURIComponent(dsid)}/jobs`, {
      after: last,
      onFrame: (frame) => { add(frame); scheduleRender(); },
      onState: () => {},
      onOpen: (resumed) => { if (!resumed) refreshHead(since); },
    });
  }

  // Opened live-only (the window was empty): read the window again for what came in between.
  async function refreshHead(since) {
    try {
      const { body: more } = await api("GET", `${seg("jobs", dsid, "since", since).slice(0, -1)}?limit=${STREAM_ROWS}`);
      for (const e of more) add(e);
      if (alive) render();
    } catch {
      /* shown by the socket state */
    }
  }

  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer) return;
    renderTimer = setTimeout(() => { renderTimer = null; if (alive) render(); }, 100);
  }
  ensureSocket(dsid);
  state.cleanup.push(() => { alive = false; clearTimeout(renderTimer); if (socket) socket.stop(); });
  await load();
}

// Schedules -------------------------------------------------------------------------------------

async function viewSchedules(dsid) {
  setCrumbs({ text: "Datasources", href: "#/" }, { text: dsid, href: dsHash(dsid) }, { text: "schedules" });
  if (!seesJobs()) return mount(stateBox("forbidden", "Schedules are for client and admin tokens."));
  mount(stateBox("loading", "Loading schedules…"));
  const generation = state.generation;
  let reply;
  try {
    reply = (await api("GET", seg(dsid, "schedule"))).body;
  } catch (e) {
    if (generation !== state.generation) return;
    if (e instanceof ApiError && (e.status === 404 || e.status === 405) && !/datasource/i.test(e.message)) {
      return mount(h("section", { class: "card" }, h("h2", {}, `Schedules on ${dsid}`), stateBox("empty", "Schedules are not available on this store.", "This store does not serve GET /<DSID>/schedule/.")));
    }
    return showFailure(e, `the schedules of ${dsid}`);
  }
  if (generation !== state.generation) return;
  const runsBox = h("div", { id: "runs" });
  const rows = (reply.schedules || []).map((s) => {
    const when = s.cron ? `${s.cron} (${s.timezone || "UTC"})` : s.at !== undefined ? time(s.at) : "";
    const act = (label, verb) => h("button", { type: "button", class: "small", "data-action": verb, onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api("POST", seg(dsid, "schedule", s.schedule) + verb);
        toast(`${label}: done for ${s.schedule}.`, "ok");
        route();
      } catch (e) {
        event.target.disabled = false;
        toast(e instanceof ApiError ? e.message : String(e));
      }
    } }, label);
    return h("tr", { "data-schedule": s.schedule }, h("td", {}, s.schedule), h("td", {}, h("span", { class: `badge st-${s.state}` }, s.state)), h("td", {}, when), h("td", { class: "time" }, s.next_run_at ? time(s.next_run_at) : "—"), h("td", {}, s.runs ?? 0), h("td", {}, s.last_run ? h("a", { href: dsHash(dsid, "job", s.last_run) }, s.last_run) : "—"),
      h("td", { class: "actions" }, s.state === "active" ? act("Pause", "pause") : null, s.state === "paused" ? act("Resume", "resume") : null, h("button", { type: "button", class: "small ghost", onclick: () => loadRuns(dsid, s.schedule, runsBox) }, "runs")));
  });
  mount(
    h("section", { class: "card" }, h("h2", {}, `Schedules on ${dsid}`),
      rows.length ? h("table", { class: "grid", id: "schedules" }, h("thead", {}, h("tr", {}, h("th", {}, "Schedule"), h("th", {}, "State"), h("th", {}, "When"), h("th", {}, "Next run"), h("th", {}, "Runs"), h("th", {}, "Last run"), h("th", {}, ""))), h("tbody", {}, rows)) : stateBox("empty", "No schedules.", "POST /<DSID>/schedule/ creates one.")),
    h("section", { class: "card" }, runsBox),
  );
}

async function loadRuns(dsid, schedule, box) {
  box.replaceChildren(h("h3", {}, `Runs of ${schedule}`), stateBox("loading", "Loading runs…"));
  try {
    const { body } = await api("GET", seg(dsid, "schedule", schedule) + "runs");
    const rows = (body.jobs || []).map((r) => jobRow(dsid, r));
    box.replaceChildren(h("h3", {}, `Runs of ${schedule}`), rows.length ? h("table", { class: "grid" }, h("tbody", {}, rows)) : stateBox("empty", "No runs yet."));
  } catch (e) {
    box.replaceChildren(h("h3", {}, `Runs of ${schedule}`), stateBox("forbidden", e.message));
  }
}

// Start -----------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
$("signout").addEventListener("click", signOut);
start();
