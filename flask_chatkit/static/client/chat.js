/*
 * flask_chatkit reference client, part 5 of 6 (order and scope: see base.js).
 *
 * The chat view, class Chat: layout, thread list, composer and attachments,
 * streams and their events, items, feedback, widget actions, client tools,
 * structured input, errors and notices.
 */

// --- the chat -------------------------------------------------------------------------

const FOLLOW_DISTANCE = 80; // px from the bottom within which the log keeps following
const STOPPED_KEPT = 500; // stopped answers remembered per API url

class Chat {
  constructor(element, options) {
    if (!(element instanceof Element)) throw new TypeError("FlaskChatKit.mount needs an element");
    this.el = element;
    this.options = Object.assign({}, options || {});
    this.t = stringsFor(this.options.locale, this.options.strings);
    this.api = new Api(this.options, this.t);
    this.thread = null; // the open thread (without items), or null for a new one
    this.stopping = false; // a Stop was pressed for the running stream
    this.streamEnd = Promise.resolve(); // settles when the running stream ends
    this.items = new Map(); // id -> {item, el}
    this.threadsAfter = null;
    this.pending = []; // composer attachments: {id, file, attachment, state, el}
    this.controller = null; // the AbortController of the running stream
    this.renderQueued = new Set();
    this.storageKey = `flask-chatkit:thread:${this.api.url}`;
    // answers the user stopped, kept in localStorage so a reload still marks them
    this.stoppedKey = `flask-chatkit:stopped:${this.api.url}`;
    injectStyle(element.ownerDocument || document);
    this.build();
    this.loadThreads();
    const initial = this.options.initialThread !== undefined ? this.options.initialThread : this.remembered();
    if (initial) this.openThread(initial, {quiet: true});
    else this.showEmpty();
  }

  // --- layout ---

