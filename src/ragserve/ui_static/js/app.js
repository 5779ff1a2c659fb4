// The shell: hash routes (#/chat, #/upload, #/documents, #/jobs, #/admin), navigation state and focus.

import { initAdmin, showAdmin } from "./admin.js";
import { onApiStatus } from "./api.js";
import { initChat, showChat } from "./chat.js";
import { refreshCollections } from "./collections.js";
import { $ } from "./dom.js";
import { initDocuments, showDocuments } from "./documents.js";
import { isFinished, onJobChange, renderJobs, resumeJobs } from "./jobs.js";
import { initUpload, showUpload } from "./upload.js";

const PAGES = {
  chat: { title: "Chat", show: showChat },
  upload: { title: "Upload", show: showUpload },
  documents: { title: "Documents", show: showDocuments },
  jobs: { title: "Jobs", show: renderJobs },
  admin: { title: "Admin", show: showAdmin },
};

let first = true;

function route() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const name = PAGES[path] ? path : "chat";
  for (const key of Object.keys(PAGES)) $(`#page-${key}`).hidden = key !== name;
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${PAGES[name].title} · ragserve`;
  document.body.dataset.page = name;
  PAGES[name].show(new URLSearchParams(query));
  // Move focus to the new page's heading so keyboard and screen reader users land on it; not on first load.
  if (!first) $(`#page-${name} h1`).focus();
  else if (name === "chat") $("#chat-input").focus();
  first = false;
}

onApiStatus((status) => {
  if (status === 401 || status === 403) $("#auth-banner").hidden = false;
});
onJobChange((record) => {
  if (isFinished(record.job)) refreshCollections();
});

initChat();
initUpload();
initDocuments();
initAdmin();
resumeJobs();
window.addEventListener("hashchange", route);
route();
