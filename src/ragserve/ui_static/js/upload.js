// Upload: drag and drop or choose several files; each is its own request and job, followed until done.

import { api } from "./api.js";
import { refreshCollections } from "./collections.js";
import { $, formatBytes, h } from "./dom.js";
import { jobStatus, onJobChange, trackJob } from "./jobs.js";

const CONCURRENT_UPLOADS = 2;
const rows = new Map(); // job id -> list item
let queue = [];
let active = 0;

export function initUpload() {
  const zone = $("#dropzone");
  const input = $("#upload-files");
  $("#upload-choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    enqueue([...input.files]);
    input.value = "";
  });
  $("#upload-form").addEventListener("submit", (event) => event.preventDefault());
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    enqueue([...(event.dataTransfer?.files || [])]);
  });
  // A file dropped beside the zone must not make the browser navigate away from the app.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  onJobChange((record) => {
    const row = rows.get(record.id);
    if (row) row.querySelector(".file-status").replaceChildren(...jobStatus(record.job, record.files[0]));
  });
}

export function showUpload() {
  refreshCollections();
}

function enqueue(files) {
  const collectionInput = $("#upload-collection");
  if (!collectionInput.reportValidity()) return;
  const collection = collectionInput.value.trim();
  for (const file of files) {
    const row = h("li", { class: "card file" },
      h("div", { class: "file-head" },
        h("span", { class: "file-name" }, file.name),
        h("span", { class: "muted small" }, `${formatBytes(file.size)} → ${collection}`)),
      h("div", { class: "file-status" }, h("span", { class: "badge badge-queued" }, "Waiting to upload")));
    $("#upload-list").prepend(row);
    queue.push({ file, collection, row });
  }
  $("#upload-empty").hidden = $("#upload-list").children.length > 0;
  pump();
}

function pump() {
  while (active < CONCURRENT_UPLOADS && queue.length) {
    const next = queue[0];
    queue = queue.slice(1);
    active += 1;
    send(next).finally(() => {
      active -= 1;
      pump();
    });
  }
}

async function send({ file, collection, row }) {
  const status = row.querySelector(".file-status");
  status.replaceChildren(h("span", { class: "badge badge-running" }, "Uploading…"));
  try {
    const accepted = await api.upload([file], collection);
    rows.set(accepted.job_id, row);
    row.dataset.job = accepted.job_id;
    trackJob(accepted.job_id, [file.name], collection);
  } catch (error) {
    status.replaceChildren(
      h("div", { class: "job-status" }, h("span", { class: "badge badge-failed" }, "Rejected")),
      h("ul", { class: "job-errors", role: "alert" }, h("li", {}, h("strong", {}, file.name), `: ${error.message}`)));
  }
}