  build() {
    const t = this.t;
    const el = this.el;
    el.classList.add("fck-root");
    el.textContent = "";
    const threadsId = nextId("fck-threads");
    const inputId = nextId("fck-input");
    this.newButton = h("button", {type: "button", class: "fck-primary", "data-ck": "new-thread", text: t.newThread, onclick: () => this.newThread()});
    this.threadList = h("ul", {class: "fck-threads", "data-ck": "threads", "aria-label": t.threads});
    this.moreThreads = h("button", {type: "button", hidden: true, text: t.moreThreads, onclick: () => this.loadThreads(true)});
    this.threadsNote = h("p", {class: "fck-muted", hidden: true});
    this.sidebar = h("nav", {class: "fck-sidebar", id: threadsId, "aria-label": t.threads, "data-ck": "sidebar"}, [
      this.newButton,
      h("h2", {text: t.threads}),
      this.threadList,
      this.threadsNote,
      this.moreThreads,
    ]);
    this.toggle = h("button", {
      type: "button",
      class: "fck-toggle",
      "data-ck": "toggle-threads",
      "aria-controls": threadsId,
      "aria-expanded": "false",
      "aria-label": t.showThreads,
      onclick: () => this.setSidebar(!el.classList.contains("fck-open")),
    });
    this.toggle.appendChild(icon("menu"));
    this.titleEl = h("h2", {"data-ck": "title", text: this.options.title || t.title});
    this.log = h("div", {class: "fck-log", "data-ck": "messages", role: "log", "aria-live": "polite", "aria-label": t.title, tabindex: "0"});
    this.progress = h("div", {class: "fck-progress", "data-ck": "progress", role: "status", "aria-live": "polite"});
    this.banner = h("div", {class: "fck-banner", "data-ck": "status-banner", hidden: true});
    this.textarea = h("textarea", {id: inputId, rows: "1", placeholder: this.options.placeholder || t.placeholder, autocomplete: "off"});
    this.sendButton = h("button", {type: "submit", class: "fck-primary", "data-ck": "send", text: t.send});
    this.stopButton = h("button", {type: "button", "data-ck": "stop", hidden: true, text: t.stop, onclick: () => this.stopAnswer()});
    this.chips = h("div", {class: "fck-chips", "data-ck": "attachments", hidden: true});
    this.fileInput = h("input", {type: "file", multiple: true, class: "fck-sr", "data-ck": "attach"});
    const attachLabel = h("label", {class: "fck-attach", title: t.attach}, [
      icon("clip"),
      h("span", {class: "fck-sr", text: t.attach}),
      this.fileInput,
    ]);
    if (!this.api.uploadStrategy) attachLabel.hidden = true;
    this.composer = h("form", {class: "fck-composer", "data-ck": "composer"}, [
      this.chips,
      h("div", {class: "fck-row"}, [
        attachLabel,
        h("label", {for: inputId, class: "fck-sr", text: t.message}),
        this.textarea,
        this.stopButton,
        this.sendButton,
      ]),
    ]);
    const main = h("section", {class: "fck-main"}, [
      h("header", {class: "fck-header"}, [this.toggle, this.titleEl]),
      this.log,
      this.progress,
      this.banner,
      this.composer,
    ]);
    el.append(this.sidebar, main);

    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      } else if (event.key === "Escape" && this.controller) {
        this.stopAnswer();
      }
    });
    this.textarea.addEventListener("input", () => this.autosize());
    this.textarea.addEventListener("paste", (event) => {
      const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
      if (files.length && this.api.uploadStrategy) {
        event.preventDefault();
        this.addFiles(files);
      }
    });
    this.fileInput.addEventListener("change", () => {
      this.addFiles(Array.from(this.fileInput.files || []));
      this.fileInput.value = "";
    });
    this.onDragOver = (event) => {
      if (!this.api.uploadStrategy || !Array.from(event.dataTransfer.types || []).includes("Files")) return;
      event.preventDefault();
      el.classList.add("fck-dragging");
    };
    this.onDragLeave = (event) => {
      if (!el.contains(event.relatedTarget)) el.classList.remove("fck-dragging");
    };
    this.onDrop = (event) => {
      el.classList.remove("fck-dragging");
      if (!this.api.uploadStrategy || !event.dataTransfer.files.length) return;
      event.preventDefault();
      this.addFiles(Array.from(event.dataTransfer.files));
    };
    el.addEventListener("dragover", this.onDragOver);
    el.addEventListener("dragleave", this.onDragLeave);
    el.addEventListener("drop", this.onDrop);
  }

  autosize() {
    this.textarea.style.height = "auto";
    this.textarea.style.height = `${Math.min(this.textarea.scrollHeight + 2, 192)}px`;
  }

  setSidebar(open) {
    this.el.classList.toggle("fck-open", open);
    this.toggle.setAttribute("aria-expanded", String(open));
    if (open) (this.threadList.querySelector("[aria-current='true']") || this.newButton).focus();
  }

  emit(name, detail) {
    this.el.dispatchEvent(new CustomEvent(name, {detail, bubbles: true}));
  }

  // --- thread list ---

  async loadThreads(more) {
    const params = {limit: 30, order: "desc"};
    if (more && this.threadsAfter) params.after = this.threadsAfter;
    this.threadsNote.hidden = true;
    let page;
    try {
      page = await this.api.json("threads.list", params);
    } catch (error) {
      this.threadsNote.hidden = false;
      this.threadsNote.textContent = error.message || this.t.error;
      this.threadsNote.appendChild(document.createTextNode(" "));
      this.threadsNote.appendChild(h("button", {type: "button", text: this.t.retry, onclick: () => this.loadThreads(more)}));
      return;
    }
    if (!more) this.threadList.textContent = "";
    for (const thread of page.data || []) {
      if (!this.threadEntry(thread.id)) this.threadList.appendChild(this.threadRow(thread));
    }
    if (this.thread && !this.threadEntry(this.thread.id)) this.threadList.prepend(this.threadRow(this.thread));
    this.threadsAfter = page.has_more ? page.after : null;
    this.moreThreads.hidden = !page.has_more;
    this.markCurrent();
  }

  threadRow(thread) {
    const button = h("button", {
      type: "button",
      "data-ck": "thread",
      "data-thread-id": thread.id,
      text: thread.title || this.t.untitled,
      onclick: () => {
        this.setSidebar(false);
        this.openThread(thread.id);
      },
    });
    return h("li", null, button);
  }

  threadEntry(id) {
    return Array.from(this.threadList.querySelectorAll("[data-ck='thread']")).find((el) => el.getAttribute("data-thread-id") === id) || null;
  }

  markCurrent() {
    const current = this.thread && this.thread.id;
    for (const entry of this.threadList.querySelectorAll("[data-ck='thread']")) {
      if (entry.getAttribute("data-thread-id") === current) entry.setAttribute("aria-current", "true");
      else entry.removeAttribute("aria-current");
    }
    this.threadsNote.hidden = this.threadList.children.length > 0 || !this.threadsNote.textContent;
    if (!this.threadList.children.length && this.threadsNote.hidden) {
      this.threadsNote.hidden = false;
      this.threadsNote.textContent = this.t.noThreads;
    } else if (this.threadList.children.length && this.threadsNote.textContent === this.t.noThreads) {
      this.threadsNote.hidden = true;
    }
  }

  setThread(thread) {
    const changed = (this.thread && this.thread.id) !== (thread && thread.id);
    this.thread = thread ? {id: thread.id, title: thread.title || null, status: thread.status || {type: "active"}} : null;
    this.titleEl.textContent = (thread && thread.title) || this.options.title || this.t.title;
    if (thread) {
      let entry = this.threadEntry(thread.id);
      if (!entry) {
        this.threadList.prepend(this.threadRow(thread));
        entry = this.threadEntry(thread.id);
      }
      entry.textContent = thread.title || this.t.untitled;
    }
    this.remember(thread ? thread.id : null);
    this.markCurrent();
    this.applyStatus();
    if (changed) this.emit("chatkit:thread-change", {threadId: thread ? thread.id : null});
  }

  applyStatus() {
    const status = (this.thread && this.thread.status) || {type: "active"};
    const blocked = status.type === "locked" || status.type === "closed";
    this.banner.hidden = !blocked;
    this.banner.textContent = blocked ? status.reason || this.t[status.type] : "";
    this.composer.hidden = status.type === "closed";
    this.textarea.disabled = blocked;
    this.updateControls();
  }

  remembered() {
    try {
      return global.sessionStorage.getItem(this.storageKey);
    } catch (_) {
      return null;
    }
  }

  /** The ids of answers the user stopped (newest last), as kept in localStorage. */
  stoppedIds() {
    try {
      const ids = JSON.parse(global.localStorage.getItem(this.stoppedKey) || "[]");
      return Array.isArray(ids) ? ids : [];
    } catch (_) {
      return [];
    }
  }

  rememberStopped(id) {
    const ids = this.stoppedIds().filter((other) => other !== id);
    ids.push(id);
    try {
      global.localStorage.setItem(this.stoppedKey, JSON.stringify(ids.slice(-STOPPED_KEPT)));
    } catch (_) {
      // storage may be disabled: the mark lasts until the page is left
    }
  }

  remember(id) {
    try {
      if (id) global.sessionStorage.setItem(this.storageKey, id);
      else global.sessionStorage.removeItem(this.storageKey);
    } catch (_) {
      // storage may be disabled: only the reload convenience is lost
    }
  }

  newThread() {
    if (this.controller) this.stop();
    this.setSidebar(false);
    this.clearLog();
    this.setThread(null);
    this.showEmpty();
    this.textarea.focus();
  }

  async openThread(id, {quiet = false} = {}) {
    if (this.controller) this.stop();
    this.clearLog();
    const loading = h("p", {class: "fck-empty", text: this.t.loading});
    this.log.appendChild(loading);
    let thread;
    try {
      thread = await this.api.json("threads.get_by_id", {thread_id: id});
      const items = (thread.items && thread.items.data) || [];
      let page = thread.items || {};
      // get_by_id gives the oldest page: fetch the rest, oldest first
      for (let n = 0; page.has_more && page.after && n < 50; n += 1) {
        page = await this.api.json("items.list", {thread_id: id, order: "asc", after: page.after, limit: 100});
        items.push(...(page.data || []));
      }
      loading.remove();
      this.setThread(thread);
      for (const item of items) this.addItem(item);
      if (!items.length) this.showEmpty();
      this.scrollToEnd(true);
      // locked: perhaps an answer still running (started before a reload, or in
      // another tab): follow it to its end (the server says 204 when none runs)
      if (this.thread.status && this.thread.status.type === "locked") this.reattach(id);
    } catch (error) {
      loading.remove();
      if (quiet && error.status === 404) {
        this.setThread(null); // a remembered thread that is gone: start afresh
        this.showEmpty();
        return;
      }
      this.showError(error, error.retryable ? () => this.openThread(id) : null);
    }
  }

  clearLog() {
    this.items.clear();
    this.log.textContent = "";
    this.progress.textContent = "";
  }

  showEmpty() {
    if (!this.log.querySelector(".fck-item, .fck-box")) {
      this.log.appendChild(h("p", {class: "fck-empty", "data-ck": "empty", text: this.options.greeting || this.t.empty}));
    }
  }

  // --- composer ---

  updateControls() {
    const streaming = Boolean(this.controller);
    const uploading = this.pending.some((entry) => entry.state === "uploading");
    const blocked = this.thread && this.thread.status && this.thread.status.type !== "active";
    this.sendButton.disabled = streaming || uploading || Boolean(blocked);
    this.stopButton.hidden = !(streaming && this.allowCancel);
    this.sendButton.hidden = streaming && this.allowCancel;
    if (streaming) this.el.setAttribute("aria-busy", "true");
    else this.el.removeAttribute("aria-busy");
    this.chips.hidden = this.pending.length === 0;
  }

  addFiles(files) {
    for (const file of files) {
      const entry = {file, attachment: null, state: "uploading", el: null, preview: null};
      if (/^image\//.test(file.type)) entry.preview = URL.createObjectURL(file);
      entry.el = this.chip(entry);
      this.pending.push(entry);
      this.chips.appendChild(entry.el);
      this.updateControls();
      this.api.upload(file).then(
        (attachment) => {
          entry.attachment = attachment;
          entry.state = "ready";
          this.refreshChip(entry);
        },
        (error) => {
          entry.state = "error";
          entry.error = error.message || this.t.uploadFailed;
          this.refreshChip(entry);
          this.emit("chatkit:error", {error});
        }
      );
    }
  }

  chip(entry) {
    const name = (entry.attachment && entry.attachment.name) || entry.file.name || this.t.attachment;
    const preview = entry.attachment && entry.attachment.preview_url ? safeImageSrc(entry.attachment.preview_url) : entry.preview;
    const state = entry.state === "uploading" ? this.t.uploading : entry.state === "error" ? entry.error : "";
    return h("div", {class: "fck-chip", "data-ck": "attachment", "data-state": entry.state, "data-id": entry.attachment && entry.attachment.id}, [
      preview ? h("img", {src: preview, alt: name}) : null,
      h("span", {title: name, text: state ? `${name} · ${state}` : name}),
      h("button", {type: "button", "aria-label": `${this.t.remove} ${name}`, text: "×", onclick: () => this.removeAttachment(entry)}),
    ]);
  }

  refreshChip(entry) {
    if (!entry.el.isConnected) return;
    const fresh = this.chip(entry);
    entry.el.replaceWith(fresh);
    entry.el = fresh;
    this.updateControls();
  }

  removeAttachment(entry) {
    this.pending = this.pending.filter((other) => other !== entry);
    entry.el.remove();
    if (entry.preview) URL.revokeObjectURL(entry.preview);
    if (entry.attachment) {
      this.api.json("attachments.delete", {attachment_id: entry.attachment.id}).catch((error) => this.emit("chatkit:error", {error}));
    }
    this.updateControls();
    this.textarea.focus();
  }

  /** Send the composer's text and attachments as a new user message. */
  async send(textOverride) {
    if (this.controller) return;
    const text = (textOverride !== undefined ? String(textOverride) : this.textarea.value).trim();
    const ready = this.pending.filter((entry) => entry.state === "ready");
    if (this.pending.some((entry) => entry.state === "uploading")) return;
    if (!text && !ready.length) return;
    const input = {
      content: text ? [{type: "input_text", text}] : [],
      attachments: ready.map((entry) => entry.attachment.id),
      inference_options: {},
    };
    const draft = {text: this.textarea.value, pending: this.pending};
    this.textarea.value = "";
    this.autosize();
    this.pending = [];
    this.chips.textContent = "";
    this.removeEmpty();
    const request = this.thread
      ? ["threads.add_user_message", {thread_id: this.thread.id, input}]
      : ["threads.create", {input}];
    const started = await this.runStream(request[0], request[1], {
      onFailure: () => {
        // nothing was sent: give the draft back
        if (!this.textarea.value) this.textarea.value = draft.text;
        this.pending = draft.pending.filter((entry) => entry.state !== "error").concat(this.pending);
        for (const entry of this.pending) this.chips.appendChild(entry.el);
        this.updateControls();
      },
    });
    if (started) for (const entry of ready) if (entry.preview) URL.revokeObjectURL(entry.preview);
  }

  removeEmpty() {
    for (const el of this.log.querySelectorAll("[data-ck='empty']")) el.remove();
  }

  /** Stop reading the answer here (the server goes on or stops, as it is set up). */
  stop() {
    if (this.controller) this.controller.abort();
  }

  /** The Stop button: stop the answer on the server first, wherever it runs, so
   * that what was saved is what was shown, then stop reading it here. */
  async stopAnswer() {
    const controller = this.controller;
    if (!controller) return;
    this.stopping = true;
    this.stopButton.disabled = true;
    try {
      if (this.thread) {
        await this.api.cancel(this.thread.id);
        // the server ends the stream once it has saved what it sent: read it to
        // its end, so that what stays on screen is what was saved
        await Promise.race([this.streamEnd, new Promise((done) => setTimeout(done, 3000))]);
      }
    } catch (_) {
      // an older server, or none reachable: stopping here is all there is
    } finally {
      if (this.controller === controller) controller.abort();
      this.stopButton.disabled = false;
    }
  }

  /** Mark the turn's unfinished answers as stopped (and remember it for reloads). */
  markStopped() {
    for (const id of this.turn.assistant) {
      const entry = this.items.get(id);
      if (entry && !entry.done) {
        entry.stopped = true;
        this.rememberStopped(id);
      }
    }
  }

  // --- streams ---

  /**
   * Run one streaming request and apply its events. ``onFailure`` runs when the
   * request failed before its stream started. Resolves to whether it started.
   */
  /** Follow the thread's running turn, started elsewhere, as if this page had started it. */
  reattach(id) {
    return this.runStream(null, null, {open: (signal) => this.api.watch(id, signal)});
  }

  async runStream(type, params, {onFailure, open} = {}) {
    if (this.controller) return false;
    const controller = new AbortController();
    this.controller = controller;
    this.stopping = false;
    let ended;
    this.streamEnd = new Promise((resolve) => { ended = resolve; });
    this.allowCancel = true;
    this.turn = {toolCalls: [], assistant: new Set()};
    this.clearErrors();
    this.updateControls();
    let started = false;
    try {
      const events = open ? await open(controller.signal) : await this.api.stream(type, params, controller.signal);
      started = true;
      for await (const event of events || []) this.handleEvent(event);
      if (this.stopping) this.markStopped(); // the server ended it after a Stop
    } catch (error) {
      if (error && error.name === "AbortError") {
        this.progress.textContent = "";
        // the server keeps what was streamed so far: mark those answers as stopped
        // (a watch that this page leaves stops nothing: the answer runs on)
        if (!open || this.stopping) this.markStopped();
      } else {
        if (!started && onFailure) onFailure(error);
        const retry = !started && error.retryable ? () => this.runStream(type, params, {onFailure, open}) : null;
        this.showError(error, retry);
      }
    } finally {
      ended();
      this.controller = null;
      this.progress.textContent = "";
      this.flushRenders();
      for (const id of this.turn.assistant) this.finishAssistant(id);
      this.updateControls();
    }
    const toolCall = !controller.signal.aborted && this.turn.toolCalls.pop();
    if (toolCall) await this.runClientTool(toolCall);
    return started;
  }

  handleEvent(event) {
    if (!event || typeof event !== "object") return;
    switch (event.type) {
      case "thread.created":
        this.removeEmpty();
        this.setThread(event.thread);
        break;
      case "thread.updated":
        if (this.thread && event.thread && event.thread.id === this.thread.id) this.setThread(event.thread);
        break;
      case "thread.item.added":
        this.progress.textContent = "";
        this.addItem(event.item, {live: true});
        break;
      case "thread.item.updated":
        this.updateItem(event.item_id, event.update);
        break;
      case "thread.item.done":
      case "thread.item.replaced":
        this.progress.textContent = "";
        this.addItem(event.item, {live: true, done: true});
        break;
      case "thread.item.removed":
        this.removeItem(event.item_id);
        break;
      case "stream_options":
        this.allowCancel = !(event.stream_options && event.stream_options.allow_cancel === false);
        this.updateControls();
        break;
      case "progress_update":
        this.progress.textContent = event.text || "";
        break;
      case "client_effect":
        this.emit("chatkit:effect", {name: event.name, data: event.data || {}});
        break;
      case "notice":
        this.showNotice(event);
        break;
      case "error":
        this.showStreamError(event);
        break;
      default:
        break; // newer event types: ignored
    }
  }

  // --- items ---

  addItem(item, {live = false, done = false} = {}) {
    if (!item || !item.id) return;
    const existing = this.items.get(item.id);
    const entry = existing || {item, el: null, done: !live || done};
    entry.item = item;
    if (!live && item.type === "assistant_message" && this.stoppedIds().includes(item.id)) {
      entry.stopped = true;
    }
    if (!live || done) entry.done = true;
    const el = this.renderItem(entry);
    if (!el) {
      if (existing && existing.el) existing.el.remove();
      this.items.delete(item.id);
      return;
    }
    if (existing && existing.el && existing.el.isConnected) existing.el.replaceWith(el);
    else {
      this.removeEmpty();
      this.log.appendChild(el);
    }
    entry.el = el;
    this.items.set(item.id, entry);
    if (live && item.type === "assistant_message") {
      if (entry.done) this.turn && this.turn.assistant.delete(item.id);
      else this.turn && this.turn.assistant.add(item.id);
    }
    if (live && done && item.type === "client_tool_call" && item.status === "pending" && this.turn) {
      this.turn.toolCalls.push(item);
    }
    this.scrollToEnd();
  }

  removeItem(id) {
    const entry = this.items.get(id);
    if (entry && entry.el) entry.el.remove();
    this.items.delete(id);
  }

  updateItem(id, update) {
    const entry = this.items.get(id);
    if (!entry || !update) return;
    const item = entry.item;
    const index = update.content_index;
    switch (update.type) {
      case "assistant_message.content_part.added":
        item.content = item.content || [];
        while (item.content.length < index) item.content.push({type: "output_text", text: "", annotations: []});
        item.content[index] = Object.assign({annotations: []}, update.content);
        break;
      case "assistant_message.content_part.text_delta":
        item.content = item.content || [];
        if (!item.content[index]) item.content[index] = {type: "output_text", text: "", annotations: []};
        item.content[index].text = (item.content[index].text || "") + (update.delta || "");
        break;
      case "assistant_message.content_part.annotation_added": {
        const part = (item.content || [])[index];
        if (!part) return;
        part.annotations = part.annotations || [];
        part.annotations.splice(Math.min(update.annotation_index, part.annotations.length), 0, update.annotation);
        break;
      }
      case "assistant_message.content_part.done":
        item.content = item.content || [];
        item.content[index] = update.content;
        break;
      case "widget.streaming_text.value_delta":
        item.widget = updateComponent(item.widget, update.component_id, (node) =>
          Object.assign({}, node, {value: String(node.value || "") + (update.delta || ""), streaming: !update.done}));
        break;
      case "widget.component.updated":
        item.widget = updateComponent(item.widget, update.component_id, () => update.component);
        break;
      case "widget.root.updated":
        item.widget = update.widget;
        break;
      case "workflow.task.added":
      case "workflow.task.updated": {
        const tasks = (item.workflow && item.workflow.tasks) || [];
        if (update.type === "workflow.task.added") tasks.push(update.task);
        else tasks[update.task_index] = update.task;
        if (item.workflow) item.workflow.tasks = tasks;
        break;
      }
      case "generated_image.updated":
        item.image = update.image;
        break;
      default:
        return;
    }
    this.progress.textContent = "";
    this.scheduleRender(id);
  }

  /** Coalesce the deltas of one frame into a single re-render of the item. */
  scheduleRender(id) {
    if (this.renderQueued.has(id)) return;
    this.renderQueued.add(id);
    const run = () => {
      if (!this.renderQueued.delete(id)) return;
      const entry = this.items.get(id);
      if (!entry) return;
      const fresh = this.renderItem(entry);
      if (fresh && entry.el && entry.el.isConnected) {
        entry.el.replaceWith(fresh);
        entry.el = fresh;
        this.scrollToEnd();
      }
    };
    requestAnimationFrame(run);
    setTimeout(run, 100); // rAF does not run in a hidden tab
  }

  flushRenders() {
    for (const id of Array.from(this.renderQueued)) {
      this.renderQueued.delete(id);
      const entry = this.items.get(id);
      if (!entry) continue;
      const fresh = this.renderItem(entry);
      if (fresh && entry.el && entry.el.isConnected) {
        entry.el.replaceWith(fresh);
        entry.el = fresh;
      }
    }
  }

  /** A stream ended (or stopped) with *id* unfinished: keep its text, offer feedback. */
  finishAssistant(id) {
    const entry = this.items.get(id);
    if (!entry || entry.done) return;
    entry.done = true;
    const fresh = this.renderItem(entry);
    if (fresh && entry.el) {
      entry.el.replaceWith(fresh);
      entry.el = fresh;
    }
  }

  scrollToEnd(force) {
    const log = this.log;
    const near = log.scrollHeight - log.scrollTop - log.clientHeight < FOLLOW_DISTANCE + 200;
    if (force || near) log.scrollTop = log.scrollHeight;
  }

  renderItem(entry) {
    const item = entry.item;
    const wrap = (cls, children) =>
      h("div", {class: `fck-item ${cls}`, "data-ck": "item", "data-type": item.type, "data-id": item.id}, children);
    switch (item.type) {
      case "user_message":
        return wrap("fck-user", this.userMessage(item));
      case "assistant_message":
        return wrap("fck-assistant", this.assistantMessage(item, entry.done, entry.stopped));
      case "widget":
        return wrap("fck-assistant", this.widget(item));
      case "client_tool_call":
        return wrap("fck-assistant", h("p", {
          class: "fck-tool",
          text: format(item.status === "completed" ? this.t.toolDone : this.t.runningTool, {name: item.name}),
        }));
      case "structured_input":
        return wrap("fck-assistant", this.structuredInput(item));
      case "generated_image": {
        const src = item.image && safeImageSrc(item.image.url);
        return wrap("fck-assistant", src ? h("img", {class: "fck-w-img", src, alt: "", style: "max-width:min(24rem,100%)"}) : h("p", {class: "fck-typing"}));
      }
      case "workflow":
        return wrap("fck-assistant", this.workflow(item.workflow || {}));
      case "task":
        return wrap("fck-assistant", this.workflow({tasks: [item.task]}));
      default:
        return null; // end_of_turn, hidden items and anything newer
    }
  }

  userMessage(item) {
    const nodes = [];
    const attachments = item.attachments || [];
    if (attachments.length) {
      nodes.push(h("div", {class: "fck-att-list", "data-ck": "message-attachments"}, attachments.map((a) => {
        const src = a.type === "image" && safeImageSrc(a.preview_url);
        return src
          ? h("img", {src, alt: a.name || this.t.attachment, "data-ck": "message-attachment"})
          : h("span", {class: "fck-file", "data-ck": "message-attachment", text: a.name || this.t.attachment});
      })));
    }
    if (item.quoted_text) nodes.push(h("div", {class: "fck-quote", text: item.quoted_text}));
    const parts = (item.content || []).map((part) =>
      part.type === "input_tag" ? h("span", {class: "fck-tag", text: part.text || ""}) : document.createTextNode(part.text || ""));
    if (parts.length && parts.some((p) => p.textContent)) {
      nodes.push(h("div", {class: "fck-bubble", "data-ck": "user-text"}, [h("span", {class: "fck-sr", text: `${this.t.you}: `}), parts]));
    }
    return nodes;
  }

  assistantMessage(item, done, stopped) {
    const bubble = h("div", {class: "fck-bubble"}, h("span", {class: "fck-sr", text: `${this.t.assistant}: `}));
    const content = item.content || [];
    const text = h("div", {class: "fck-text", "data-ck": "text"});
    const annotations = [];
    for (const part of content) {
      text.appendChild(renderMarkdown(part.text || ""));
      annotations.push(...(part.annotations || []));
    }
    if (!done && !content.some((part) => part.text)) text.classList.add("fck-typing");
    bubble.appendChild(text);
    if (stopped) bubble.appendChild(h("p", {class: "fck-stopped", "data-ck": "stopped", text: this.t.stopped}));
    const sources = this.sources(annotations);
    if (sources) bubble.appendChild(sources);
    if (!done) return bubble;
    return [bubble, this.feedbackButtons(item)];
  }

  sources(annotations) {
    const seen = new Set();
    const list = h("ul", {class: "fck-sources", "data-ck": "sources", "aria-label": this.t.sources});
    for (const annotation of annotations) {
      const source = annotation && annotation.source;
      if (!source) continue;
      const label = source.title || source.filename || source.label || source.url || "";
      const key = `${source.type}:${source.url || source.filename || source.id || label}`;
      if (!label || seen.has(key)) continue;
      seen.add(key);
      const href = source.type === "url" ? safeLink(source.url) : null;
      list.appendChild(h("li", null, href ? link(href, label) : label));
    }
    return list.children.length ? list : null;
  }

  feedbackButtons(item) {
    const row = h("div", {class: "fck-actions"});
    const buttons = [];
    for (const [kind, label] of [["positive", this.t.good], ["negative", this.t.bad]]) {
      const button = h("button", {
        type: "button",
        "data-ck": `feedback-${kind}`,
        "aria-label": label,
        "aria-pressed": "false",
        title: label,
      }, icon("up", kind === "negative"));
      button.addEventListener("click", () => this.feedback(item, kind, button, buttons));
      buttons.push(button);
    }
    return append(row, buttons);
  }

  async feedback(item, kind, button, buttons) {
    if (!this.thread) return;
    for (const other of buttons) other.setAttribute("aria-pressed", String(other === button));
    try {
      await this.api.json("items.feedback", {thread_id: this.thread.id, item_ids: [item.id], kind});
      button.setAttribute("data-sent", "true");
      this.progress.textContent = this.t.thanks;
    } catch (error) {
      button.setAttribute("aria-pressed", "false");
      this.showError(error, error.retryable ? () => this.feedback(item, kind, button, buttons) : null);
    }
  }

  workflow(workflow) {
    const tasks = (workflow.tasks || []).filter(Boolean);
    const summary = workflow.summary && (workflow.summary.title || (workflow.summary.duration != null ? `${workflow.summary.duration}s` : ""));
    const details = h("details", {class: "fck-box fck-tool", open: workflow.expanded === true},
      h("summary", {text: summary || tasks.map((task) => task.title).filter(Boolean).join(" · ") || "…"}));
    for (const task of tasks) {
      const body = h("div", {style: "margin-top:.35rem"});
      if (task.title) body.appendChild(h("strong", {text: task.title}));
      if (task.content) body.appendChild(h("div", {class: "fck-text"}, renderMarkdown(task.content)));
      details.appendChild(body);
    }
    return details;
  }

  // --- widgets and their actions ---

  widget(item) {
    const renderer = new WidgetRenderer(item.id, (action, control, form) => this.widgetAction(item.id, action, control, form), this.t);
    return renderer.render(item.widget || {});
  }

  async widgetAction(itemId, action, control, form) {
    if (!action || typeof action.type !== "string") return;
    const root = control && control.closest("[data-ck='widget']");
    const base = action.payload;
    const values = form ? formValues(form) : {};
    const payload = Object.keys(values).length
      ? Object.assign({}, base && typeof base === "object" && !Array.isArray(base) ? base : base == null ? {} : {value: base}, values)
      : base ?? null;
    const sent = {type: action.type, payload};
    if (action.handler === "client") {
      this.emit("chatkit:action", {action: sent, itemId});
      if (typeof this.options.onAction === "function") this.options.onAction(sent, itemId);
      return;
    }
    if (!this.thread) return;
    const loading = action.loadingBehavior || "auto";
    const busy = loading === "none" ? [] : loading === "self" ? [control] : root ? Array.from(root.querySelectorAll("button, input, select, textarea, [role='button']")) : [control];
    const setBusy = (on) => {
      for (const el of busy) {
        if (!el) continue;
        if ("disabled" in el && el.tagName !== "LI") el.disabled = on;
        else el.setAttribute("aria-disabled", String(on));
      }
      if (root && loading !== "none") {
        if (on) root.setAttribute("aria-busy", "true");
        else root.removeAttribute("aria-busy");
      }
    };
    const params = {thread_id: this.thread.id, item_id: itemId, action: sent};
    if (action.streaming === false) {
      setBusy(true);
      try {
        const answer = await this.api.json("threads.sync_custom_action", params);
        if (answer && answer.updated_item) this.addItem(answer.updated_item);
        else setBusy(false);
      } catch (error) {
        setBusy(false);
        this.showError(error, null);
      }
      return;
    }
    if (this.controller) {
      this.progress.textContent = this.t.busy;
      return;
    }
    setBusy(true);
    await this.runStream("threads.custom_action", params);
    if (root && root.isConnected) setBusy(false);
  }

  // --- client tools and structured input ---

  async runClientTool(call) {
    if (!this.thread) return;
    const tools = this.options.clientTools || {};
    const handler = Object.prototype.hasOwnProperty.call(tools, call.name) ? tools[call.name] : null;
    this.progress.textContent = format(this.t.runningTool, {name: call.name});
    let result;
    try {
      result = handler ? await handler(call.arguments || {}) : {error: `Unknown client tool: ${call.name}`};
    } catch (error) {
      result = {error: String((error && error.message) || error)};
    }
    if (result === undefined) result = null;
    const entry = this.items.get(call.id);
    if (entry) {
      entry.item = Object.assign({}, entry.item, {status: "completed", output: result});
      const fresh = this.renderItem(entry);
      entry.el.replaceWith(fresh);
      entry.el = fresh;
    }
    this.progress.textContent = "";
    await this.runStream("threads.add_client_tool_output", {thread_id: this.thread.id, result});
  }

  structuredInput(item) {
    const pending = item.status === "pending";
    const form = h("form", {class: "fck-widget fck-w-form", "data-ck": "structured-input"});
    for (const input of item.inputs || []) {
      const answer = input.answer;
      if (!pending) {
        const given = answer && !answer.skipped && answer.values && answer.values.length ? answer.values.join(", ") : this.t.skipped;
        form.appendChild(h("div", null, [h("div", {class: "fck-w-label", text: input.question || ""}), h("div", {text: given})]));
        continue;
      }
      if (input.type === "multiple_choice") {
        const fieldset = h("fieldset", {class: "fck-w-fieldset"}, h("legend", {text: input.question || ""}));
        for (const option of input.options || []) {
          fieldset.appendChild(h("label", {class: "fck-w-check"}, [
            h("input", {type: input.multiple ? "checkbox" : "radio", name: input.id, value: option.value, "data-group": input.multiple ? "true" : null}),
            option.label || option.value,
          ]));
        }
        form.appendChild(fieldset);
      } else {
        const id = nextId("fck-q");
        form.appendChild(h("div", {class: "fck-w-field"}, [
          h("label", {class: "fck-w-label", for: id, text: input.question || ""}),
          input.description ? h("div", {class: "fck-muted", text: input.description}) : null,
          h("textarea", {id, name: input.id, rows: "2", class: "fck-w-input"}),
        ]));
      }
    }
    if (!pending) return form;
    const skip = h("button", {type: "button", text: this.t.skip});
    form.appendChild(h("div", {class: "fck-w-buttons"}, [skip, h("button", {type: "submit", class: "fck-primary", text: this.t.submit})]));
    const submit = (status) => {
      const values = formValues(form);
      const answers = {};
      if (status === "answered") {
        for (const input of item.inputs || []) {
          const value = values[input.id];
          const list = Array.isArray(value) ? value : value ? [String(value)] : [];
          answers[input.id] = list.length && list.some((v) => v.trim()) ? {values: list} : {values: [], skipped: true};
        }
      }
      for (const el of form.querySelectorAll("button, input, textarea")) el.disabled = true;
      this.runStream("threads.add_structured_input", {thread_id: item.thread_id || this.thread.id, item_id: item.id, input: {status, answers}});
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.controller) submit("answered");
    });
    skip.addEventListener("click", () => {
      if (!this.controller) submit("skipped");
    });
    return form;
  }

  // --- errors and notices ---

  clearErrors() {
    for (const el of this.log.querySelectorAll("[data-ck='error']")) el.remove();
  }

  showNotice(event) {
    const box = h("div", {class: `fck-box fck-notice-${["info", "warning", "danger"].includes(event.level) ? event.level : "info"}`, "data-ck": "notice", role: "status"});
    if (event.title) box.appendChild(h("strong", {text: event.title}));
    box.appendChild(h("div", {class: "fck-text"}, renderMarkdown(event.message || "")));
    this.removeEmpty();
    this.log.appendChild(box);
    this.scrollToEnd();
  }

  showStreamError(event) {
    const lastUser = Array.from(this.items.values()).filter((entry) => entry.item.type === "user_message").pop();
    const retry = event.allow_retry && lastUser && this.thread ? () => this.retryAfter(lastUser.item.id) : null;
    const message = event.code === "custom" && event.message ? event.message : event.message || this.t.error;
    this.showError(new ChatKitError(message, {code: event.code || "stream.error"}), retry);
  }

  async retryAfter(itemId) {
    // the server deletes everything after the message: so does the log
    let after = false;
    for (const [id, entry] of Array.from(this.items.entries())) {
      if (after) {
        entry.el && entry.el.remove();
        this.items.delete(id);
      }
      if (id === itemId) after = true;
    }
    for (const el of this.log.querySelectorAll("[data-ck='notice']")) el.remove();
    await this.runStream("threads.retry_after_item", {thread_id: this.thread.id, item_id: itemId});
  }

  showError(error, retry) {
    const box = h("div", {class: "fck-box fck-error", "data-ck": "error", role: "alert"}, h("span", {text: (error && error.message) || this.t.error}));
    if (error && error.code) box.setAttribute("data-code", error.code);
    if (retry) {
      box.appendChild(h("button", {
        type: "button",
        "data-ck": "retry",
        text: this.t.retry,
        onclick: () => {
          box.remove();
          retry();
        },
      }));
    }
    box.appendChild(h("button", {type: "button", "aria-label": this.t.dismiss, text: "×", onclick: () => box.remove()}));
    this.removeEmpty();
    this.log.appendChild(box);
    this.scrollToEnd(true);
    this.emit("chatkit:error", {error});
    if (typeof this.options.onError === "function") this.options.onError(error);
  }

  destroy() {
    this.stop();
    for (const entry of this.pending) if (entry.preview) URL.revokeObjectURL(entry.preview);
    this.el.removeEventListener("dragover", this.onDragOver);
    this.el.removeEventListener("dragleave", this.onDragLeave);
    this.el.removeEventListener("drop", this.onDrop);
    this.el.textContent = "";
    this.el.classList.remove("fck-root", "fck-open", "fck-dragging");
    this.el.removeAttribute("aria-busy");
    this.items.clear();
  }
}
