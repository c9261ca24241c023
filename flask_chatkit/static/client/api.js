/*
 * flask_chatkit reference client, part 3 of 10 (order and scope: see base.js).
 *
 * Talking to the server: ChatKitError, JSON requests, Server-Sent Events read
 * from a fetch response, Stop (cancel), re-attach (watch) and uploads with
 * either strategy. It builds no elements: the chat view (chat.js) shows what it
 * returns.
 */

// --- HTTP: JSON requests, SSE streams, uploads -------------------------------------

/** A failed request: HTTP status, the server's error code/field, and its message. */
class ChatKitError extends Error {
  constructor(message, {status = 0, code = "error", field = null, retryable = false} = {}) {
    super(message);
    this.name = "ChatKitError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryable = retryable;
  }
}

/** The error of a non-2xx response: ``{"error": {"code", "message", "field"}}`` if JSON. */
async function responseError(response, fallback) {
  let message = "";
  let code = `http_${response.status}`;
  let field = null;
  try {
    const body = await response.json();
    const error = body && (body.error || body);
    if (error && typeof error === "object") {
      message = typeof error.message === "string" ? error.message : "";
      code = typeof error.code === "string" ? error.code : code;
      field = typeof error.field === "string" ? error.field : null;
    } else if (typeof error === "string") {
      message = error;
    }
  } catch (_) {
    // not JSON: the status text will do
  }
  return new ChatKitError(message || response.statusText || fallback, {
    status: response.status,
    code,
    field,
    // a server or gateway failure may pass; a 4xx will not
    retryable: response.status >= 500 || response.status === 429,
  });
}

function networkError(error, strings) {
  if (error && error.name === "AbortError") return error;
  if (error instanceof ChatKitError) return error;
  return new ChatKitError(strings.networkError, {code: "network_error", retryable: true});
}

/**
 * Read Server-Sent Events from a fetch response as it arrives: yields the
 * JSON of each event's ``data`` (comment lines such as ``: ping`` are skipped).
 */
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const {value, done} = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, {stream: true});
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield JSON.parse(data.join("\n"));
          data = [];
        } else if (line.startsWith(":")) {
          continue; // a comment: keep-alive
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        } // event:, id:, retry: mean nothing in ChatKit
      }
      if (done) break;
    }
    if (buffer.startsWith("data:")) data.push(buffer.slice(buffer.startsWith("data: ") ? 6 : 5));
    if (data.length) yield JSON.parse(data.join("\n"));
  } finally {
    reader.releaseLock();
  }
}

class Api {
  constructor(options, strings) {
    this.url = options.apiUrl || "/chatkit";
    this.headers = options.headers || {};
    this.metadata = options.metadata;
    this.locale = options.locale;
    this.uploadStrategy = options.uploadStrategy || null;
    this.strings = strings;
  }

  body(type, params) {
    const metadata = typeof this.metadata === "function" ? this.metadata() : this.metadata;
    return JSON.stringify({type, params, metadata: metadata || {}});
  }

  baseHeaders() {
    const headers = Object.assign({}, this.headers);
    if (this.locale) headers["Accept-Language"] = this.locale;
    return headers;
  }

  async post(type, params, accept, signal) {
    const headers = Object.assign(this.baseHeaders(), {
      "Content-Type": "application/json",
      Accept: accept,
    });
    let response;
    try {
      response = await fetch(this.url, {
        method: "POST",
        credentials: "same-origin",
        headers,
        body: this.body(type, params),
        signal,
      });
    } catch (error) {
      throw networkError(error, this.strings);
    }
    if (!response.ok) throw await responseError(response, this.strings.error);
    return response;
  }

