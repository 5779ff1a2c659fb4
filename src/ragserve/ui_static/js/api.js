// The public API v1, over fetch. Every request carries the session's API key when one is set.

import { session } from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

const listeners = new Set();

/** Called with every ApiError status, so the shell can show "API key needed" on 401/403. */
export function onApiStatus(listener) {
  listeners.add(listener);
}

function headers(extra = {}) {
  const key = session.apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`.trim();
  let requestId = response.headers.get("x-request-id");
  try {
    const body = await response.json();
    if (body && body.error) {
      ({ code, message } = body.error);
      requestId = body.error.request_id || requestId;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message, requestId);
}

export async function request(method, path, { json, body, signal, accept } = {}) {
  const init = { method, signal, headers: headers(accept ? { Accept: accept } : {}) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  listeners.forEach((listener) => listener(response.status));
  if (!response.ok) throw await errorOf(response);
  return response;
}

const getJson = async (path) => (await request("GET", path)).json();

export const api = {
  collections: () => getJson("/v1/collections"),
  listDocuments: ({ collection, limit = 50, offset = 0 }) => {
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (collection) query.set("collection", collection);
    return getJson(`/v1/documents?${query}`);
  },
  getDocument: (id) => getJson(`/v1/documents/${encodeURIComponent(id)}?include_chunks=true`),
  deleteDocument: (id) => request("DELETE", `/v1/documents/${encodeURIComponent(id)}`),
  upload: async (files, collection) => {
    const form = new FormData();
    form.append("collection", collection);
    for (const file of files) form.append("files", file, file.name);
    return (await request("POST", "/v1/documents", { body: form })).json();
  },
  job: (id) => getJson(`/v1/jobs/${encodeURIComponent(id)}`),
  health: () => getJson("/health"),
  // /ready answers 503 with a body when not ready: read it either way.
  ready: async () => {
    const response = await fetch("/ready", { headers: headers() });
    return { ok: response.ok, body: await response.json() };
  },
  metrics: async () => (await request("GET", "/metrics")).text(),
  /** POST /v1/answer with stream=true; yields {event, data} as the server sends them. */
  streamAnswer: async function* (question, collection, signal) {
    const response = await request("POST", "/v1/answer", {
      json: { question, collection: collection || undefined, stream: true },
      signal,
      accept: "text/event-stream",
    });
    yield* readEvents(response.body);
  },
};

/**
 * Parse a Server-Sent Events stream (https://html.spec.whatwg.org/multipage/server-sent-events.html) from a
 * ReadableStream of bytes. Yields {event, data} with data JSON-decoded; comments (pings) are skipped.
 */
export async function* readEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      let text = buffer + value;
      // A "\r" at the end may be the first half of a "\r\n" split across chunks: decide with the next chunk.
      const held = text.endsWith("\r") ? "\r" : "";
      if (held) text = text.slice(0, -1);
      const lines = text.split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
          event = "message";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let text = colon === -1 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
      }
    }
  } finally {
    // Stopped early (abort, or the consumer stopped reading): let the server see the disconnect.
    if (!finished) reader.cancel().catch(() => {});
  }
}
