// The hookwasm dashboard: plain JavaScript over the public API. Every value from the host is put
// into the page as text (textContent), never as HTML: event data is whatever producers sent.
"use strict";

const REFRESH_MS = 2000;
const PLOT_POINTS = 150; // 5 minutes of 2-second samples
const MAX_EVENT_ROWS = 1000; // older rows leave the page; "Load older" pages through the rest
const PAGE = 100;

const state = {
  session: null,
  samples: new Map(), // handler -> [{t, total, buckets}]
  events: new Map(), // seq -> {record, row, detail}
  oldest: null, // `next` of the last page loaded
  filters: {},
  stream: null,
  lastEventId: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function problem(message) {
  const p = $("problem");
  p.textContent = message || "";
  p.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET" && state.session && state.session.csrf) {
    headers["X-CSRF-Token"] = state.session.csrf;
  }
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("signed out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function can(scope) {
  return !!state.session && state.session.scopes.includes(scope);
}

function when(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toLocaleString();
}

// ----- tabs ---------------------------------------------------------------------------------

function showTab() {
  const tab = (window.location.hash || "#handlers").slice(1);
  for (const name of ["handlers", "events", "deliveries"]) {
    $(name).hidden = name !== tab;
    $(`tab-${name}`).classList.toggle("current", name === tab);
  }
  if (tab === "deliveries") refreshDeliveries();
}

// ----- handlers and plots -------------------------------------------------------------------

function totalInvocations(counters) {
  return Object.values(counters.invocations || {}).reduce((a, b) => a + b, 0);
}

// p99 (ms) of what happened between two samples, from the cumulative duration histogram.
function p99(before, after) {
  if (!before) return null;
  const now = after.counters.durationBuckets || [];
  const then = before.buckets || [];
  const deltas = now.map(([le, n], i) => [le, n - ((then[i] || [0, 0])[1] || 0)]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (total <= 0) return null;
  const wanted = total * 0.99;
  for (const [le, n] of deltas) if (n >= wanted) return le;
  return deltas[deltas.length - 1][0];
}

function sparkline(points, label) {
  const width = 120, height = 24;
  const values = points.filter((v) => v !== null);
  const max = Math.max(1e-9, ...values);
  const step = width / Math.max(1, PLOT_POINTS - 1);
  const start = PLOT_POINTS - points.length;
  const coords = points
    .map((v, i) => (v === null ? null : `${((start + i) * step).toFixed(1)},${(height - (v / max) * (height - 2) - 1).toFixed(1)}`))
    .filter(Boolean)
    .join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", coords);
  svg.append(line);
  return svg;
}

function stateOf(handler) {
  const q = handler.quarantine || {};
  if (q.state === "open") return ["quarantined", "bad"];
  if (q.state === "half-open") return ["half-open", "warn"];
  return ["ok", "good"];
}

async function refreshHandlers() {
  let body;
  try {
    body = await api("/v1/handlers");
  } catch (e) {
    problem(`Cannot read handlers: ${e.message}`);
    return;
  }
  problem("");
  if (body.backend) {
    $("backend").textContent = `outbox: ${body.backend.store}${body.backend.host ? ` on ${body.backend.host}` : ""}`;
  }
  const now = Date.now();
  const rows = [];
  for (const h of body.handlers) {
    const samples = state.samples.get(h.name) || [];
    const previous = samples[samples.length - 1];
    const total = totalInvocations(h.counters);
    const rate = previous ? Math.max(0, (total - previous.total) / ((now - previous.t) / 1000)) : null;
    samples.push({ t: now, total, buckets: h.counters.durationBuckets, rate, p99: p99(previous, h) });
    while (samples.length > PLOT_POINTS) samples.shift();
    state.samples.set(h.name, samples);

    const [label, tone] = stateOf(h);
    const stateCell = el("td", { class: `state ${tone}` }, label);
    if (h.lastFailure) {
      stateCell.append(el("div", { class: "cause" }, `last failure: ${h.lastFailure.status}: ${h.lastFailure.reason || ""}`));
      stateCell.title = `${h.lastFailure.at} on ${h.lastFailure.eventId}`;
    }
    const invocations = Object.entries(h.counters.invocations || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    const filters = [(h.events || []).join(" "), (h.refs || []).join(" ")].filter(Boolean).join(" · ") || "all events";
    const reload = h.lastReload ? `${h.lastReload.result} ${h.lastReload.at}${h.lastReload.error ? `: ${h.lastReload.error}` : ""}` : "";
    const lastRate = samples[samples.length - 1].rate;
    const lastP99 = samples[samples.length - 1].p99;
    rows.push(
      el("tr", { "data-handler": h.name },
        el("td", { class: "name" }, h.name),
        el("td", {}, h.mode),
        stateCell,
        el("td", { class: "mono", title: h.digest }, h.digest.slice(0, 12)),
        el("td", {}, filters),
        el("td", {}, `${h.limits.fuel.toLocaleString()} fuel, ${h.limits.timeoutMs} ms, ${h.limits.memoryMiB} MiB`),
        el("td", {}, invocations || "none", h.counters.denied ? el("div", {}, `denied ${h.counters.denied}`) : null),
        el("td", { class: "queue" }, h.queueDepth === undefined || h.queueDepth === null ? "—" : `${h.queueDepth}${h.deadLetters ? ` (${h.deadLetters} dead)` : ""}`),
        el("td", {}, sparkline(samples.map((s) => s.rate), `events per second of ${h.name}`), lastRate === null ? "" : lastRate.toFixed(1)),
        el("td", {}, sparkline(samples.map((s) => s.p99), `p99 milliseconds of ${h.name}`), lastP99 === null ? "" : String(lastP99)),
        el("td", {}, reload),
      ),
    );
  }
  $("handler-rows").replaceChildren(...rows);
  $("handler-count").textContent = `(${body.handlers.length})`;
}

// ----- events -------------------------------------------------------------------------------

function verdictOf(outcomes) {
  const gates = outcomes.filter((o) => o.mode === "gate");
  if (!gates.length) return "";
  return gates.some((o) => o.verdict === "deny") ? "deny" : "allow";
}

function matchesFilters(record) {
  const f = state.filters;
  if (f.type && record.type !== f.type) return false;
  if (f.subject && record.subject !== f.subject) return false;
  if (f.handler && !record.outcomes.some((o) => o.handler === f.handler)) return false;
  if (f.verdict && verdictOf(record.outcomes) !== f.verdict) return false;
  return true;
}

function outcomeTable(record) {
  const rows = record.outcomes.map((o) =>
    el("tr", { class: "outcome", "data-handler": o.handler },
      el("td", {}, o.handler),
      el("td", {}, o.mode),
      el("td", {}, o.status),
      el("td", { class: o.verdict === "deny" ? "bad" : "" }, o.verdict || ""),
      el("td", {}, o.reason || ""),
      el("td", { class: "annotations" },
        ...Object.entries(o.annotations || {}).map(([k, v]) => el("div", { class: "annotation", "data-key": k }, el("b", {}, k), ` ${v}`))),
      el("td", {}, o.cause || ""),
      el("td", {}, (o.fuelConsumed || 0).toLocaleString()),
      el("td", {}, `${(o.durationMs || 0).toFixed(2)} ms`),
      el("td", {}, o.attempt),
    ),
  );
  return el("table", { class: "inner" },
    el("thead", {}, el("tr", {}, ...["Handler", "Mode", "Status", "Verdict", "Reason", "Annotations", "Cause", "Fuel", "Duration", "Attempt"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function renderEvent(entry) {
  const r = entry.record;
  const verdict = verdictOf(r.outcomes);
  const row = el("tr", { class: "event", "data-id": r.id, "data-seq": String(r.seq) },
    el("td", { class: "toggle" }, entry.open ? "▾" : "▸"),
    el("td", {}, when(r.acceptedAt)),
    el("td", {}, r.type),
    el("td", { class: "mono" }, r.id),
    el("td", {}, r.subject || ""),
    el("td", {}, r.source),
    el("td", { class: `verdict ${verdict === "deny" ? "bad" : verdict ? "good" : ""}` }, verdict),
    el("td", { class: "count" }, String(r.outcomes.length)),
  );
  row.addEventListener("click", () => {
    entry.open = !entry.open;
    renderEvent(entry);
  });
  const detail = el("tr", { class: "detail", hidden: !entry.open }, el("td", { colSpan: 8 }, outcomeTable(r)));
  if (entry.row) {
    entry.row.replaceWith(row);
    entry.detail.replaceWith(detail);
  }
  entry.row = row;
  entry.detail = detail;
}

function addEvent(record, atTop) {
  if (state.events.has(record.seq)) return state.events.get(record.seq);
  const entry = { record, open: false, row: null, detail: null };
  renderEvent(entry);
  state.events.set(record.seq, entry);
  const body = $("event-rows");
  if (atTop) body.prepend(entry.row, entry.detail);
  else body.append(entry.row, entry.detail);
  while (state.events.size > MAX_EVENT_ROWS) {
    const oldest = Math.min(...state.events.keys());
    const gone = state.events.get(oldest);
    gone.row.remove();
    gone.detail.remove();
    state.events.delete(oldest);
  }
  return entry;
}

function query(extra) {
  const params = new URLSearchParams();
  for (const key of ["type", "subject", "handler"]) if (state.filters[key]) params.set(key, state.filters[key]);
  for (const [k, v] of Object.entries(extra || {})) params.set(k, v);
  return params.toString();
}

async function loadEvents(older) {
  const extra = { limit: PAGE };
  if (older && state.oldest !== null) extra.before = state.oldest;
  try {
    const page = await api(`/v1/events?${query(extra)}`);
    for (const record of page.events) if (matchesFilters(record)) addEvent(record, false);
    state.oldest = page.next;
    $("older").hidden = page.next === null;
  } catch (e) {
    problem(`Cannot read events: ${e.message}`);
  }
}

function connectStream() {
  if (state.stream) state.stream.close();
  const params = new URLSearchParams();
  // With a handler filter the stream carries only that handler's outcomes; their events are
  // fetched as they come.
  for (const key of ["type", "subject", "handler"]) if (state.filters[key]) params.set(key, state.filters[key]);
  const source = new EventSource(`/v1/stream?${params}`);
  state.stream = source;
  const live = $("live");
  source.addEventListener("hello", () => {
    live.textContent = "live";
    live.className = "pill good";
  });
  source.addEventListener("accepted", (message) => {
    state.lastEventId = message.lastEventId;
    const m = JSON.parse(message.data);
    const record = { id: m.eventId, source: m.source, type: m.type, subject: m.subject, seq: m.seq, acceptedAt: m.acceptedAt, event: m.event, outcomes: [] };
    if (matchesFilters(record) || state.filters.verdict) addEvent(record, true);
  });
  source.addEventListener("outcome", (message) => {
    state.lastEventId = message.lastEventId;
    const m = JSON.parse(message.data);
    const entry = state.events.get(m.seq);
    if (!entry) {
      if (state.filters.handler) {
        api(`/v1/events/${encodeURIComponent(m.eventId)}?source=${encodeURIComponent(m.source)}`)
          .then((record) => { if (matchesFilters(record)) addEvent(record, true); })
          .catch(() => {});
      }
      return;
    }
    if (entry.record.outcomes.some((o) => o.handler === m.outcome.handler && o.at === m.outcome.at && o.attempt === m.outcome.attempt)) return;
    entry.record.outcomes.push(m.outcome);
    if (!matchesFilters(entry.record)) {
      entry.row.remove();
      entry.detail.remove();
      state.events.delete(m.seq);
      return;
    }
    renderEvent(entry);
  });
  source.addEventListener("cut-off", () => {
    live.textContent = "catching up…";
    live.className = "pill warn";
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "pill warn";
  };
}

async function applyFilters(event) {
  if (event) event.preventDefault();
  const form = new FormData($("event-filters"));
  state.filters = Object.fromEntries([...form.entries()].filter(([, v]) => v));
  state.events.clear();
  $("event-rows").replaceChildren();
  state.oldest = null;
  connectStream();
  await loadEvents(false);
}

// ----- deliveries and dead letters ------------------------------------------------------------

async function act(button, method, path) {
  button.disabled = true;
  try {
    await api(path, { method });
    await refreshDeliveries();
  } catch (e) {
    problem(e.message);
    button.disabled = false;
  }
}

async function refreshDeliveries() {
  if ($("deliveries").hidden) return;
  try {
    const [counts, dead] = await Promise.all([api("/v1/deliveries"), api("/v1/dead-letters?limit=500")]);
    $("delivery-rows").replaceChildren(...counts.deliveries.map((c) =>
      el("tr", { "data-handler": c.handler },
        el("td", {}, c.handler), el("td", {}, c.pending), el("td", {}, c.retrying), el("td", {}, c.claimed),
        el("td", { class: "done" }, c.done), el("td", {}, c.dead), el("td", {}, when(c.oldestOpenAt)))));
    const admin = can("admin");
    $("dead-rows").replaceChildren(...dead.deadLetters.map((d) => {
      const retry = el("button", { type: "button", class: "retry", "data-id": String(d.id), disabled: !admin, title: admin ? "" : "needs the admin scope" }, "Retry");
      const discard = el("button", { type: "button", class: "discard", "data-id": String(d.id), disabled: !admin, title: admin ? "" : "needs the admin scope" }, "Discard");
      retry.addEventListener("click", () => act(retry, "POST", `/v1/dead-letters/${d.id}/retry`));
      discard.addEventListener("click", () => act(discard, "DELETE", `/v1/dead-letters/${d.id}`));
      return el("tr", { class: "dead", "data-id": String(d.id) },
        el("td", {}, d.id), el("td", {}, d.handler), el("td", { class: "mono" }, d.eventId), el("td", {}, d.eventType),
        el("td", {}, d.attempts), el("td", {}, d.cause), el("td", {}, when(d.deadAt)), el("td", {}, retry, discard));
    }));
  } catch (e) {
    problem(`Cannot read deliveries: ${e.message}`);
  }
}

// ----- start --------------------------------------------------------------------------------

async function start() {
  try {
    state.session = await api("/v1/session");
  } catch (e) {
    problem(e.message);
    return;
  }
  if (state.session.auth) {
    $("who").textContent = `signed in as ${state.session.name || "a token"} (${state.session.scopes.join(", ")})`;
    $("logout").hidden = false;
  }
  window.addEventListener("hashchange", showTab);
  showTab();
  $("event-filters").addEventListener("submit", applyFilters);
  $("older").addEventListener("click", () => loadEvents(true));
  await refreshHandlers();
  await applyFilters();
  setInterval(refreshHandlers, REFRESH_MS);
  setInterval(refreshDeliveries, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
