/* Interaction summary: a live dashboard that is only a client of the public API.
 *
 * Plain script, no framework, no build step, nothing from a CDN. It polls
 * GET api/v1/interaction-summary and GET api/v1/interaction-timeseries with the key the
 * person typed in, and updates the page in place: table rows are keyed by group id, so a poll
 * changes only the cells whose numbers changed and scroll, sort and page stay where they were.
 */
"use strict";

(() => {
  // Relative to the page (/dashboard), so the dashboard also works behind a path prefix.
  const API = "api/v1/";
  const KEY_STORAGE = "interaction-summary.apiKey";
  const POLL_MS = 3000;
  const MAX_BACKOFF_MS = 30000;
  const REQUEST_TIMEOUT_MS = 10000;
  // The API's largest page: up to this many groups are fetched at once and sorted and paged here,
  // so sorting covers every group. Beyond it the API pages and sorting applies within a page.
  const LOCAL_LIMIT = 500;
  const MAX_CHART_DAYS = 366; // the timeseries endpoint's limit
  const GROUPS = ["action", "treatment", "channel", "customer"];
  const TYPES = ["impression", "click", "accept", "convert", "dismiss"];

  // ---- formatting ------------------------------------------------------------------------

  const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const pctFormat = new Intl.NumberFormat(undefined, {
    style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2,
  });
  const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
  const dateFormat = new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
  });

  const formatInt = (v) => (v == null ? "–" : intFormat.format(v));
  const formatPct = (v) => (v == null ? "–" : pctFormat.format(v / 100));
  const pad2 = (n) => String(n).padStart(2, "0");
  const clock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const isoDay = (d) => d.toISOString().slice(0, 10);

  // ---- columns per groupBy ----------------------------------------------------------------

  /** positive / negative / neutral as the contract defines them, derived when a row lacks them. */
  function sentiment(r) {
    if (r.positive != null) return [r.positive, r.negative, r.neutral];
    const positive = r.click + r.accept;
    const negative = r.dismiss;
    return [positive, negative, Math.max(r.impression - positive - negative, 0)];
  }

  const label = (r) => r.name ?? r.id;
  const nameCol = (title) => ({ key: "name", title, kind: "name", value: label, align: "left" });
  const textCol = (key, title) => ({ key, title, kind: "text", value: (r) => r[key], align: "left" });
  const intCol = (key, title, hint) => ({ key, title, hint, kind: "int", value: (r) => r[key] });
  const pctCol = (key, title, hint) => ({ key, title, hint, kind: "pct", value: (r) => r[key] });
  const COUNTERS = [
    intCol("impression", "Impr.", "impressions"),
    intCol("click", "Clicks"),
    intCol("dismiss", "Dism.", "dismissals"),
    intCol("accept", "Acc.", "accepts"),
    intCol("convert", "Conv.", "conversions"),
    intCol("total", "Total", "every interaction, other types included"),
  ];
  const CTR = pctCol("ctr", "CTR", "clicks per impression");
  const CVR = pctCol("cvr", "CVR", "conversions per impression");
  const SENTIMENT = {
    key: "sentiment", title: "Sentiment", kind: "bar", align: "left",
    hint: "positive · negative by the tenant's outcome types (system: click + accept · dismiss) · neutral (the other impressions); sorts by positive share",
    value: (r) => {
      const [p, n, u] = sentiment(r);
      return p + n + u === 0 ? -1 : p / (p + n + u);
    },
  };

  const VIEWS = {
    action: {
      noun: "actions", id: (r) => r.id,
      base: [nameCol("Action"), textCol("issue", "Issue"), textCol("group", "Group"),
        ...COUNTERS, CTR, CVR, SENTIMENT],
    },
    treatment: {
      noun: "treatments", id: (r) => r.id,
      base: [nameCol("Treatment"), textCol("offerName", "Offer"),
        { key: "channelName", title: "Channel", kind: "text", align: "left",
          value: (r) => r.channelName ?? r.channelType },
        textCol("abTestVariant", "A/B"), ...COUNTERS, CTR, CVR, SENTIMENT],
    },
    channel: {
      noun: "channels", id: (r) => r.id,
      base: [nameCol("Channel"), textCol("channelType", "Type"),
        intCol("treatmentCount", "Treatm.", "distinct treatments shown on this channel"),
        ...COUNTERS, CTR, SENTIMENT],
    },
    customer: {
      noun: "customers", id: (r) => r.customerId,
      base: [{ key: "customerId", title: "Customer", kind: "id", align: "left", value: (r) => r.customerId },
        intCol("uniqueActions", "Actions", "distinct actions this customer interacted with"),
        ...COUNTERS, SENTIMENT],
    },
  };

  // Custom outcome types (GET api/v1/outcome-types): a column each after Total, which the
  // person can hide; a type counted but not registered yet shows too (as neutral).
  const typeColumn = (key, type) => ({
    key: `outcome:${key}`, title: type?.name ?? key, kind: "int",
    hint: `${key}: ${type ? type.classification : "not registered (neutral)"}`,
    value: (r) => r.outcomes?.[key] ?? 0,
  });

  function customTypes() {
    const registered = new Map((state.outcomeTypes ?? []).filter((t) => !t.system).map((t) => [t.key, t]));
    const keys = new Set(registered.keys());
    for (const row of state.rows) {
      for (const key of Object.keys(row.outcomes ?? {})) if (!TYPES.includes(key)) keys.add(key);
    }
    const order = (k) => registered.get(k)?.ordinal ?? Number.MAX_SAFE_INTEGER;
    return [...keys].sort((a, b) => order(a) - order(b) || byCodePoint(a, b)).map((k) => [k, registered.get(k)]);
  }

  function columnsOf(view) {
    const shown = customTypes().filter(([k]) => !state.hiddenTypes.has(k)).map(([k, t]) => typeColumn(k, t));
    const at = view.base.findIndex((c) => c.key === "total") + 1;
    return [...view.base.slice(0, at), ...shown, ...view.base.slice(at)];
  }

  // ---- state -----------------------------------------------------------------------------

  const state = {
    key: readKey(),
    groupBy: "action", days: 30, window: "period", pageSize: 25,
    page: 0,
    sort: { key: "total", dir: "desc" },
    rows: [], total: 0, serverPaged: false, response: null, series: null,
    outcomeTypes: null, hiddenTypes: new Set(),
    seq: 0, timer: 0, controller: null, failures: 0, stopped: false,
  };

  // The key lives for this browser tab's session (sessionStorage) unless the person ticks
  // "remember", which keeps it in localStorage until "Forget key".
  function readKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || localStorage.getItem(KEY_STORAGE) || "";
    } catch { return ""; }
  }
  function writeKey(key, remember) {
    state.key = key;
    try {
      sessionStorage.removeItem(KEY_STORAGE);
      localStorage.removeItem(KEY_STORAGE);
      if (key) (remember ? localStorage : sessionStorage).setItem(KEY_STORAGE, key);
    } catch { /* private mode: the key lives for this page only */ }
  }

  /** The view lives in the URL hash, so a reload or a shared link shows the same thing. */
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (GROUPS.includes(p.get("groupBy"))) state.groupBy = p.get("groupBy");
    const days = Number.parseInt(p.get("days"), 10);
    if (days >= 1 && days <= 36500) state.days = days;
    if (["period", "rolling"].includes(p.get("window"))) state.window = p.get("window");
    const size = Number.parseInt(p.get("rows"), 10);
    if ([10, 25, 50, 100].includes(size)) state.pageSize = size;
  }
  function writeHash() {
    const p = new URLSearchParams({
      groupBy: state.groupBy, days: state.days, window: state.window, rows: state.pageSize,
    });
    history.replaceState(null, "", `#${p}`);
  }

  // ---- elements --------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const el = {};

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }

  // ---- API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status; // 0: no answer at all
      this.code = code;
    }
    get kind() {
      if (this.status === 401 || this.status === 403) return "auth";
      if (this.status === 404) return "missing";
      if (this.status === 422 || this.status === 400) return "request";
      return "down";
    }
  }

  async function getJSON(path, params, controller) {
    const url = new URL(API + path, document.baseURI);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const timeout = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    let body = null;
    try {
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
        cache: "no-store", signal: controller.signal,
      });
      body = await response.json().catch(() => null);
    } catch {
      throw new ApiError(0, "no answer from the API");
    } finally {
      clearTimeout(timeout);
    }
    if (!response.ok) {
      const error = body?.error ?? {};
      throw new ApiError(response.status, error.message || response.statusText, error.code);
    }
    return body;
  }

  /** Days the chart covers: the rolling window, or the current period from its start to today. */
  function chartDays(summary) {
    if (state.window === "rolling" || !summary.period?.end) return Math.min(state.days, MAX_CHART_DAYS);
    const start = Date.parse(summary.period.start);
    const today = Date.parse(`${isoDay(new Date())}T00:00:00Z`);
    return Math.max(1, Math.min(state.days, Math.floor((today - start) / 86400000) + 1));
  }

  async function poll() {
    clearTimeout(state.timer);
    state.controller?.abort();
    if (!state.key) {
      setStatus("auth", "no key");
      askForKey("Enter an API key to start.");
      return;
    }
    const seq = ++state.seq;
    const controller = new AbortController();
    state.controller = controller;
    const paged = state.serverPaged;
    const params = {
      groupBy: state.groupBy, days: state.days, window: state.window,
      limit: paged ? state.pageSize : LOCAL_LIMIT, offset: paged ? state.page * state.pageSize : 0,
    };
    try {
      const summary = await getJSON("interaction-summary", params, controller);
      // The registry is optional for the page: without it the columns come from the rows.
      const types = getJSON("outcome-types", {}, controller).then((t) => t.data, () => null);
      let series = null;
      try {
        series = await getJSON("interaction-timeseries", { days: chartDays(summary) }, controller);
      } catch (e) {
        // The table can still be shown when only the chart's data could not be read.
        if (!(e instanceof ApiError) || e.kind === "auth" || e.status === 0) throw e;
        series = { error: e };
      }
      const outcomeTypes = await types;
      if (seq !== state.seq) return; // a newer poll has started: this answer is stale
      if (outcomeTypes) state.outcomeTypes = outcomeTypes;
      const wantPaged = summary.total > LOCAL_LIMIT;
      if (wantPaged !== paged) {
        state.serverPaged = wantPaged;
        poll();
        return;
      }
      if (onData(summary, series)) schedule(POLL_MS);
    } catch (e) {
      if (seq !== state.seq) return;
      onError(e instanceof ApiError ? e : new ApiError(0, String(e)));
    }
  }

  function schedule(ms) {
    clearTimeout(state.timer);
    if (!state.stopped) state.timer = setTimeout(poll, ms);
  }

  /** Start over from page one after the person changed what to show. */
  function reload() {
    state.page = 0;
    state.serverPaged = false;
    writeHash();
    poll();
  }

  // ---- data in, page out -----------------------------------------------------------------

  /** Shows a poll's answers; false when it asked again instead (the page ran past the end). */
  function onData(summary, series) {
    state.failures = 0;
    state.response = summary;
    state.rows = summary.summary;
    state.total = summary.total;
    const pages = Math.max(1, Math.ceil(state.total / state.pageSize));
    if (state.page >= pages) {
      state.page = pages - 1;
      if (state.serverPaged) { poll(); return false; }
    }
    setBanner(null);
    document.body.classList.remove("stale");
    setStatus("live", `source: ${summary.source}`);
    el.updated.textContent = `updated ${clock(new Date())}`;
    el.updated.dateTime = new Date().toISOString();
    el.statusSep.hidden = false;
    el.status.dataset.polls = String(Number(el.status.dataset.polls ?? 0) + 1); // for tests and curious people
    el.status.dataset.source = summary.source;
    renderPeriod(summary);
    renderTypes();
    renderTable();
    renderPager();
    if (series.error) {
      renderChartProblem(series.error);
    } else {
      el.chartNote.hidden = true;
      state.series = series.series;
      renderKpis(series.series);
      renderChart();
    }
    return true;
  }

  function onError(error) {
    document.body.classList.add("stale");
    if (error.kind === "auth") {
      state.stopped = true;
      const what = error.status === 401 ? "The API did not accept this key" : "This key may not read the summary";
      setStatus("auth", "key rejected");
      setBanner(`${what}: ${error.message}`, "auth");
      askForKey(`${what} (${error.status}): ${error.message}`, true);
      return;
    }
    if (error.kind === "request" || error.kind === "missing") {
      setStatus("error", "request refused");
      setBanner(`The API refused the request (${error.status}): ${error.message}`, "error");
      schedule(POLL_MS);
      return;
    }
    state.failures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** state.failures);
    const why = error.status ? `answered ${error.status}: ${error.message}` : error.message;
    setStatus("down", "API unreachable, retrying");
    setBanner(`API unreachable, retrying in ${Math.round(wait / 1000)} s (${why}).`, "down");
    schedule(wait);
  }

  function setStatus(kind, text) {
    el.status.dataset.state = kind;
    if (el.statusText.textContent !== text) el.statusText.textContent = text;
  }

  function setBanner(text, kind) {
    el.banner.hidden = !text;
    if (!text) return;
    el.banner.dataset.kind = kind;
    const retry = kind === "down" ? h("button", { type: "button", class: "link" }, "Retry now") : "";
    if (retry) retry.addEventListener("click", () => { state.stopped = false; poll(); });
    el.banner.replaceChildren(h("span", {}, text), retry);
  }

  function renderPeriod(summary) {
    const p = summary.period ?? {};
    const start = p.start ? dateFormat.format(new Date(p.start)) : "";
    let text;
    if (state.window === "rolling") {
      text = `Last ${formatInt(state.days)} ${state.days === 1 ? "day" : "days"} · ${start} → now (UTC)`;
    } else if (!p.end) {
      text = "All time";
    } else {
      const type = { daily: "Today", weekly: "This week", monthly: "This month" }[p.type] ?? p.type;
      text = `${type} · ${start} → now (UTC)`;
    }
    if (el.periodText.textContent !== text) el.periodText.textContent = text;
  }

  // ---- the table -------------------------------------------------------------------------

  const rowNodes = new Map(); // group id -> <tr>, for the view on screen
  let shownView = null;
  let shownShape = "";
  let shownTypes = "";

  function compareRows(view) {
    const col = view.columns.find((c) => c.key === state.sort.key) ?? view.columns[0];
    const sign = state.sort.dir === "asc" ? 1 : -1;
    return (a, b) => {
      const x = col.value(a);
      const y = col.value(b);
      let order = 0;
      if (x == null || y == null) order = x == null ? (y == null ? 0 : 1) : -1; // nulls last
      else if (typeof x === "number") order = sign * (x - y);
      else order = sign * String(x).localeCompare(String(y));
      // Ties keep the API's order: total descending, then id ascending by code point.
      return order || b.total - a.total || byCodePoint(String(view.id(a)), String(view.id(b)));
    };
  }

  const byCodePoint = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  function visibleRows(view) {
    const rows = [...state.rows].sort(compareRows(view));
    if (state.serverPaged) return rows;
    const from = state.page * state.pageSize;
    return rows.slice(from, from + state.pageSize);
  }

  function buildHead(view) {
    const cells = view.columns.map((col) => {
      const button = h("button", { type: "button", class: "sort" }, col.title, h("span", { class: "arrow", "aria-hidden": "true" }));
      if (col.hint) button.title = col.hint;
      button.addEventListener("click", () => sortBy(col));
      return h("th", { scope: "col", "data-col": col.key, class: `k-${col.kind} ${col.align ?? "right"}` }, button);
    });
    el.thead.replaceChildren(h("tr", {}, ...cells));
    el.caption.textContent = `Summary by ${state.groupBy}`;
    el.panel.setAttribute("aria-labelledby", `tab-${state.groupBy}`);
  }

  function renderSortMarks() {
    for (const th of el.thead.querySelectorAll("th")) {
      const on = th.dataset.col === state.sort.key;
      th.setAttribute("aria-sort", on ? (state.sort.dir === "asc" ? "ascending" : "descending") : "none");
      th.querySelector(".arrow").textContent = on ? (state.sort.dir === "asc" ? "▲" : "▼") : "";
    }
    el.sortNote.hidden = !(state.serverPaged && state.sort.key !== "total");
  }

  function sortBy(col) {
    if (state.sort.key === col.key) {
      state.sort.dir = state.sort.dir === "asc" ? "desc" : "asc";
    } else {
      state.sort = { key: col.key, dir: col.kind === "int" || col.kind === "pct" || col.kind === "bar" ? "desc" : "asc" };
    }
    renderTable();
  }

  function renderTable() {
    const view = VIEWS[state.groupBy];
    view.columns = columnsOf(view);
    const shape = view.columns.map((c) => c.key).join(",");
    const fresh = shownView !== view || shownShape !== shape;
    if (fresh) {
      buildHead(view);
      el.tbody.replaceChildren();
      rowNodes.clear();
      shownView = view;
      shownShape = shape;
    }
    renderSortMarks();
    const rows = visibleRows(view);
    const keep = new Set();
    let previous = null;
    for (const row of rows) {
      const id = String(view.id(row));
      keep.add(id);
      let tr = rowNodes.get(id);
      const known = tr !== undefined;
      if (!known) {
        tr = h("tr", { "data-key": id }, ...view.columns.map((c) => h("td", { "data-col": c.key, class: `k-${c.kind} ${c.align ?? "right"}` })));
        rowNodes.set(id, tr);
      }
      view.columns.forEach((col, i) => fillCell(tr.children[i], col, row, known));
      const wanted = previous ? previous.nextSibling : el.tbody.firstChild;
      if (wanted !== tr) el.tbody.insertBefore(tr, wanted); // moves only rows that changed place
      previous = tr;
    }
    for (const [id, tr] of rowNodes) {
      if (!keep.has(id)) { tr.remove(); rowNodes.delete(id); }
    }
    el.empty.hidden = rows.length > 0;
  }

  /** The tenant's outcome types with their classification; custom ones with a column toggle. */
  function renderTypes() {
    const types = state.outcomeTypes ?? [];
    const shape = JSON.stringify([types.map((t) => [t.key, t.name, t.classification]), [...state.hiddenTypes]]);
    if (shape === shownTypes) return;
    shownTypes = shape;
    el.types.hidden = types.length === 0;
    el.typeList.replaceChildren(...types.map((t) => {
      const item = h("li", { "data-type": t.key },
        h("span", { class: `cls cls-${t.classification}` }, t.classification),
        h("span", { class: "name" }, t.name), h("span", { class: "id sub" }, t.key),
        h("span", { class: "muted small" }, t.system ? "system" : t.category));
      if (!t.system) {
        const box = h("input", { type: "checkbox", "aria-label": `show ${t.key} column` });
        box.checked = !state.hiddenTypes.has(t.key);
        box.addEventListener("change", () => {
          if (box.checked) state.hiddenTypes.delete(t.key); else state.hiddenTypes.add(t.key);
          renderTypes();
          renderTable();
        });
        item.append(h("label", { class: "small" }, box, " column"));
      }
      return item;
    }));
  }

  /** Writes one cell only when its value changed, and flashes it when a known row changed. */
  function fillCell(td, col, row, known) {
    const raw = col.kind === "bar" ? sentiment(row).join("/") : String(col.value(row) ?? "");
    const extra = col.kind === "name" ? `|${row.id}` : "";
    if (td.dataset.value === raw && td.dataset.extra === extra) return;
    const changed = known && td.dataset.value !== undefined;
    td.dataset.value = raw;
    td.dataset.extra = extra;
    switch (col.kind) {
      case "int": td.textContent = formatInt(col.value(row)); break;
      case "pct": td.textContent = formatPct(col.value(row)); break;
      case "bar": td.replaceChildren(sentimentBar(sentiment(row))); break;
      case "name":
        td.replaceChildren(
          h("span", { class: row.name == null ? "id" : "name" }, label(row)),
          row.name == null ? "" : h("span", { class: "sub id" }, row.id),
        );
        break;
      case "id": td.replaceChildren(h("span", { class: "id" }, col.value(row))); break;
      default: td.textContent = col.value(row) ?? "–"; td.classList.toggle("null", col.value(row) == null);
    }
    if (changed && col.kind !== "name" && col.kind !== "text") flash(td);
  }

  const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");
  function flash(node) {
    if (reducedMotion.matches || !node.animate) return;
    node.animate([{ backgroundColor: "var(--flash)" }, { backgroundColor: "transparent" }], { duration: 1400, easing: "ease-out" });
  }

  function sentimentBar([positive, negative, neutral]) {
    const sum = positive + negative + neutral;
    const text = `positive ${formatInt(positive)}, negative ${formatInt(negative)}, neutral ${formatInt(neutral)}`;
    const bar = h("div", { class: "bar", role: "img", "aria-label": text, title: text });
    for (const [cls, n] of [["pos", positive], ["neg", negative], ["neu", neutral]]) {
      if (n <= 0) continue;
      const part = h("span", { class: cls });
      part.style.width = `${(100 * n) / sum}%`;
      bar.append(part);
    }
    if (sum === 0) bar.classList.add("none");
    const share = sum ? Math.round((100 * positive) / sum) : 0;
    return h("div", { class: "bar-cell" }, bar, h("span", { class: "bar-share", "aria-hidden": "true" }, sum ? `${share}%` : "–"));
  }

  function renderPager() {
    const view = VIEWS[state.groupBy];
    const from = state.total === 0 ? 0 : state.page * state.pageSize + 1;
    const to = Math.min(state.total, (state.page + 1) * state.pageSize);
    const text = `${formatInt(from)}–${formatInt(to)} of ${formatInt(state.total)} ${view.noun}`;
    if (el.pageInfo.textContent !== text) el.pageInfo.textContent = text;
    el.prev.disabled = state.page === 0;
    el.next.disabled = to >= state.total;
  }

  function goToPage(page) {
    state.page = page;
    if (state.serverPaged) { poll(); return; }
    renderTable();
    renderPager();
  }

  // ---- KPIs and the chart ----------------------------------------------------------------

  function renderKpis(series) {
    const sum = { total: 0, impression: 0, click: 0, convert: 0 };
    for (const day of series) for (const k of Object.keys(sum)) sum[k] += day[k] ?? 0;
    const rate = (n) => (sum.impression ? Math.round((10000 * n) / sum.impression) / 100 : 0);
    const values = { ...sum, ctr: rate(sum.click), cvr: rate(sum.convert) };
    for (const node of el.kpis.querySelectorAll("[data-kpi]")) {
      const k = node.dataset.kpi;
      const raw = String(values[k]);
      if (node.dataset.value === raw) continue;
      const known = node.dataset.value !== undefined;
      node.dataset.value = raw;
      node.textContent = k === "ctr" || k === "cvr" ? formatPct(values[k]) : formatInt(values[k]);
      if (known) flash(node);
    }
  }

  /** A round upper bound for the y axis: 1, 2 or 5 times a power of ten. */
  function niceMax(v) {
    const p = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
    const steps = p >= 10 ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10]; // 2.5 only where its half is whole
    return steps.map((m) => m * p).find((m) => m >= v);
  }

  let chartSignature = "";
  function renderChart() {
    const series = state.series;
    if (!series) return;
    const width = Math.max(280, Math.round(el.chart.clientWidth));
    const signature = `${width}|${JSON.stringify(series)}`;
    if (signature === chartSignature) return; // same picture: leave the DOM alone
    chartSignature = signature;

    const height = 170;
    const m = { left: 46, right: 10, top: 10, bottom: 24 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    const top = niceMax(Math.max(1, ...series.map((d) => d.total)));
    const y = (v) => m.top + plotH - (plotH * v) / top;
    const slot = plotW / Math.max(1, series.length);
    const barW = Math.max(1, Math.min(28, slot * 0.7));

    const svg = s("svg", {
      class: "chart-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `Events per day, ${series.length} days, at most ${formatInt(Math.max(0, ...series.map((d) => d.total)))} a day`,
    });
    for (const v of [0, top / 2, top]) {
      svg.append(
        s("line", { class: "grid", x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }),
        s("text", { class: "axis", x: m.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatInt(v)),
      );
    }
    series.forEach((day, i) => {
      const x = m.left + i * slot + (slot - barW) / 2;
      const other = Math.max(0, day.total - TYPES.reduce((n, t) => n + (day[t] ?? 0), 0));
      const g = s("g", { class: "day", "data-date": day.date, "data-total": day.total });
      const lines = [...TYPES.map((t) => `${t} ${formatInt(day[t] ?? 0)}`), `other ${formatInt(other)}`];
      g.append(s("title", {}, `${dateFormat.format(new Date(`${day.date}T00:00:00Z`))}: ${formatInt(day.total)} events\n${lines.join("\n")}`));
      g.append(s("rect", { class: "hit", x: m.left + i * slot, y: m.top, width: slot, height: plotH }));
      let base = 0;
      for (const [type, n] of [...TYPES.map((t) => [t, day[t] ?? 0]), ["other", other]]) {
        if (n <= 0) continue;
        g.append(s("rect", { class: `t-${type}`, x, width: barW, y: y(base + n), height: y(base) - y(base + n) }));
        base += n;
      }
      svg.append(g);
    });
    // Date labels: first, last, and a few between when there is room.
    const every = Math.max(1, Math.ceil(series.length / Math.max(1, Math.floor(plotW / 70))));
    series.forEach((day, i) => {
      const last = i === series.length - 1;
      if (i % every !== 0 && !last) return;
      if (!last && i !== 0 && series.length - 1 - i < every) return; // keep clear of the last label
      // Centred under its bar, kept inside the picture at both ends.
      const cx = Math.min(Math.max(m.left + (i + 0.5) * slot, 24), width - 24);
      svg.append(s("text", { class: "axis", x: cx, y: height - 6, "text-anchor": "middle" }, dayFormat.format(new Date(`${day.date}T00:00:00Z`))));
    });
    el.chart.replaceChildren(svg);
    const first = series[0]?.date;
    const last = series[series.length - 1]?.date;
    el.chartRange.textContent = first ? `${series.length === 1 ? "" : `${dateFormat.format(new Date(`${first}T00:00:00Z`))} – `}${dateFormat.format(new Date(`${last}T00:00:00Z`))} · UTC days` : "";
  }

  /** Keeps the last chart (if any) and says why it is not current. */
  function renderChartProblem(error) {
    const text = error.kind === "missing"
      ? "This server has no interaction-timeseries endpoint."
      : `Chart not updated: the API answered ${error.status} (${error.message}).`;
    if (el.chartNote.textContent !== text) el.chartNote.textContent = text;
    el.chartNote.hidden = false;
  }

  // ---- the key ---------------------------------------------------------------------------

  function askForKey(message, problem = false) {
    el.keyMessage.textContent = message || "";
    el.keyMessage.classList.toggle("problem", problem);
    el.keyInput.value = state.key;
    try { $("key-remember").checked = Boolean(localStorage.getItem(KEY_STORAGE)); } catch { /* none */ }
    if (!el.dialog.open) el.dialog.showModal();
    el.keyInput.focus();
    el.keyInput.select();
  }

  function useKey(event) {
    event.preventDefault();
    const key = el.keyInput.value.trim();
    if (!key) { askForKey("Type or paste an API key.", true); return; }
    writeKey(key, $("key-remember").checked);
    el.dialog.close();
    state.stopped = false;
    state.failures = 0;
    setStatus("idle", "connecting…");
    poll();
  }

  // ---- wiring ----------------------------------------------------------------------------

  function labelDays() {
    const names = { 1: "today", 7: "this week", 30: "this month" };
    for (const option of el.days.options) {
      const n = Number(option.value);
      option.textContent = state.window === "rolling"
        ? (n === 1 ? "1 · today" : `last ${n} days`)
        : `${n} · ${names[n] ?? (n <= 7 ? "this week" : n <= 31 ? "this month" : "all time")}`;
    }
  }

  function selectTab(group, focus) {
    state.groupBy = group;
    for (const tab of el.tabs.querySelectorAll("[role=tab]")) {
      const on = tab.dataset.group === group;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
    }
  }

  /** Reads the view from the URL hash and sets the controls to it. */
  function showView() {
    readHash();
    if (![...el.days.options].some((o) => Number(o.value) === state.days)) {
      el.days.append(h("option", { value: state.days }, String(state.days)));
    }
    el.days.value = String(state.days);
    el.window.value = state.window;
    el.pageSize.value = String(state.pageSize);
    labelDays();
    selectTab(state.groupBy, false);
  }

  function init() {
    Object.assign(el, {
      status: $("status"), statusText: $("status-text"), statusSep: $("status-sep"), updated: $("updated"), banner: $("banner"),
      tabs: $("tabs"), days: $("days"), window: $("window"), periodText: $("period-text"),
      kpis: $("kpis"), chart: $("chart"), chartRange: $("chart-range"), chartNote: $("chart-note"),
      panel: $("panel"), thead: document.querySelector("#summary thead"),
      tbody: document.querySelector("#summary tbody"), caption: $("table-caption"), empty: $("empty"),
      pageInfo: $("page-info"), sortNote: $("sort-note"), pageSize: $("page-size"), prev: $("prev"), next: $("next"),
      types: $("outcome-types"), typeList: $("outcome-type-list"),
      dialog: $("key-dialog"), keyForm: $("key-form"), keyInput: $("key-input"), keyMessage: $("key-message"),
    });
    showView();
    writeHash();

    el.tabs.addEventListener("click", (e) => {
      const tab = e.target.closest("[role=tab]");
      if (!tab || tab.dataset.group === state.groupBy) return;
      selectTab(tab.dataset.group, false);
      state.sort = { key: "total", dir: "desc" };
      reload();
    });
    el.tabs.addEventListener("keydown", (e) => {
      const i = GROUPS.indexOf(state.groupBy);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: GROUPS.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      selectTab(GROUPS[(next + GROUPS.length) % GROUPS.length], true);
      state.sort = { key: "total", dir: "desc" };
      reload();
    });
    el.days.addEventListener("change", () => { state.days = Number(el.days.value); reload(); });
    el.window.addEventListener("change", () => { state.window = el.window.value; labelDays(); reload(); });
    el.pageSize.addEventListener("change", () => { state.pageSize = Number(el.pageSize.value); reload(); });
    el.prev.addEventListener("click", () => goToPage(Math.max(0, state.page - 1)));
    el.next.addEventListener("click", () => goToPage(state.page + 1));

    el.keyForm.addEventListener("submit", useKey);
    $("change-key").addEventListener("click", () => askForKey(""));
    $("key-forget").addEventListener("click", () => {
      writeKey("", false);
      el.keyInput.value = "";
      el.keyMessage.textContent = "Key forgotten. Enter a key to go on.";
      state.stopped = true;
      clearTimeout(state.timer);
      setStatus("auth", "no key");
    });
    el.dialog.addEventListener("close", () => {
      if (!state.key) setStatus("auth", "no key");
    });

    // A link or an edited address with another view: show that view.
    window.addEventListener("hashchange", () => { showView(); reload(); });
    // Catch up at once when the tab comes back into view or the network returns.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !state.stopped && state.key) poll();
    });
    window.addEventListener("online", () => { if (!state.stopped && state.key) poll(); });
    new ResizeObserver(() => renderChart()).observe(el.chart);

    poll();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
