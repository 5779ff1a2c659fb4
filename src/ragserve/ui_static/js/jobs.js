// Ingestion jobs started from this browser session: polled until they finish, shown on the Jobs page and
// beside each upload.

import { api } from "./api.js";
import { $, formatDate, h } from "./dom.js";
import { session } from "./session.js";

const POLL_MS = 500;
const FINISHED = new Set(["succeeded", "failed", "partial"]);
const STAGE_SHARE = { queued: 0.05, parsing: 0.25, embedding: 0.55, indexing: 0.85, done: 1 };
const STATUS_TEXT = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  partial: "Partly failed",
};

const subscribers = new Set();
const polling = new Set();

/** ``listener(record)`` runs whenever a tracked job changes. */
export function onJobChange(listener) {
  subscribers.add(listener);
}

export const isFinished = (job) => Boolean(job) && FINISHED.has(job.status);

/** Remember a job this session started and poll it until it finishes. */
export function trackJob(jobId, files, collection) {
  const record = { id: jobId, files, collection, started: new Date().toISOString(), job: null };
  session.setJobs([record, ...session.jobs()]);
  publish(record);
  poll(jobId);
  return record;
}

/** Resume polling the unfinished jobs of this session (after a reload). */
export function resumeJobs() {
  for (const record of session.jobs()) if (!isFinished(record.job)) poll(record.id);
}

function update(jobId, job) {
  const records = session.jobs();
  const record = records.find((r) => r.id === jobId);
  if (!record) return null;
  record.job = job;
  session.setJobs(records);
  return record;
}

function publish(record) {
  subscribers.forEach((listener) => listener(record));
  if (!$("#page-jobs").hidden) renderJobs();
}

async function poll(jobId) {
  if (polling.has(jobId)) return;
  polling.add(jobId);
  try {
    for (;;) {
      let job;
      try {
        job = await api.job(jobId);
      } catch (error) {
        if (error.status === 404) job = { id: jobId, status: "failed", gone: true, errors: [], progress: {} };
        else {
          await sleep(POLL_MS * 4); // server restarting or a network blip: keep trying, more slowly
          continue;
        }
      }
      const record = update(jobId, job);
      if (record) publish(record);
      if (!record || isFinished(job)) break;
      await sleep(POLL_MS);
    }
  } finally {
    polling.delete(jobId);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The share of a job that is done, 0..1: finished documents plus the stage reached by the current ones. */
export function progressShare(job) {
  if (!job) return 0;
  if (isFinished(job)) return 1;
  const { done = 0, total = 1, stage = "queued" } = job.progress || {};
  const current = total > done ? STAGE_SHARE[stage] ?? 0.1 : 0;
  return Math.min(1, (done + current) / Math.max(total, 1));
}

export function statusText(job) {
  if (!job) return "Uploaded";
  if (job.gone) return "No longer on the server";
  if (job.status === "running") {
    const stage = job.progress?.stage || "running";
    return `${stage[0].toUpperCase()}${stage.slice(1)}…`;
  }
  return STATUS_TEXT[job.status] || job.status;
}

/** The progress bar, status badge and error list of one job. */
export function jobStatus(job, label) {
  const share = progressShare(job);
  const status = job ? job.status : "queued";
  const errors = (job?.errors || []).map((e) => {
    const name = e.filename || e.document_id || "document";
    // Loaders often start the message with the file name already.
    const message = e.message.startsWith(`${name}: `) ? e.message.slice(name.length + 2) : e.message;
    return h("li", {}, h("strong", {}, name), `: ${message}`, h("span", { class: "muted" }, ` (${e.code})`));
  });
  const parts = [
    h("div", { class: "job-status" },
      h("span", { class: `badge badge-${status}` }, statusText(job)),
      h("progress", {
        class: `progress-${status}`, max: "100", value: String(Math.round(share * 100)),
        "aria-label": `${label} progress`,
      }),
      job?.progress?.total
        ? h("span", { class: "muted small" }, `${job.progress.done} of ${job.progress.total} processed`)
        : null),
  ];
  if (errors.length) parts.push(h("ul", { class: "job-errors", role: "alert" }, ...errors));
  return parts;
}

export function renderJobs() {
  const records = session.jobs();
  $("#jobs-empty").hidden = records.length > 0;
  $("#jobs-list").replaceChildren(...records.map((record) => {
    const files = record.files.join(", ");
    const job = record.job;
    return h("li", { class: "card job" },
      h("div", { class: "job-head" },
        h("h2", { class: "job-title" }, files),
        h("span", { class: "muted small" }, `${record.collection} · ${formatDate(record.started)}`)),
      ...jobStatus(job, files),
      h("p", { class: "muted small mono" }, `Job ${record.id}`),
      job?.status === "succeeded" || job?.status === "partial"
        ? h("a", { href: `#/documents?collection=${encodeURIComponent(record.collection)}` }, "View documents")
        : null);
  }));
}
