// Admin: liveness and readiness, a few key metrics parsed from /metrics, and the session's API key.

import { api } from "./api.js";
import { $, h } from "./dom.js";
import { session } from "./session.js";

export function initAdmin() {
  $("#admin-refresh").addEventListener("click", showAdmin);
  $("#api-key").value = session.apiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    session.setApiKey($("#api-key").value.trim());
    $("#api-key-status").textContent = session.apiKey() ? "Key saved for this session." : "No key set.";
    $("#auth-banner").hidden = true;
    showAdmin();
  });
  $("#api-key-clear").addEventListener("click", () => {
    $("#api-key").value = "";
    session.setApiKey("");
    $("#api-key-status").textContent = "Key cleared.";
    showAdmin();
  });
}

export async function showAdmin() {
  await Promise.all([showStatus(), showMetrics(), showAuth()]);
}

const pair = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
const badge = (ok, yes, no) => h("span", { class: `badge badge-${ok ? "succeeded" : "failed"}` }, ok ? yes : no);

async function showStatus() {
  const list = $("#admin-status");
  const items = [];
  try {
    await api.health();
    items.push(...pair("Health", badge(true, "alive", "down")));
  } catch {
    items.push(...pair("Health", badge(false, "alive", "unreachable")));
  }
  try {
    const { ok, body } = await api.ready();
    items.push(...pair("Ready", badge(ok, "ready", "not ready")));
    for (const [name, good] of Object.entries(body.checks || {})) {
      items.push(...pair(name[0].toUpperCase() + name.slice(1), badge(good, "ok", "not loaded")));
    }
  } catch {
    items.push(...pair("Ready", badge(false, "ready", "unknown")));
  }
  list.replaceChildren(...items);
}

/** Prometheus text exposition → [{name, labels, value}] (enough for counters, gauges and histogram sums). */
export function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (!raw || raw.startsWith("#")) continue;
    const match = raw.match(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || "").matchAll(label)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function sum(samples, name, where = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

const integer = (n) => Math.round(n).toLocaleString();

function meanMs(samples, route) {
  const count = sum(samples, "ragserve_http_request_duration_seconds_count", { route });
  if (!count) return "—";
  const seconds = sum(samples, "ragserve_http_request_duration_seconds_sum", { route }) / count;
  return `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`;
}

async function showMetrics() {
  const list = $("#admin-metrics");
  let samples;
  try {
    samples = parseMetrics(await api.metrics());
  } catch (error) {
    list.replaceChildren(...pair("Metrics", `unavailable: ${error.message}`));
    return;
  }
  const hits = sum(samples, "ragserve_embedding_cache_lookups_total", { result: "hit" });
  const lookups = sum(samples, "ragserve_embedding_cache_lookups_total");
  const answers = sum(samples, "ragserve_answers_total");
  const abstained = sum(samples, "ragserve_answers_total", { abstained: "true" });
  const memory = sum(samples, "process_resident_memory_bytes");
  list.replaceChildren(
    ...pair("Documents ingested", integer(sum(samples, "ragserve_ingest_documents_total", { outcome: "succeeded" }))),
    ...pair("Documents failed", integer(sum(samples, "ragserve_ingest_documents_total", { outcome: "failed" }))),
    ...pair("Chunks written", integer(sum(samples, "ragserve_ingest_chunks_total"))),
    ...pair("Documents waiting", integer(sum(samples, "ragserve_jobs_pending_documents"))),
    ...pair("Answers", `${integer(answers)}${answers ? ` · ${integer(abstained)} abstained` : ""}`),
    ...pair("Mean answer time", meanMs(samples, "/v1/answer")),
    ...pair("Mean search time", meanMs(samples, "/v1/search")),
    ...pair("Embedding cache hits", lookups ? `${((hits / lookups) * 100).toFixed(0)} %` : "—"),
    ...(memory ? pair("Server memory", `${(memory / 1024 / 1024).toFixed(0)} MB`) : []),
  );
}

async function showAuth() {
  // Ask without a key: 401/403 means the server enforces keys.
  let state;
  try {
    const response = await fetch("/v1/collections");
    state = response.status === 401 || response.status === 403 ? "required" : "off";
  } catch {
    state = "unknown";
  }
  const text = {
    off: "Authentication is not enabled on this server: requests succeed without an API key. " +
      "API keys can be managed here once the server supports them.",
    required: "This server requires an API key for the API.",
    unknown: "Could not reach the server to check authentication.",
  }[state];
  const key = session.apiKey() ? " A key is set for this session." : "";
  $("#auth-state").textContent = text + key;
}
