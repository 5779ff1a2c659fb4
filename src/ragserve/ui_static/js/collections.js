// The collection names the pickers offer, from GET /v1/collections.

import { api } from "./api.js";
import { h } from "./dom.js";

let names = [];

export const collectionNames = () => names;

/** Reload the collections and refill every picker, keeping each one's selection when it still exists. */
export async function refreshCollections() {
  try {
    const { collections } = await api.collections();
    names = collections.map((c) => c.name);
    fill(collections);
  } catch {
    fill([]); // pickers still offer "default"; the failing request already raised the auth banner if needed
  }
  return names;
}

function fill(collections) {
  const choices = collections.length ? collections : [{ name: "default", document_count: 0 }];
  for (const select of document.querySelectorAll("select.collection-select")) {
    const previous = select.value || select.dataset.wanted || "";
    const options = choices.map((c) =>
      h("option", { value: c.name }, `${c.name} (${c.document_count} document${c.document_count === 1 ? "" : "s"})`),
    );
    if (select.dataset.all) options.unshift(h("option", { value: "" }, "All collections"));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  }
  const datalist = document.getElementById("collection-names");
  datalist.replaceChildren(...collections.map((c) => h("option", { value: c.name })));
}
