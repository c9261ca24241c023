/*
 * flask_chatkit reference client: a small, dependency-free ChatKit client.
 *
 * No build step. It speaks the ChatKit protocol (JSON requests, Server-Sent
 * Events answers) to a flask_chatkit backend, or any server that follows the
 * protocol, and renders a complete chat UI into an element:
 *
 *   const chat = FlaskChatKit.mount(document.getElementById("chat"), {
 *     apiUrl: "/chatkit",
 *     uploadStrategy: {type: "direct", uploadUrl: "/chatkit/upload"},
 *     metadata: () => ({page: {url: location.href, title: document.title}}),
 *   });
 *
 * Its source is this folder (flask_chatkit/static/client/), read in this order:
 *   base.js      UI strings, the style element, DOM helpers, URL checks, icons
 *   markdown.js  Markdown (a safe subset) rendered as DOM nodes
 *   api.js       HTTP: JSON requests, SSE streams, uploads, errors
 *   widgets.js   widget items rendered from their JSON
 *   chat.js      the chat view, class Chat: layout, events, errors, notices
 *   threads.js   Chat: the thread list, opening threads, their status
 *   items.js     Chat: items rendered and kept in the log, widget actions
 *   composer.js  Chat: the composer, attachments and uploads, send
 *   streams.js   Chat: streams and their events, re-attach, Stop, client tools
 *   mount.js     the public API: FlaskChatKit.mount and friends
 *   chatkit-client.css  the styles
 * The blueprint serves them as one script, <prefix>/static/chatkit-client.js:
 * the parts joined in that order inside one function scope (so they share
 * their names without making globals), after the styles as `const CSS`
 * (flask_chatkit/reference_client.py). A part only declares things (the four
 * after chat.js add methods to Chat.prototype); the last one, mount.js, runs
 * when the script loads.
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

// CSS, the text of chatkit-client.css, is declared ahead of the parts by the
// blueprint: one style element, no <link> to wait for before the first render
const STYLE_ID = "flask-chatkit-style";

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
