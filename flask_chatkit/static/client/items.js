/*
 * flask_chatkit reference client, part 7 of 10 (order and scope: see base.js).
 *
 * The chat view's items (methods of Chat, see chat.js): adding, replacing and
 * removing them in the log, and rendering each type: messages, sources,
 * feedback, workflows, widgets and their actions, structured input.
 */

// --- the chat: items -----------------------------------------------------------------

const FOLLOW_DISTANCE = 80; // px from the bottom within which the log keeps following

Object.assign(Chat.prototype, {
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
  },

  removeItem(id) {
    const entry = this.items.get(id);
    if (entry && entry.el) entry.el.remove();
    this.items.delete(id);
  },

  removeEmpty() {
    for (const el of this.log.querySelectorAll("[data-ck='empty']")) el.remove();
  },

  scrollToEnd(force) {
    const log = this.log;
    const near = log.scrollHeight - log.scrollTop - log.clientHeight < FOLLOW_DISTANCE + 200;
    if (force || near) log.scrollTop = log.scrollHeight;
  },

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
  },

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
  },

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
  },

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
  },

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
  },

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
  },

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
  },

  // --- widgets and their actions ---

  widget(item) {
    const renderer = new WidgetRenderer(item.id, (action, control, form) => this.widgetAction(item.id, action, control, form), this.t);
    return renderer.render(item.widget || {});
  },

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
  },

  // --- structured input ---

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
  },
});
