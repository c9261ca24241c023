/*
 * flask_chatkit reference client, part 8 of 10 (order and scope: see base.js).
 *
 * The chat view's composer (methods of Chat, see chat.js): the state of its
 * controls, attachments (chips, uploads, removal) and sending a user message.
 */

// --- the chat: composer --------------------------------------------------------------

Object.assign(Chat.prototype, {
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
  },

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
  },

  chip(entry) {
    const name = (entry.attachment && entry.attachment.name) || entry.file.name || this.t.attachment;
    const preview = entry.attachment && entry.attachment.preview_url ? safeImageSrc(entry.attachment.preview_url) : entry.preview;
    const state = entry.state === "uploading" ? this.t.uploading : entry.state === "error" ? entry.error : "";
    return h("div", {class: "fck-chip", "data-ck": "attachment", "data-state": entry.state, "data-id": entry.attachment && entry.attachment.id}, [
      preview ? h("img", {src: preview, alt: name}) : null,
      h("span", {title: name, text: state ? `${name} · ${state}` : name}),
      h("button", {type: "button", "aria-label": `${this.t.remove} ${name}`, text: "×", onclick: () => this.removeAttachment(entry)}),
    ]);
  },

  refreshChip(entry) {
    if (!entry.el.isConnected) return;
    const fresh = this.chip(entry);
    entry.el.replaceWith(fresh);
    entry.el = fresh;
    this.updateControls();
  },

  removeAttachment(entry) {
    this.pending = this.pending.filter((other) => other !== entry);
    entry.el.remove();
    if (entry.preview) URL.revokeObjectURL(entry.preview);
    if (entry.attachment) {
      this.api.json("attachments.delete", {attachment_id: entry.attachment.id}).catch((error) => this.emit("chatkit:error", {error}));
    }
    this.updateControls();
    this.textarea.focus();
  },

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
  },
});