  /** Ask the server to stop the thread's running turn, wherever it runs
   * (``POST <apiUrl>/cancel``); resolves to ``{stopped}``. */
  async cancel(threadId) {
    const url = new URL(this.url, document.baseURI);
    url.pathname = url.pathname.replace(/\/$/, "") + "/cancel";
    let response;
    try {
      response = await fetch(url.href, {
        method: "POST",
        credentials: "same-origin",
        headers: Object.assign(this.baseHeaders(), {"Content-Type": "application/json"}),
        body: JSON.stringify({thread_id: threadId}),
      });
    } catch (error) {
      throw networkError(error, this.strings);
    }
    if (!response.ok) throw await responseError(response, this.strings.error);
    return response.json();
  }

  /** Watch the thread's running turn from here too (``GET <apiUrl>/threads/<id>/events``):
   * an async iterator over its events, or ``null`` when nothing runs (204). */
  async watch(threadId, signal) {
    const url = new URL(this.url, document.baseURI);
    url.pathname = url.pathname.replace(/\/$/, "") + `/threads/${encodeURIComponent(threadId)}/events`;
    let response;
    try {
      response = await fetch(url.href, {
        credentials: "same-origin",
        headers: Object.assign(this.baseHeaders(), {Accept: "text/event-stream"}),
        signal,
      });
    } catch (error) {
      throw networkError(error, this.strings);
    }
    if (response.status === 204) return null;
    if (!response.ok) throw await responseError(response, this.strings.error);
    return readEvents(response);
  }

  /** A non-streaming request: its JSON answer (``{}`` for an empty body). */
  async json(type, params) {
    const response = await this.post(type, params, "application/json");
    const text = await response.text();
    return text ? JSON.parse(text) : {};
  }

  /** A streaming request: an async iterator over its events. */
  async stream(type, params, signal) {
    const response = await this.post(type, params, "text/event-stream", signal);
    const kind = response.headers.get("Content-Type") || "";
    if (!kind.startsWith("text/event-stream")) {
      throw new ChatKitError(this.strings.error, {status: response.status, code: "not_a_stream"});
    }
    return readEvents(response);
  }

  /** Upload *file* with the configured strategy; resolves to the Attachment JSON. */
  async upload(file) {
    const strategy = this.uploadStrategy;
    if (!strategy) throw new ChatKitError("Attachments are not enabled.", {code: "not_enabled"});
    if (strategy.type === "direct") {
      return this.send(strategy.uploadUrl, "POST", {}, formWith(file), true);
    }
    const created = await this.json("attachments.create", {
      name: file.name || "file",
      size: file.size,
      mime_type: file.type || "application/octet-stream",
    });
    const descriptor = created.upload_descriptor;
    if (!descriptor || !descriptor.url) return created;
    const method = String(descriptor.method || "POST").toUpperCase();
    const extra = Object.assign({}, descriptor.headers || {});
    let body;
    if (method === "PUT") {
      body = file;
      if (!Object.keys(extra).some((key) => key.toLowerCase() === "content-type")) {
        extra["Content-Type"] = file.type || "application/octet-stream";
      }
    } else {
      body = formWith(file);
    }
    // our own headers (e.g. Authorization) go to our origin only, never to a bucket
    const ownOrigin = new URL(descriptor.url, document.baseURI).origin === location.origin;
    const uploaded = await this.send(descriptor.url, method, extra, body, ownOrigin);
    const attachment = uploaded && uploaded.id === created.id ? uploaded : created;
    delete attachment.upload_descriptor;
    return attachment;
  }

  async send(url, method, headers, body, ownOrigin) {
    let response;
    try {
      response = await fetch(url, {
        method,
        credentials: "same-origin",
        headers: Object.assign(ownOrigin ? this.baseHeaders() : {}, headers),
        body,
      });
    } catch (error) {
      throw networkError(error, this.strings);
    }
    if (!response.ok) throw await responseError(response, this.strings.uploadFailed);
    const text = await response.text();
    try {
      return text ? JSON.parse(text) : null;
    } catch (_) {
      return null; // e.g. a bucket's XML answer: the created attachment stands
    }
  }
}

function formWith(file) {
  const form = new FormData();
  form.append("file", file, file.name || "file");
  return form;
}
