/*
 * flask_chatkit reference client, part 6 of 10 (order and scope: see base.js).
 *
 * The chat view's threads (methods of Chat, see chat.js): the thread list in
 * the sidebar, the open thread and its status, opening a thread or a new one,
 * and the open thread's id kept in sessionStorage for reloads.
 */

// --- the chat: threads ---------------------------------------------------------------

Object.assign(Chat.prototype, {
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
  },

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
  },

  threadEntry(id) {
    return Array.from(this.threadList.querySelectorAll("[data-ck='thread']")).find((el) => el.getAttribute("data-thread-id") === id) || null;
  },

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
  },

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
  },

  applyStatus() {
    const status = (this.thread && this.thread.status) || {type: "active"};
    const blocked = status.type === "locked" || status.type === "closed";
    this.banner.hidden = !blocked;
    this.banner.textContent = blocked ? status.reason || this.t[status.type] : "";
    this.composer.hidden = status.type === "closed";
    this.textarea.disabled = blocked;
    this.updateControls();
  },

  remembered() {
    try {
      return global.sessionStorage.getItem(this.storageKey);
    } catch (_) {
      return null;
    }
  },

  remember(id) {
    try {
      if (id) global.sessionStorage.setItem(this.storageKey, id);
      else global.sessionStorage.removeItem(this.storageKey);
    } catch (_) {
      // storage may be disabled: only the reload convenience is lost
    }
  },

  // --- opening threads ---

  newThread() {
    if (this.controller) this.stop();
    this.setSidebar(false);
    this.clearLog();
    this.setThread(null);
    this.showEmpty();
    this.textarea.focus();
  },

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
  },

  clearLog() {
    this.items.clear();
    this.log.textContent = "";
    this.progress.textContent = "";
  },

  showEmpty() {
    if (!this.log.querySelector(".fck-item, .fck-box")) {
      this.log.appendChild(h("p", {class: "fck-empty", "data-ck": "empty", text: this.options.greeting || this.t.empty}));
    }
  },
});
