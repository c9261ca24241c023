/*
 * flask_chatkit reference client: a small, dependency-free ChatKit client.
 *
 * One file, no build step. It speaks the ChatKit protocol (JSON requests,
 * Server-Sent Events answers) to a flask_chatkit backend, or any server that
 * follows the protocol, and renders a complete chat UI into an element:
 *
 *   const chat = FlaskChatKit.mount(document.getElementById("chat"), {
 *     apiUrl: "/chatkit",
 *     uploadStrategy: {type: "direct", uploadUrl: "/chatkit/upload"},
 *     metadata: () => ({page: {url: location.href, title: document.title}}),
 *   });
 *
 * Safety: text from the server (model output, titles, errors) only ever
 * reaches the page through textContent or attributes checked here (links and
 * image sources with allowed schemes); no innerHTML with server data.
 *
 * Events dispatched on the mount element (they bubble):
 *   chatkit:effect        {name, data}       a client_effect from the stream
 *   chatkit:action        {action, itemId}   a widget action with handler "client"
 *   chatkit:thread-change {threadId}         another thread was opened (or null)
 *   chatkit:error         {error}            a request or stream failed
 */
(function (global) {
  "use strict";

  // --- UI strings ---------------------------------------------------------------

  const STRINGS = {
    en: {
      title: "Chat",
      threads: "Conversations",
      newThread: "New chat",
      untitled: "Untitled chat",
      showThreads: "Show conversations",
      moreThreads: "Show more",
      noThreads: "No conversations yet.",
      empty: "Start a conversation by sending a message.",
      message: "Message",
      placeholder: "Message…",
      send: "Send",
      stop: "Stop",
      attach: "Attach files",
      remove: "Remove",
      uploading: "Uploading…",
      uploadFailed: "Upload failed",
      retry: "Retry",
      dismiss: "Dismiss",
      you: "You",
      assistant: "Assistant",
      good: "Good response",
      bad: "Bad response",
      thanks: "Thanks for the feedback.",
      sources: "Sources",
      error: "Something went wrong.",
      networkError: "The server could not be reached.",
      stopped: "Stopped.",
      submit: "Submit",
      skip: "Skip",
      skipped: "(skipped)",
      runningTool: "Running {name}…",
      toolDone: "Used {name}",
      locked: "This conversation is locked.",
      closed: "This conversation is closed.",
      loading: "Loading…",
      showAll: "Show all",
      attachment: "Attachment",
      busy: "Wait for the answer to finish first.",
    },
  };

  function stringsFor(locale, overrides) {
    // English built in; other languages come through the ``strings`` option
    const lang = String(locale || "en").toLowerCase().split(/[-_]/)[0];
    return Object.assign({}, STRINGS.en, STRINGS[lang] || {}, overrides || {});
  }

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => (key in values ? String(values[key]) : ""));
  }

  // --- styles (injected once, scoped under .fck-root) -----------------------------

  const STYLE_ID = "flask-chatkit-style";
  const CSS = `
.fck-root{--fck-bg:#fff;--fck-fg:#1f2328;--fck-muted:#656d76;--fck-border:#d8dee4;
 --fck-soft:#f6f8fa;--fck-accent:#0b57d0;--fck-accent-fg:#fff;--fck-user:#e8f0fe;
 --fck-danger:#b42318;--fck-danger-bg:#fef3f2;--fck-warn-bg:#fffaeb;--fck-info-bg:#eff8ff;
 --fck-radius:12px;--fck-focus:0 0 0 3px rgba(11,87,208,.45);
 position:relative;display:flex;box-sizing:border-box;height:100%;min-height:26rem;
 container-type:inline-size;container-name:fck;overflow:hidden;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 font-size:15px;line-height:1.5;color:var(--fck-fg);background:var(--fck-bg);
 border:1px solid var(--fck-border);border-radius:var(--fck-radius)}
@media (prefers-color-scheme:dark){.fck-root{--fck-bg:#16181c;--fck-fg:#e6e8eb;--fck-muted:#9aa4af;
 --fck-border:#30363d;--fck-soft:#1f2329;--fck-accent:#8ab4f8;--fck-accent-fg:#0b1a33;--fck-user:#1d2b44;
 --fck-danger:#ff8a80;--fck-danger-bg:#3a1d1b;--fck-warn-bg:#3a3115;--fck-info-bg:#15283d}}
.fck-root *,.fck-root *::before,.fck-root *::after{box-sizing:border-box}
.fck-root [hidden]{display:none!important}
.fck-root button,.fck-root input,.fck-root select,.fck-root textarea{font:inherit;color:inherit}
.fck-root button{cursor:pointer;border:1px solid var(--fck-border);background:var(--fck-bg);
 border-radius:8px;padding:.35rem .75rem;line-height:1.3}
.fck-root button:hover:not(:disabled){background:var(--fck-soft)}
.fck-root button:disabled{opacity:.55;cursor:default}
.fck-icon{width:1.15em;height:1.15em;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round;vertical-align:middle}
.fck-root :focus-visible{outline:none;box-shadow:var(--fck-focus)}
.fck-root a{color:var(--fck-accent)}
.fck-root .fck-sr{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;
 overflow:hidden;clip:rect(0,0,0,0);white-space:nowrap;border:0}
.fck-root .fck-primary{background:var(--fck-accent);border-color:var(--fck-accent);color:var(--fck-accent-fg)}
.fck-root .fck-primary:hover:not(:disabled){background:var(--fck-accent);filter:brightness(1.1)}
.fck-sidebar{width:16rem;flex:none;display:flex;flex-direction:column;gap:.5rem;padding:.75rem;
 border-right:1px solid var(--fck-border);background:var(--fck-soft);overflow:auto}
.fck-sidebar h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--fck-muted);margin:.5rem .25rem 0}
.fck-threads{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:2px}
.fck-threads button{width:100%;text-align:left;border:0;background:transparent;padding:.45rem .6rem;
 overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.fck-threads button[aria-current="true"]{background:var(--fck-bg);font-weight:600;box-shadow:inset 3px 0 0 var(--fck-accent)}
.fck-muted{color:var(--fck-muted);font-size:.875rem}
.fck-main{flex:1;min-width:0;display:flex;flex-direction:column}
.fck-header{display:flex;align-items:center;gap:.5rem;padding:.6rem 1rem;border-bottom:1px solid var(--fck-border)}
.fck-header h2{font-size:1rem;margin:0;flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.fck-toggle{display:none}
.fck-log{flex:1;min-height:0;overflow-y:auto;padding:1rem;display:flex;flex-direction:column;gap:.85rem}
.fck-empty{margin:auto;color:var(--fck-muted);text-align:center;padding:2rem 1rem}
.fck-item{display:flex;flex-direction:column;max-width:100%}
.fck-user{align-items:flex-end}
.fck-bubble{max-width:min(42rem,85%);padding:.55rem .85rem;border-radius:var(--fck-radius);overflow-wrap:anywhere}
.fck-user .fck-bubble{background:var(--fck-user);border-bottom-right-radius:4px;white-space:pre-wrap}
.fck-assistant .fck-bubble{max-width:min(46rem,100%);padding-left:0;padding-right:0}
.fck-text>:first-child{margin-top:0}.fck-text>:last-child{margin-bottom:0}
.fck-text p,.fck-text ul,.fck-text ol,.fck-text pre,.fck-text blockquote{margin:.5em 0}
.fck-text h1,.fck-text h2,.fck-text h3,.fck-text h4,.fck-text h5,.fck-text h6{margin:.8em 0 .3em;line-height:1.3}
.fck-text h1{font-size:1.35em}.fck-text h2{font-size:1.2em}.fck-text h3{font-size:1.08em}.fck-text h4,.fck-text h5,.fck-text h6{font-size:1em}
.fck-text ul,.fck-text ol{padding-left:1.4em}
.fck-text code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em;
 background:var(--fck-soft);border:1px solid var(--fck-border);border-radius:4px;padding:0 .25em}
.fck-text pre{background:var(--fck-soft);border:1px solid var(--fck-border);border-radius:8px;padding:.6rem .8rem;overflow-x:auto}
.fck-text pre code{border:0;padding:0;background:none}
.fck-text blockquote{border-left:3px solid var(--fck-border);padding-left:.75em;color:var(--fck-muted)}
.fck-text hr{border:0;border-top:1px solid var(--fck-border)}
.fck-typing::after{content:"…";color:var(--fck-muted)}
.fck-stopped{margin:.25rem 0 0;font-size:.85em;color:var(--fck-muted);font-style:italic}
.fck-sources{margin:.4rem 0 0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:.35rem;font-size:.85rem}
.fck-sources li{border:1px solid var(--fck-border);border-radius:999px;padding:.1rem .6rem}
.fck-actions{display:flex;gap:.25rem;margin-top:.25rem}
.fck-actions button{border:0;background:transparent;padding:.2rem .45rem;color:var(--fck-muted)}
.fck-actions button[aria-pressed="true"]{color:var(--fck-accent);background:var(--fck-soft)}
.fck-att-list{display:flex;flex-wrap:wrap;gap:.4rem;margin-bottom:.3rem;justify-content:flex-end}
.fck-att-list img{max-width:12rem;max-height:9rem;border-radius:8px;border:1px solid var(--fck-border);display:block}
.fck-file{border:1px solid var(--fck-border);border-radius:8px;padding:.25rem .6rem;font-size:.875rem;background:var(--fck-bg)}
.fck-tag{display:inline-block;background:var(--fck-soft);border:1px solid var(--fck-border);border-radius:6px;padding:0 .35em;margin:0 .15em}
.fck-quote{font-size:.85rem;color:var(--fck-muted);border-left:3px solid var(--fck-border);padding-left:.5rem;margin-bottom:.25rem}
.fck-box{border:1px solid var(--fck-border);border-radius:10px;padding:.6rem .8rem;max-width:46rem}
.fck-error{background:var(--fck-danger-bg);border-color:var(--fck-danger);color:var(--fck-danger);display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}
.fck-error span{flex:1;min-width:10rem}
.fck-notice-info{background:var(--fck-info-bg)}.fck-notice-warning{background:var(--fck-warn-bg)}
.fck-notice-danger{background:var(--fck-danger-bg);border-color:var(--fck-danger)}
.fck-tool{color:var(--fck-muted);font-size:.875rem}
.fck-progress{padding:0 1rem;min-height:1.5rem;color:var(--fck-muted);font-size:.875rem}
.fck-progress:not(:empty)::before{content:"";display:inline-block;width:.55rem;height:.55rem;margin-right:.45rem;
 border-radius:50%;background:var(--fck-accent);animation:fck-pulse 1s ease-in-out infinite}
@keyframes fck-pulse{50%{opacity:.25}}
@media (prefers-reduced-motion:reduce){.fck-progress::before{animation:none!important}}
.fck-banner{margin:0 1rem .5rem;padding:.4rem .7rem;border-radius:8px;background:var(--fck-warn-bg);font-size:.875rem}
.fck-composer{border-top:1px solid var(--fck-border);padding:.6rem .75rem .75rem;display:flex;flex-direction:column;gap:.4rem}
.fck-chips{display:flex;flex-wrap:wrap;gap:.4rem}
.fck-chip{display:flex;align-items:center;gap:.4rem;border:1px solid var(--fck-border);border-radius:10px;
 padding:.25rem .3rem .25rem .4rem;font-size:.85rem;max-width:16rem;background:var(--fck-soft)}
.fck-chip img{width:2.5rem;height:2.5rem;object-fit:cover;border-radius:6px;display:block}
.fck-chip span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.fck-chip[data-state="error"]{border-color:var(--fck-danger);color:var(--fck-danger)}
.fck-chip button{border:0;background:transparent;padding:0 .35rem;font-size:1.1rem;line-height:1}
.fck-row{display:flex;align-items:flex-end;gap:.4rem}
.fck-row textarea{flex:1;min-width:0;resize:none;min-height:2.6rem;max-height:12rem;padding:.55rem .7rem;
 border:1px solid var(--fck-border);border-radius:10px;background:var(--fck-bg)}
.fck-attach{display:inline-flex;align-items:center;justify-content:center;width:2.6rem;height:2.6rem;flex:none;
 border:1px solid var(--fck-border);border-radius:10px;cursor:pointer;font-size:1.2rem}
.fck-attach:hover{background:var(--fck-soft)}.fck-attach:focus-within{box-shadow:var(--fck-focus)}
.fck-row>button{height:2.6rem;flex:none}
.fck-dragging .fck-composer{outline:2px dashed var(--fck-accent);outline-offset:-4px}
.fck-widget{border:1px solid var(--fck-border);border-radius:var(--fck-radius);padding:.85rem 1rem;
 max-width:min(34rem,100%);display:flex;flex-direction:column;gap:.6rem;background:var(--fck-bg)}
.fck-widget[aria-busy="true"]{opacity:.7}
.fck-w-listview{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:.25rem}
.fck-w-li{display:flex;align-items:center;gap:.5rem;padding:.4rem .5rem;border-radius:8px}
.fck-w-li[role="button"]{cursor:pointer}.fck-w-li[role="button"]:hover{background:var(--fck-soft)}
.fck-w-title{font-weight:600;font-size:1.08rem;margin:0}
.fck-w-caption{color:var(--fck-muted);font-size:.85rem;margin:0}
.fck-w-text{margin:0}
.fck-w-badge{display:inline-block;font-size:.75rem;font-weight:600;border-radius:999px;padding:.05rem .55rem;
 background:var(--fck-soft);border:1px solid var(--fck-border);align-self:flex-start}
.fck-w-badge[data-color="success"]{background:#ecfdf3;color:#067647}.fck-w-badge[data-color="danger"]{background:var(--fck-danger-bg);color:var(--fck-danger)}
.fck-w-badge[data-color="warning"]{background:var(--fck-warn-bg)}.fck-w-badge[data-color="info"]{background:var(--fck-info-bg)}
.fck-w-divider{border:0;border-top:1px solid var(--fck-border);margin:.25rem 0;width:100%}
.fck-w-spacer{flex:1}
.fck-w-img{max-width:100%;height:auto;border-radius:8px;display:block}
.fck-w-form{display:flex;flex-direction:column;gap:.6rem;margin:0}
.fck-w-field{display:flex;flex-direction:column;gap:.2rem}
.fck-w-label{font-size:.875rem;font-weight:500}
.fck-root .fck-w-input{border:1px solid var(--fck-border);border-radius:8px;padding:.4rem .55rem;background:var(--fck-bg);min-width:0;width:100%}
.fck-w-check{display:flex;align-items:center;gap:.45rem;font-weight:400}
.fck-w-fieldset{border:0;padding:0;margin:0;display:flex;flex-direction:column;gap:.3rem}
.fck-w-fieldset legend{font-weight:500;padding:0;margin-bottom:.2rem}
.fck-w-buttons{display:flex;flex-wrap:wrap;gap:.5rem;justify-content:flex-end}
.fck-w-status{color:var(--fck-muted);font-size:.85rem}
.fck-w-danger{color:var(--fck-danger)}
@container fck (max-width:640px){
 .fck-toggle{display:inline-flex}
 .fck-sidebar{position:absolute;inset:0 auto 0 0;z-index:5;width:min(18rem,85%);box-shadow:0 8px 24px rgba(0,0,0,.18);
  transform:translateX(-105%);transition:transform .15s ease;visibility:hidden}
 .fck-root.fck-open .fck-sidebar{transform:none;visibility:visible}
 .fck-log{padding:.75rem}
 .fck-bubble{max-width:92%}
 .fck-header{padding:.5rem .75rem}
}
`;

  function injectStyle(doc) {
    if (doc.getElementById(STYLE_ID)) return;
    const style = doc.createElement("style");
    style.id = STYLE_ID;
    style.textContent = CSS;
    doc.head.appendChild(style);
  }

  // --- DOM helpers --------------------------------------------------------------

  /**
   * Create an element. props: "class", "text" (textContent), "on<event>" handlers,
   * "hidden"/"disabled"/... booleans, anything else as an attribute (never HTML).
   */
  function h(tag, props, children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2).toLowerCase(), value);
      } else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    if (children === undefined || children === null || children === false) return el;
    if (Array.isArray(children)) {
      for (const child of children) append(el, child);
    } else if (children instanceof Node) {
      el.appendChild(children);
    } else {
      el.appendChild(document.createTextNode(String(children)));
    }
    return el;
  }

  let uid = 0;
  function nextId(prefix) {
    uid += 1;
    return `${prefix}-${uid}`;
  }

  /** An absolute http(s) URL, or null: the only links the client renders. */
  function safeLink(url) {
    if (typeof url !== "string" || !/^https?:\/\//i.test(url.trim())) return null;
    try {
      const parsed = new URL(url.trim());
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  /** An image source: http(s), a raster data: URL, or a relative URL; else null. */
  function safeImageSrc(src) {
    if (typeof src !== "string" || !src.trim()) return null;
    const value = src.trim();
    if (/^data:image\/(png|jpe?g|gif|webp|avif|bmp);base64,[a-z0-9+/=\s]+$/i.test(value)) return value;
    if (/^[a-z][a-z0-9+.-]*:/i.test(value)) return safeLink(value);
    try {
      const parsed = new URL(value, document.baseURI);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  // simple line icons (emoji fonts are not everywhere)
  const ICONS = {
    up: "M7 10v11H3V10h4zm0 0 4-8a2.2 2.2 0 0 1 2.5 2.4L13 9h6a2 2 0 0 1 2 2.4l-1.5 7.8A2.2 2.2 0 0 1 17.4 21H7",
    clip: "M20 11.5l-8.2 8.2a5 5 0 0 1-7.1-7.1l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.5 8.5a1.7 1.7 0 0 1-2.4-2.4l7.8-7.8",
    menu: "M4 6h16M4 12h16M4 18h16",
  };

  function icon(name, flip) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "fck-icon");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICONS[name]);
    if (flip) path.setAttribute("transform", "rotate(180 12 12)");
    svg.appendChild(path);
    return svg;
  }

  function link(href, text) {
    return h("a", {href, target: "_blank", rel: "noopener noreferrer"}, text);
  }

  // --- Markdown (a safe subset, rendered as DOM nodes) ----------------------------

  const INLINE = new RegExp(
    [
      "(`+)([^`][\\s\\S]*?)\\1(?!`)", // 1,2 code span
      "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3 bold
      "__(?=\\S)([\\s\\S]*?\\S)__", // 4 bold
      "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*", // 5 italic (single character handled below)
      "\\*([^\\s*])\\*", // 6 italic, one character
      "_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?!\\w)", // 7 italic
      "\\[([^\\]\\n]+)\\]\\(\\s*<?([^\\s()<>]+(?:\\([^\\s()]*\\))?)>?(?:\\s+\"[^\"]*\")?\\s*\\)", // 8,9 link
      "(https?:\\/\\/[^\\s<>\"“”‘’«»]*[^\\s<>\"“”‘’«».,:;'!?)\\]])", // 10 bare URL
      "~~(?=\\S)([\\s\\S]*?\\S)~~", // 11 strikethrough
      "\\\\([\\\\`*_[\\]()#+\\-.!~>])", // 12 backslash escape: the character itself
    ].join("|"),
    "g"
  );

  /** Render inline markdown of *text* into *parent*, as text nodes and elements. */
  function renderInline(text, parent) {
    const pattern = new RegExp(INLINE); // its own lastIndex: this function recurses
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      // _italic_ only at a word boundary (snake_case stays as it is)
      if (match[7] !== undefined && match.index > 0 && /\w/.test(text[match.index - 1])) {
        pattern.lastIndex = match.index + 1;
        continue;
      }
      appendText(parent, text.slice(last, match.index));
      last = pattern.lastIndex;
      if (match[2] !== undefined) {
        parent.appendChild(h("code", {text: match[2].replace(/^ (.*) $/, "$1")}));
      } else if (match[3] !== undefined || match[4] !== undefined) {
        renderInline(match[3] ?? match[4], parent.appendChild(h("strong")));
      } else if (match[5] !== undefined || match[6] !== undefined || match[7] !== undefined) {
        renderInline(match[5] ?? match[6] ?? match[7], parent.appendChild(h("em")));
      } else if (match[8] !== undefined) {
        const href = safeLink(match[9]);
        if (href) renderInline(match[8], parent.appendChild(link(href)));
        else appendText(parent, match[0]); // not http(s): shown as written
      } else if (match[10] !== undefined) {
        const href = safeLink(match[10]);
        parent.appendChild(href ? link(href, match[10]) : document.createTextNode(match[10]));
      } else if (match[11] !== undefined) {
        renderInline(match[11], parent.appendChild(h("del")));
      } else if (match[12] !== undefined) {
        appendText(parent, match[12]);
      }
    }
    appendText(parent, text.slice(last));
    return parent;
  }

  function appendText(parent, text) {
    if (text) parent.appendChild(document.createTextNode(text));
  }

  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

  /**
   * Render *source* as markdown: paragraphs, headings, lists, fenced and
   * indented code, block quotes, rules, and inline styles/links. Returns a
   * DocumentFragment; every piece of text goes in through text nodes.
   */
  function renderMarkdown(source) {
    const fragment = document.createDocumentFragment();
    const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
    renderBlocks(lines, fragment);
    return fragment;
  }

  function renderBlocks(lines, parent) {
    let i = 0;
    let paragraph = [];
    const flush = () => {
      if (!paragraph.length) return;
      const p = h("p");
      paragraph.forEach((line, index) => {
        if (index) p.appendChild(h("br"));
        renderInline(line.trim(), p);
      });
      parent.appendChild(p);
      paragraph = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/);
      if (fence) {
        flush();
        const body = [];
        i += 1;
        // an unclosed fence (still streaming) runs to the end
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1;
        const code = h("code", {text: body.join("\n")});
        if (fence[2]) code.setAttribute("data-lang", fence[2]);
        parent.appendChild(h("pre", null, code));
        continue;
      }
      if (!line.trim()) {
        flush();
        i += 1;
        continue;
      }
      const heading = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
      if (heading) {
        flush();
        parent.appendChild(renderInline(heading[2], h(`h${heading[1].length}`)));
        i += 1;
        continue;
      }
      if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        parent.appendChild(h("hr"));
        i += 1;
        continue;
      }
      if (/^\s{0,3}>/.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && /^\s{0,3}>/.test(lines[i])) {
          quoted.push(lines[i].replace(/^\s{0,3}>\s?/, ""));
          i += 1;
        }
        renderBlocks(quoted, parent.appendChild(h("blockquote")));
        continue;
      }
      if (LIST_ITEM.test(line) && (!paragraph.length || /^\s*([-*+]|1[.)])\s/.test(line))) {
        flush();
        i = renderList(lines, i, parent);
        continue;
      }
      if (/^( {4}|\t)/.test(line) && !paragraph.length) {
        const body = [];
        while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || !lines[i].trim())) {
          body.push(lines[i].replace(/^( {4}|\t)/, ""));
          i += 1;
        }
        while (body.length && !body[body.length - 1].trim()) body.pop();
        parent.appendChild(h("pre", null, h("code", {text: body.join("\n")})));
        continue;
      }
      paragraph.push(line);
      i += 1;
    }
    flush();
  }

  /** A (possibly nested) list starting at lines[start]; returns the next line index. */
  function renderList(lines, start, parent) {
    const first = lines[start].match(LIST_ITEM);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const list = h(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) list.setAttribute("start", parseInt(first[2], 10));
    let i = start;
    while (i < lines.length) {
      const match = lines[i].match(LIST_ITEM);
      if (!match || match[1].length < indent || /\d/.test(match[2]) !== ordered) break;
      if (match[1].length > indent) break; // handled as a nested list below
      const body = [match[3]];
      i += 1;
      // continuation lines and nested content: indented more than the marker
      while (i < lines.length) {
        const next = lines[i];
        const nested = next.match(LIST_ITEM);
        if (nested && nested[1].length <= indent) break;
        if (!next.trim()) {
          const after = lines[i + 1];
          if (after === undefined || !/^\s+/.test(after) || (after.match(LIST_ITEM) || [, ""])[1].length <= indent) break;
        } else if (!nested && !/^\s/.test(next)) {
          break;
        }
        body.push(next.slice(Math.min(next.search(/\S|$/), indent + 2)));
        i += 1;
      }
      const li = h("li");
      if (body.length === 1) renderInline(body[0], li);
      else renderBlocks(body, li);
      // a one-paragraph item renders without its <p> wrapper
      if (li.childNodes.length === 1 && li.firstChild.nodeName === "P") {
        const p = li.firstChild;
        while (p.firstChild) li.insertBefore(p.firstChild, p);
        p.remove();
      }
      list.appendChild(li);
      while (i < lines.length && !lines[i].trim() && (lines[i + 1] || "").match(LIST_ITEM)) i += 1;
    }
    parent.appendChild(list);
    return i;
  }

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

  // --- widgets ------------------------------------------------------------------------

  const SPACING = /^\d+(\.\d+)?(px|rem|em|%)$/;
  const COLOR = /^(#[0-9a-f]{3,8}|[a-z]+|(rgb|hsl)a?\([\d\s.,%/]+\))$/i;

  function spacing(value) {
    if (typeof value === "number" && isFinite(value)) return `${value * 4}px`;
    return typeof value === "string" && SPACING.test(value) ? value : null;
  }

  function applyBox(el, props) {
    const gap = spacing(props.gap);
    if (gap) el.style.gap = gap;
    const padding = spacing(props.padding);
    if (padding) el.style.padding = padding;
    const align = {start: "flex-start", end: "flex-end", center: "center", stretch: "stretch", baseline: "baseline"};
    if (align[props.align]) el.style.alignItems = align[props.align];
    const justify = Object.assign({between: "space-between", around: "space-around", evenly: "space-evenly"}, align);
    if (justify[props.justify]) el.style.justifyContent = justify[props.justify];
    if (props.wrap === "wrap" || props.wrap === true) el.style.flexWrap = "wrap";
    if (typeof props.flex === "number" || (typeof props.flex === "string" && /^[\d.\s]+$/.test(props.flex))) {
      el.style.flex = String(props.flex);
    }
    const background = typeof props.background === "string" ? props.background : null;
    if (background && COLOR.test(background)) el.style.background = background;
  }

  function textStyle(el, props) {
    if (props.weight === "bold" || props.weight === "semibold") el.style.fontWeight = props.weight === "bold" ? "700" : "600";
    if (props.weight === "medium") el.style.fontWeight = "500";
    if (props.italic) el.style.fontStyle = "italic";
    if (props.lineThrough) el.style.textDecoration = "line-through";
    if (["start", "center", "end"].includes(props.textAlign)) el.style.textAlign = props.textAlign;
    const sizes = {xs: ".75rem", sm: ".875rem", md: "1rem", lg: "1.125rem", xl: "1.25rem", "2xl": "1.5rem", "3xl": "1.875rem"};
    if (sizes[props.size]) el.style.fontSize = sizes[props.size];
    if (typeof props.color === "string") {
      if (props.color === "secondary" || props.color === "tertiary") el.classList.add("fck-muted");
      else if (props.color === "danger" || props.color === "error") el.classList.add("fck-w-danger");
      else if (COLOR.test(props.color) && !/^(primary|prose|emphasis)$/.test(props.color)) el.style.color = props.color;
    }
    if (props.truncate) Object.assign(el.style, {overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap"});
  }

  /** Values of the named fields inside *container*, keyed by field name. */
  function formValues(container) {
    const values = {};
    if (!container) return values;
    for (const field of container.querySelectorAll("input[name], select[name], textarea[name]")) {
      const name = field.name;
      if (field.type === "checkbox") {
        if (field.hasAttribute("data-group")) {
          values[name] = values[name] || [];
          if (field.checked) values[name].push(field.value);
        } else values[name] = field.checked;
      } else if (field.type === "radio") {
        if (field.checked) values[name] = field.value;
        else if (!(name in values)) values[name] = null;
      } else if (field.multiple) {
        values[name] = Array.from(field.selectedOptions, (option) => option.value);
      } else {
        values[name] = field.value;
      }
    }
    return values;
  }

  /**
   * Renders one widget item's JSON. ``onAction(action, control, form)`` is called
   * for button clicks, form submits, list item clicks and change actions.
   */
  class WidgetRenderer {
    constructor(itemId, onAction, strings) {
      this.itemId = itemId;
      this.onAction = onAction;
      this.strings = strings;
      this.labelled = new Set();
    }

    render(root) {
      const el = this.node(root) || h("div");
      el.classList.add("fck-widget");
      el.setAttribute("data-ck", "widget");
      if (root && root.type) el.setAttribute("data-widget", root.type);
      // fields without a <Label> still get an accessible name
      for (const field of el.querySelectorAll("input, select, textarea")) {
        if (field.type === "radio" || field.type === "checkbox" || field.id && this.labelled.has(field.id)) continue;
        if (!field.getAttribute("aria-label")) field.setAttribute("aria-label", field.getAttribute("data-label") || field.name || this.strings.message);
      }
      return el;
    }

    fieldId(name) {
      return `fck-${this.itemId}-${String(name).replace(/[^\w-]/g, "_")}`;
    }

    children(list, parent) {
      for (const child of Array.isArray(list) ? list : []) {
        const el = this.node(child);
        if (el) parent.appendChild(el);
      }
      return parent;
    }

    node(c) {
      if (!c || typeof c !== "object") return null;
      const type = String(c.type || "");
      const method = this[`w${type.replace(/[^A-Za-z]/g, "")}`];
      let el;
      if (typeof method === "function") {
        el = method.call(this, c);
      } else if (typeof c.value === "string" || typeof c.text === "string" || typeof c.label === "string") {
        el = h("span", {class: "fck-w-text", text: c.value ?? c.text ?? c.label});
      } else if (Array.isArray(c.children)) {
        el = this.children(c.children, h("div", {class: "fck-w-col", style: "display:flex;flex-direction:column;gap:8px"}));
      } else {
        return null; // an unknown component without text: nothing
      }
      if (el && typeof c.id === "string") el.setAttribute("data-component-id", c.id);
      return el;
    }

    container(c, direction, tag) {
      const el = h(tag || "div", {style: `display:flex;flex-direction:${direction};gap:8px;min-width:0`});
      applyBox(el, c);
      return this.children(c.children, el);
    }

    wCard(c) {
      const body = h("div", {style: "display:flex;flex-direction:column;gap:10px"});
      if (c.status && typeof c.status.text === "string") body.appendChild(h("div", {class: "fck-w-status", text: c.status.text}));
      this.children(c.children, body);
      const buttons = [];
      for (const [key, primary] of [["cancel", false], ["confirm", true]]) {
        const spec = c[key];
        if (!spec || !spec.action) continue;
        const button = h("button", {
          type: primary && c.asForm ? "submit" : "button",
          class: primary ? "fck-primary" : null,
          "data-ck": `widget-${key}`,
          text: spec.label || (primary ? this.strings.submit : this.strings.dismiss),
        });
        if (!(primary && c.asForm)) {
          button.addEventListener("click", () => this.onAction(spec.action, button, button.closest("form")));
        }
        buttons.push(button);
      }
      if (buttons.length) body.appendChild(h("div", {class: "fck-w-buttons"}, buttons));
      applyBox(body, {padding: c.padding, background: c.background});
      if (!c.asForm) return body;
      const form = h("form", {class: "fck-w-form", novalidate: false}, body);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        if (c.confirm && c.confirm.action) this.onAction(c.confirm.action, event.submitter || form, form);
      });
      return form;
    }

    wBasic(c) { return this.container(c, c.direction === "row" ? "row" : "column"); }
    wRow(c) { return this.container(c, "row"); }
    wCol(c) { return this.container(c, "column"); }
    wBox(c) { return this.container(c, c.direction === "row" ? "row" : "column"); }
    wTransition(c) { return c.children ? this.container(c, "column") : this.node(c.child || c.content); }

    wForm(c) {
      const form = this.container(c, c.direction === "row" ? "row" : "column", "form");
      form.classList.add("fck-w-form");
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        if (c.onSubmitAction) this.onAction(c.onSubmitAction, event.submitter || form, form);
      });
      return form;
    }

    wText(c) {
      const el = h(c.editable ? "span" : "p", {class: "fck-w-text", text: c.value ?? ""});
      textStyle(el, c);
      return el;
    }

    wTitle(c) {
      const el = h("div", {class: "fck-w-title", role: "heading", "aria-level": "3", text: c.value ?? ""});
      textStyle(el, Object.assign({}, c, {size: c.size || undefined}));
      return el;
    }

    wCaption(c) {
      const el = h("p", {class: "fck-w-caption", text: c.value ?? ""});
      textStyle(el, c);
      return el;
    }

    wMarkdown(c) {
      const el = h("div", {class: "fck-text fck-w-markdown"});
      el.appendChild(renderMarkdown(c.value ?? ""));
      return el;
    }

    wBadge(c) {
      return h("span", {class: "fck-w-badge", "data-color": typeof c.color === "string" ? c.color : null, text: c.label ?? ""});
    }

    wDivider() { return h("hr", {class: "fck-w-divider"}); }
    wSpacer() { return h("div", {class: "fck-w-spacer", "aria-hidden": "true"}); }
    wIcon() { return null; } // icon names carry no text worth showing

    wImage(c) {
      const src = safeImageSrc(c.src);
      if (!src) return c.alt ? h("span", {class: "fck-muted", text: c.alt}) : null;
      const img = h("img", {class: "fck-w-img", src, alt: c.alt || "", loading: "lazy", referrerpolicy: "no-referrer"});
      for (const key of ["width", "height", "size"]) {
        const value = typeof c[key] === "number" ? `${c[key]}px` : typeof c[key] === "string" && SPACING.test(c[key]) ? c[key] : null;
        if (value && key === "size") Object.assign(img.style, {width: value, height: value, objectFit: c.fit || "cover"});
        else if (value) img.style[key] = value;
      }
      if (typeof c.radius === "string" && c.radius === "full") img.style.borderRadius = "50%";
      return img;
    }

    wButton(c) {
      const action = c.onClickAction;
      const button = h("button", {
        type: c.submit ? "submit" : "button",
        class: c.style === "primary" || c.color === "primary" || c.variant === "solid" ? "fck-primary" : null,
        disabled: c.disabled === true,
        text: c.label ?? "",
      });
      if (!c.label && c.iconStart) button.setAttribute("aria-label", String(c.iconStart));
      if (action && !c.submit) {
        button.addEventListener("click", () => this.onAction(action, button, button.closest("form")));
      }
      if (c.block) button.style.width = "100%";
      return button;
    }

    wListView(c) {
      const list = h("ul", {class: "fck-w-listview"});
      const items = Array.isArray(c.children) ? c.children : [];
      const limit = typeof c.limit === "number" && c.limit > 0 ? c.limit : items.length;
      items.forEach((child, index) => {
        const el = this.node(child);
        if (!el) return;
        if (index >= limit) el.hidden = true;
        list.appendChild(el);
      });
      if (items.length <= limit) return list;
      const more = h("button", {type: "button", text: this.strings.showAll});
      more.addEventListener("click", () => {
        for (const el of list.children) el.hidden = false;
        more.remove();
      });
      return h("div", {style: "display:flex;flex-direction:column;gap:6px"}, [list, more]);
    }

    wListViewItem(c) {
      const li = this.container(c, "row", "li");
      li.classList.add("fck-w-li");
      const action = c.onClickAction;
      if (action) {
        li.setAttribute("role", "button");
        li.tabIndex = 0;
        const fire = (event) => {
          if (event.target.closest("button, a, input, select, textarea") && event.target !== li) return;
          this.onAction(action, li, li.closest("form"));
        };
        li.addEventListener("click", fire);
        li.addEventListener("keydown", (event) => {
          if (event.target === li && (event.key === "Enter" || event.key === " ")) {
            event.preventDefault();
            fire(event);
          }
        });
      }
      return li;
    }

    wLabel(c) {
      const id = c.fieldName ? this.fieldId(c.fieldName) : null;
      if (id) this.labelled.add(id);
      const el = h("label", {class: "fck-w-label", for: id, text: c.value ?? ""});
      textStyle(el, c);
      return el;
    }

    field(c, el) {
      el.classList.add("fck-w-input");
      if (c.name) {
        el.name = c.name;
        el.id = this.fieldId(c.name);
      }
      if (c.required) el.required = true;
      if (c.disabled) el.disabled = true;
      if (c.placeholder) el.placeholder = c.placeholder;
      el.setAttribute("data-label", c.label || c.placeholder || c.name || "");
      if (c.onChangeAction) el.addEventListener("change", () => this.onAction(c.onChangeAction, el, el.closest("form")));
      return el;
    }

    wInput(c) {
      const types = ["text", "email", "number", "password", "tel", "url", "search", "date", "time"];
      const el = this.field(c, h("input", {type: types.includes(c.inputType) ? c.inputType : "text"}));
      if (c.defaultValue !== undefined) el.value = String(c.defaultValue);
      if (typeof c.pattern === "string") el.pattern = c.pattern;
      return el;
    }

    wDatePicker(c) {
      const el = this.field(c, h("input", {type: "date"}));
      if (typeof c.defaultValue === "string") el.value = c.defaultValue.slice(0, 10);
      return el;
    }

    wTextarea(c) {
      const el = this.field(c, h("textarea", {rows: typeof c.rows === "number" ? c.rows : 3}));
      if (c.defaultValue !== undefined) el.value = String(c.defaultValue);
      return el;
    }

    wSelect(c) {
      const el = this.field(c, h("select"));
      if (c.multiple) el.multiple = true;
      if (c.placeholder && !c.multiple) {
        el.appendChild(h("option", {value: "", disabled: c.required === true, text: c.placeholder}));
      }
      for (const option of Array.isArray(c.options) ? c.options : []) {
        if (!option || option.value === undefined) continue;
        el.appendChild(h("option", {value: String(option.value), disabled: option.disabled === true, text: option.label ?? option.value}));
      }
      if (c.defaultValue !== undefined && c.defaultValue !== null) {
        const wanted = Array.isArray(c.defaultValue) ? c.defaultValue.map(String) : [String(c.defaultValue)];
        for (const option of el.options) option.selected = wanted.includes(option.value);
      } else if (c.placeholder && !c.multiple) {
        el.value = "";
      }
      return el;
    }

    wCheckbox(c) {
      const input = h("input", {type: "checkbox", name: c.name || null, id: c.name ? this.fieldId(c.name) : null});
      input.checked = c.defaultChecked === true || c.defaultChecked === "true";
      if (c.disabled) input.disabled = true;
      if (c.required) input.required = true;
      if (c.onChangeAction) input.addEventListener("change", () => this.onAction(c.onChangeAction, input, input.closest("form")));
      return h("label", {class: "fck-w-check"}, [input, c.label ?? c.name ?? ""]);
    }

    wRadioGroup(c) {
      const group = h("div", {role: "radiogroup", class: "fck-w-fieldset", "aria-label": c.ariaLabel || c.label || c.name || null});
      if (c.direction === "row") group.style.flexDirection = "row";
      for (const option of Array.isArray(c.options) ? c.options : []) {
        const input = h("input", {type: "radio", name: c.name || null, value: String(option.value ?? "")});
        input.checked = c.defaultValue !== undefined && String(c.defaultValue) === String(option.value);
        if (c.disabled || option.disabled) input.disabled = true;
        if (c.required) input.required = true;
        if (c.onChangeAction) input.addEventListener("change", () => this.onAction(c.onChangeAction, input, input.closest("form")));
        group.appendChild(h("label", {class: "fck-w-check"}, [input, option.label ?? option.value ?? ""]));
      }
      return group;
    }
  }

  /** A copy of *widget* with *delta* appended to the value of the component *id*. */
  function updateComponent(widget, id, change) {
    const walk = (node) => {
      if (!node || typeof node !== "object") return node;
      if (node.id === id) return change(node);
      const copy = Array.isArray(node) ? node.slice() : Object.assign({}, node);
      for (const key of Object.keys(copy)) {
        if (copy[key] && typeof copy[key] === "object") copy[key] = walk(copy[key]);
      }
      return copy;
    };
    return walk(widget);
  }

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

  /** Mount a chat into *element*; returns a handle with a few methods. */
  function mount(element, options) {
    const chat = new Chat(element, options);
    return {
      destroy: () => chat.destroy(),
      send: (text) => chat.send(text),
      openThread: (id) => chat.openThread(id),
      newThread: () => chat.newThread(),
      stop: () => chat.stopAnswer(),
      get threadId() {
        return chat.thread ? chat.thread.id : null;
      },
    };
  }

  // beside chatkit-fetch.js's FlaskChatKit.fetch, if that came first
  global.FlaskChatKit = Object.assign(global.FlaskChatKit || {}, {mount, renderMarkdown, ChatKitError, version: "1"});
})(typeof window !== "undefined" ? window : this);
