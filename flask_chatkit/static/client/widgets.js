/*
 * flask_chatkit reference client, part 4 of 10 (order and scope: see base.js).
 *
 * Widget items: WidgetRenderer turns a widget's JSON (Card, Row, Col, Text,
 * Button, ListView, Form and its fields...) into DOM with checked styles;
 * formValues() reads a form's fields; updateComponent() applies a streamed
 * update to a widget's JSON.
 */

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
