/*
 * flask_chatkit reference client, part 9 of 10 (order and scope: see base.js).
 *
 * The chat view's streams (methods of Chat, see chat.js): running a streaming
 * request, or re-attaching to a running turn, and applying its events; item
 * updates rendered once a frame; Stop and the answers it marks (kept in
 * localStorage); client tools; stream errors and retry.
 */

// --- the chat: streams ---------------------------------------------------------------

const STOPPED_KEPT = 500; // stopped answers remembered per API url

Object.assign(Chat.prototype, {
  // --- streams ---

  /** Follow the thread's running turn, started elsewhere, as if this page had started it. */
  reattach(id) {
    return this.runStream(null, null, {open: (signal) => this.api.watch(id, signal)});
  },

  /**
   * Run one streaming request and apply its events. ``onFailure`` runs when the
   * request failed before its stream started. Resolves to whether it started.
   */
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
  },

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
  },

  // --- item updates ---

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
  },

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
  },

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
  },

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
  },

  // --- Stop ---

  /** Stop reading the answer here (the server goes on or stops, as it is set up). */
  stop() {
    if (this.controller) this.controller.abort();
  },

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
  },

  /** Mark the turn's unfinished answers as stopped (and remember it for reloads). */
  markStopped() {
    for (const id of this.turn.assistant) {
      const entry = this.items.get(id);
      if (entry && !entry.done) {
        entry.stopped = true;
        this.rememberStopped(id);
      }
    }
  },

  /** The ids of answers the user stopped (newest last), as kept in localStorage. */
  stoppedIds() {
    try {
      const ids = JSON.parse(global.localStorage.getItem(this.stoppedKey) || "[]");
      return Array.isArray(ids) ? ids : [];
    } catch (_) {
      return [];
    }
  },

  rememberStopped(id) {
    const ids = this.stoppedIds().filter((other) => other !== id);
    ids.push(id);
    try {
      global.localStorage.setItem(this.stoppedKey, JSON.stringify(ids.slice(-STOPPED_KEPT)));
    } catch (_) {
      // storage may be disabled: the mark lasts until the page is left
    }
  },

  // --- client tools ---

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
  },

  // --- stream errors ---

  showStreamError(event) {
    const lastUser = Array.from(this.items.values()).filter((entry) => entry.item.type === "user_message").pop();
    const retry = event.allow_retry && lastUser && this.thread ? () => this.retryAfter(lastUser.item.id) : null;
    const message = event.code === "custom" && event.message ? event.message : event.message || this.t.error;
    this.showError(new ChatKitError(message, {code: event.code || "stream.error"}), retry);
  },

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
  },
});
