// What the UI keeps for the browser session (sessionStorage): the API key, the conversation and started jobs.

const PREFIX = "ragserve.";

function read(name, fallback) {
  try {
    const raw = sessionStorage.getItem(PREFIX + name);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function write(name, value) {
  try {
    if (value === null || value === undefined) sessionStorage.removeItem(PREFIX + name);
    else sessionStorage.setItem(PREFIX + name, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the UI keeps working, it just forgets on reload.
  }
}

export const session = {
  apiKey: () => read("apiKey", ""),
  setApiKey: (key) => write("apiKey", key || null),
  conversation: () => read("conversation", []),
  setConversation: (messages) => write("conversation", messages),
  collection: () => read("collection", ""),
  setCollection: (name) => write("collection", name),
  jobs: () => read("jobs", []),
  setJobs: (jobs) => write("jobs", jobs),
};
