// Chat: streamed, cited answers over a collection; the conversation lives in sessionStorage.

import { api } from "./api.js";
import { refreshCollections } from "./collections.js";
import { $, h, openDialog, toast } from "./dom.js";
import { session } from "./session.js";

const MARKER = /\[(\d+)\]/g;

let messages = session.conversation();
let controller = null; // AbortController of the answer being streamed
const emptyNote = $("#chat-empty");

export function initChat() {
  const form = $("#chat-form");
  const input = $("#chat-input");
  const select = $("#chat-collection");
  select.dataset.wanted = session.collection();
  select.addEventListener("change", () => session.setCollection(select.value));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(input.value.trim());
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape" && controller) {
      controller.abort();
    }
  });
  $("#chat-stop").addEventListener("click", () => controller && controller.abort());
  $("#chat-clear").addEventListener("click", () => {
    if (controller) controller.abort();
    messages = [];
    session.setConversation(messages);
    renderAll();
    input.focus();
  });
  renderAll();
}

export function showChat() {
  refreshCollections();
}

function save() {
  session.setConversation(messages);
}

function renderAll() {
  const log = $("#chat-log");
  log.replaceChildren(...(messages.length ? messages.map(renderMessage) : [emptyNote]));
  log.scrollTop = log.scrollHeight;
}

function renderMessage(message) {
  if (message.role === "user") {
    return h("div", { class: "msg msg-user" }, h("p", { class: "msg-label visually-hidden" }, "You asked:"),
      h("p", { class: "msg-text" }, message.text));
  }
  const article = h("article", { class: "msg msg-assistant", "aria-label": "Answer" });
  fillAnswer(article, message);
  return article;
}

function fillAnswer(article, message) {
  const byIndex = new Map((message.citations || []).map((c) => [c.index, c]));
  const text = h("div", { class: "msg-text" }, ...withMarkers(message.text, byIndex));
  const parts = [text];
  if (message.abstained) {
    article.classList.add("abstained");
    parts.push(h("p", { class: "note" }, "No passage in this collection answers the question."));
  }
  if (message.stopped) parts.push(h("p", { class: "note" }, "Stopped."));
  if (message.error) {
    article.classList.add("failed");
    parts.push(h("p", { class: "note error", role: "alert" }, message.error));
  }
  if (byIndex.size) {
    parts.push(h("div", { class: "sources" }, h("span", { class: "sources-label" }, "Sources"),
      h("ul", {}, ...[...byIndex.values()].map((c) => h("li", {}, citeButton(c, true))))));
  }
  if (message.done && message.text) {
    parts.push(h("div", { class: "msg-actions" },
      h("button", { type: "button", class: "btn btn-quiet small", onclick: () => copyAnswer(message) }, "Copy answer"),
      message.collection ? h("span", { class: "muted small" }, `in ${message.collection}`) : null));
  }
  article.replaceChildren(...parts);
}

function withMarkers(text, byIndex) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    const citation = byIndex.get(Number(match[1]));
    if (!citation) continue;
    nodes.push(text.slice(last, match.index), citeButton(citation, false));
    last = match.index + match[0].length;
  }
  nodes.push(text.slice(last));
  return nodes;
}

function citeButton(citation, long) {
  const title = citation.title || citation.source || citation.external_id || "Untitled";
  return h("button", {
    type: "button",
    class: long ? "cite cite-long" : "cite",
    "aria-haspopup": "dialog",
    "aria-label": `Source ${citation.index}: ${title}`,
    title: long ? null : title,
    onclick: () => showCitation(citation),
  }, long ? `[${citation.index}] ${title}` : `[${citation.index}]`);
}

function showCitation(citation) {
  const dialog = $("#citation-dialog");
  $("#citation-title").textContent = `[${citation.index}] ${citation.title || citation.external_id || "Untitled"}`;
  const meta = [citation.source && `Source: ${citation.source}`, `Document ${citation.document_id}`];
  $("#citation-meta").textContent = meta.filter(Boolean).join(" · ");
  $("#citation-quote").textContent = citation.quote;
  const open = $("#citation-open");
  open.href = `#/documents?doc=${encodeURIComponent(citation.document_id)}&chunk=${citation.chunk_id}`;
  open.onclick = () => dialog.close();
  openDialog(dialog);
}

async function copyAnswer(message) {
  const sources = (message.citations || []).map((c) => `[${c.index}] ${c.title || c.external_id || ""}` +
    (c.source ? ` (${c.source})` : ""));
  const text = sources.length ? `${message.text}\n\nSources:\n${sources.join("\n")}` : message.text;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const scratch = h("textarea", { class: "visually-hidden" });
    scratch.value = text;
    document.body.append(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
  }
  toast("Answer copied");
}

function setBusy(busy) {
  $("#chat-send").disabled = busy;
  $("#chat-stop").hidden = !busy;
  $("#chat-status").textContent = busy ? "Generating answer…" : "";
}

async function ask(question) {
  if (!question || controller) return;
  const input = $("#chat-input");
  const collection = $("#chat-collection").value;
  input.value = "";
  messages.push({ role: "user", text: question });
  const answer = { role: "assistant", text: "", citations: [], collection, done: false };
  messages.push(answer);
  save();
  renderAll();
  const log = $("#chat-log");
  const article = log.lastElementChild;
  article.setAttribute("aria-busy", "true");
  const textNode = document.createTextNode("");
  const typing = h("div", { class: "msg-text streaming" }, textNode);
  article.replaceChildren(typing);

  controller = new AbortController();
  setBusy(true);
  try {
    for await (const { event, data } of api.streamAnswer(question, collection, controller.signal)) {
      if (event === "token") {
        answer.text += data.text;
        textNode.data = answer.text;
        log.scrollTop = log.scrollHeight;
      } else if (event === "citations") {
        answer.citations = data;
      } else if (event === "done") {
        answer.text = data.answer;
        answer.abstained = data.abstained;
      }
    }
  } catch (error) {
    if (error.name === "AbortError") answer.stopped = true;
    else answer.error = `Could not answer: ${error.message}`;
  } finally {
    controller = null;
    answer.done = true;
    save();
    article.removeAttribute("aria-busy");
    fillAnswer(article, answer);
    setBusy(false);
    $("#chat-status").textContent = answer.error ? "Answer failed" : answer.stopped ? "Stopped" : "Answer ready";
    log.scrollTop = log.scrollHeight;
    input.focus();
  }
}
