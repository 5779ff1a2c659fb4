// Documents: list by collection, filter the page, view a document's chunks, delete.

import { api } from "./api.js";
import { refreshCollections } from "./collections.js";
import { $, formatDate, h, openDialog, toast } from "./dom.js";

const PAGE_SIZE = 25;
let offset = 0;
let total = 0;
let loaded = [];

export function initDocuments() {
  $("#documents-collection").addEventListener("change", () => {
    offset = 0;
    load();
  });
  $("#documents-filter").addEventListener("input", render);
  $("#documents-refresh").addEventListener("click", () => load());
  $("#documents-prev").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    load();
  });
  $("#documents-next").addEventListener("click", () => {
    offset += PAGE_SIZE;
    load();
  });
}

/** ``params``: the route's query, e.g. ``collection`` to pick, ``doc`` (and ``chunk``) to open. */
export async function showDocuments(params) {
  const select = $("#documents-collection");
  if (params.has("collection")) select.dataset.wanted = params.get("collection");
  await refreshCollections();
  if (params.has("collection")) select.value = params.get("collection");
  offset = 0;
  await load();
  if (params.has("doc")) viewDocument(params.get("doc"), Number(params.get("chunk")) || null);
}

async function load() {
  const summary = $("#documents-summary");
  summary.textContent = "Loading…";
  try {
    const page = await api.listDocuments({ collection: $("#documents-collection").value, limit: PAGE_SIZE, offset });
    loaded = page.documents;
    total = page.total;
  } catch (error) {
    loaded = [];
    total = 0;
    summary.textContent = `Could not load documents: ${error.message}`;
    render();
    return;
  }
  render();
}

function matches(doc, needle) {
  if (!needle) return true;
  return [doc.title, doc.source, doc.external_id, doc.id].some((v) => v && v.toLowerCase().includes(needle));
}

function render() {
  const needle = $("#documents-filter").value.trim().toLowerCase();
  const shown = loaded.filter((doc) => matches(doc, needle));
  $("#documents-body").replaceChildren(...shown.map(row));
  const first = total ? offset + 1 : 0;
  const last = offset + loaded.length;
  $("#documents-summary").textContent = total === 0
    ? "No documents yet. Upload some on the Upload page."
    : `${total} document${total === 1 ? "" : "s"}` +
      (needle ? `; ${shown.length} on this page match “${needle}”` : "");
  $("#documents-page").textContent = total ? `${first}–${last} of ${total}` : "";
  $("#documents-prev").disabled = offset === 0;
  $("#documents-next").disabled = last >= total;
  $("#documents-table").hidden = shown.length === 0;
}

function row(doc) {
  const title = doc.title || doc.source || doc.external_id || doc.id;
  return h("tr", {},
    h("td", { "data-label": "Title" },
      h("span", { class: "doc-title" }, title),
      doc.source && doc.source !== title ? h("span", { class: "muted small block" }, doc.source) : null),
    h("td", { "data-label": "Collection" }, doc.collection),
    h("td", { "data-label": "Status" }, h("span", { class: `badge badge-${doc.status}` }, doc.status)),
    h("td", { "data-label": "Chunks", class: "num" }, String(doc.chunk_count)),
    h("td", { "data-label": "Updated" }, formatDate(doc.updated_at)),
    h("td", { class: "actions" },
      h("button", { type: "button", class: "btn btn-quiet small", "aria-label": `View chunks of ${title}`,
        onclick: () => viewDocument(doc.id, null) }, "View chunks"),
      h("button", { type: "button", class: "btn btn-quiet danger small", "aria-label": `Delete ${title}`,
        onclick: () => remove(doc, title) }, "Delete")));
}

async function viewDocument(id, chunkId) {
  const dialog = $("#document-dialog");
  let doc;
  try {
    doc = await api.getDocument(id);
  } catch (error) {
    toast(`Could not open the document: ${error.message}`);
    return;
  }
  $("#document-title").textContent = doc.title || doc.source || doc.id;
  $("#document-meta").textContent = [doc.source, doc.collection, `${doc.chunk_count} chunk${doc.chunk_count === 1 ? "" : "s"}`, `id ${doc.id}`]
    .filter(Boolean).join(" · ");
  $("#document-chunks").replaceChildren(...doc.chunks.map((chunk) =>
    h("li", { class: chunk.chunk_id === chunkId ? "chunk cited" : "chunk", id: `chunk-${chunk.chunk_id}` },
      h("p", { class: "muted small" }, [
        `#${chunk.ordinal + 1}`,
        chunk.section && `§ ${chunk.section}`,
        chunk.page && `page ${chunk.page}`,
        `${chunk.token_count} tokens`,
        chunk.chunk_id === chunkId ? "cited passage" : null,
      ].filter(Boolean).join(" · ")),
      h("p", { class: "chunk-text" }, chunk.text))));
  openDialog(dialog);
  if (chunkId) document.getElementById(`chunk-${chunkId}`)?.scrollIntoView({ block: "center" });
}

async function remove(doc, title) {
  $("#confirm-text").textContent = `“${title}” and its ${doc.chunk_count} chunk${doc.chunk_count === 1 ? "" : "s"} will be removed from ` +
    `${doc.collection}. This cannot be undone.`;
  if ((await openDialog($("#confirm-dialog"))) !== "confirm") return;
  try {
    await api.deleteDocument(doc.id);
    toast(`Deleted ${title}`);
  } catch (error) {
    toast(`Could not delete: ${error.message}`);
  }
  if (offset >= total - 1 && offset > 0) offset = Math.max(0, offset - PAGE_SIZE);
  await refreshCollections();
  await load();
}
