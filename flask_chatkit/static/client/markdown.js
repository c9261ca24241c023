/*
 * flask_chatkit reference client, part 2 of 10 (order and scope: see base.js).
 *
 * Markdown, a safe subset, rendered as DOM nodes (never innerHTML):
 * renderMarkdown() for assistant text, notices, tasks and Markdown widgets.
 * Links are made only for http(s) URLs (base.js's safeLink).
 */

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
