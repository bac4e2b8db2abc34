/* The dashboard's customer view: look one customer up, see their summaries per offer,
 * treatment and channel and their last interactions, refreshed every few seconds.
 *
 * A client of GET api/v1/interaction-summaries and GET api/v1/interaction-history only, with
 * the key the page already holds (app.js keeps it under the same storage name). Every value is
 * written as text (textContent), never as HTML.
 */
"use strict";

(() => {
  const API = "api/v1/";
  const KEY_STORAGE = "interaction-summary.apiKey";
  const POLL_MS = 3000;
  const HISTORY_ROWS = 20;
  const SUMMARY_COLUMNS = [
    ["periodType", "Period"], ["periodKey", "Key"], ["offerId", "Offer"],
    ["treatmentId", "Treatment"], ["channelId", "Channel"], ["impressions", "Impr."],
    ["positive", "Pos."], ["negative", "Neg."], ["neutral", "Neutral"], ["converts", "Conv."],
    ["total", "Total"], ["lastContactAt", "Last contact"], ["lastOutcomeKey", "Last outcome"],
  ];
  const HISTORY_COLUMNS = [
    ["timestamp", "Time"], ["type", "Type"], ["actionId", "Offer"], ["treatmentId", "Treatment"],
    ["channelId", "Channel"], ["id", "Event id"],
  ];
  const $ = (id) => document.getElementById(id);
  const view = { customer: "", periodType: "daily", timer: 0, seq: 0 };

  function key() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || localStorage.getItem(KEY_STORAGE) || "";
    } catch { return ""; }
  }

  async function get(path, params) {
    const url = new URL(API + path, document.baseURI);
    for (const [k, v] of Object.entries(params)) if (v !== "") url.searchParams.set(k, v);
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${key()}`, Accept: "application/json" }, cache: "no-store",
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${response.status}: ${body?.error?.message ?? response.statusText}`);
    return body;
  }

  /** Replace a table's head and body with ``rows`` (arrays of [field, title] columns). */
  function fill(table, columns, rows) {
    const head = document.createElement("tr");
    for (const [, title] of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = title;
      head.append(th);
    }
    table.tHead.replaceChildren(head);
    const body = rows.map((row) => {
      const tr = document.createElement("tr");
      for (const [field] of columns) {
        const td = document.createElement("td");
        td.dataset.col = field;
        td.textContent = row[field] ?? "–";
        if (typeof row[field] === "number") td.className = "num";
        tr.append(td);
      }
      return tr;
    });
    table.tBodies[0].replaceChildren(...body);
  }

  async function refresh() {
    clearTimeout(view.timer);
    if (!view.customer) return;
    const seq = ++view.seq;
    const status = $("customer-status");
    try {
      const [summaries, history] = await Promise.all([
        get("interaction-summaries", { customerId: view.customer, periodType: view.periodType, limit: 200 }),
        get("interaction-history", { customerId: view.customer, limit: HISTORY_ROWS }),
      ]);
      if (seq !== view.seq) return; // a newer lookup started meanwhile
      fill($("customer-summaries"), SUMMARY_COLUMNS, summaries.data);
      fill($("customer-history"), HISTORY_COLUMNS, history.data);
      const shown = summaries.data.length < summaries.total ? ` (first ${summaries.data.length})` : "";
      status.textContent = summaries.total === 0
        ? `no interactions of ${view.customer}`
        : `${summaries.total} rows${shown} · last ${history.data.length} interactions`;
      status.dataset.state = "live";
    } catch (error) {
      if (seq !== view.seq) return;
      status.textContent = `cannot read: ${error.message}`;
      status.dataset.state = "problem";
    }
    view.timer = setTimeout(refresh, POLL_MS);
  }

  function start() {
    const form = $("customer-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      view.customer = $("customer-input").value.trim();
      view.periodType = $("customer-period").value;
      refresh();
    });
    $("customer-period").addEventListener("change", () => {
      view.periodType = $("customer-period").value;
      refresh();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
