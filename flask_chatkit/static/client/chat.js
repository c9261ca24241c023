/*
 * flask_chatkit reference client, part 5 of 10 (order and scope: see base.js).
 *
 * The chat view, class Chat: its state, layout and DOM events, the custom
 * events it dispatches, errors and notices, destroy. The next parts add its
 * other methods to Chat.prototype, one concern each: threads.js (the thread
 * list, opening threads), items.js (rendering items), composer.js (input,
 * attachments, send) and streams.js (streams and their events, Stop).
 */

// --- the chat -------------------------------------------------------------------------

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
