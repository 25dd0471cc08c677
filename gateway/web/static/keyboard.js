// The on-screen password keyboard ("软键盘"): shown by default under a password field, its keys in a
// new random order every time it is shown (a camera or a click logger learns nothing from where the
// pointer went), with letter, digit and symbol pages, shift and backspace. 【关闭】 or the keyboard icon
// beside the field closes it, the icon opens it again; typing on the real keyboard works either way.
//
// Every key is a <button> with a label a screen reader reads ("大写 A", "感叹号"), reachable by Tab
// and pressed with Enter or Space; Escape closes the keyboard. A pointer press types into the field
// and leaves the caret there.
//
//     import { attachKeyboard } from "/web/keyboard.js";
//     attachKeyboard(passwordInput);                // shown at once
//     attachKeyboard(passwordInput, { open: false }); // closed until the icon is pressed
//
// The characters are printable ASCII only: what the password rules accept.

import { onLanguageChange, t } from "./i18n.js";

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const DIGITS = "0123456789";
const SYMBOLS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const PAGES = ["letters", "digits", "symbols"];
const SVG = "http://www.w3.org/2000/svg";
let made = 0;

/** The symbols' spoken names: i18n keys kb_sym_<code point>. */
function keyLabel(char) {
  if (LETTERS.includes(char)) return t("kb_lower", { key: char });
  if (LETTERS.toUpperCase().includes(char)) return t("kb_upper", { key: char });
  if (DIGITS.includes(char)) return char;
  return t(`kb_sym_${char.codePointAt(0)}`);
}

/** A fresh random order (Fisher-Yates over crypto randomness). */
function shuffled(chars) {
  const out = [...chars];
  const random = new Uint32Array(out.length);
  crypto.getRandomValues(random);
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = random[i] % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function keyboardIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 16");
  svg.setAttribute("width", "24");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const shapes = [["rect", { x: 0.75, y: 0.75, width: 22.5, height: 14.5, rx: 2, fill: "none", stroke: "currentColor", "stroke-width": 1.5 }]];
  for (const [x, y] of [[4, 4], [8, 4], [12, 4], [16, 4], [20, 4], [4, 8], [8, 8], [12, 8], [16, 8], [20, 8]]) {
    shapes.push(["rect", { x: x - 1, y: y - 1, width: 2, height: 2, fill: "currentColor" }]);
  }
  shapes.push(["rect", { x: 6, y: 11, width: 12, height: 2, fill: "currentColor" }]);
  for (const [name, attributes] of shapes) {
    const shape = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) shape.setAttribute(key, String(value));
    svg.append(shape);
  }
  return svg;
}

function button(className, onPress) {
  const key = document.createElement("button");
  key.type = "button";
  key.className = className;
  // A pointer press keeps the focus (and the caret) in the field; Tab and Enter/Space still work.
  key.addEventListener("mousedown", (event) => event.preventDefault());
  key.addEventListener("click", onPress);
  return key;
}

class OnScreenKeyboard {
  constructor(input, { open = true } = {}) {
    this.input = input;
    this.page = "letters";
    this.shift = false;
    this.layout = {}; // page -> its characters in this display's order
    made += 1;
    const id = `${input.id || "password"}-keyboard-${made}`;

    // The field and its icon: the icon sits at the field's right edge.
    const field = input.closest("label") ?? input;
    this.field = document.createElement("div");
    this.field.className = "kb-field";
    field.replaceWith(this.field);
    this.field.append(field);
    this.toggle = button("kb-toggle", () => (this.isOpen ? this.close() : this.open()));
    this.toggle.setAttribute("aria-controls", id);
    this.toggle.append(keyboardIcon());
    this.field.append(this.toggle);
    input.classList.add("kb-input");

    this.panel = document.createElement("div");
    this.panel.className = "keyboard";
    this.panel.id = id;
    this.panel.setAttribute("role", "group");
    this.field.after(this.panel);

    this.pageButtons = {};
    const bar = document.createElement("div");
    bar.className = "kb-bar";
    for (const page of PAGES) {
      const pick = button("kb-page", () => this.showPage(page));
      pick.dataset.page = page;
      this.pageButtons[page] = pick;
      bar.append(pick);
    }
    this.closeButton = button("kb-close", () => this.close({ focusField: true }));
    this.closeButton.dataset.action = "close";
    bar.append(this.closeButton);
    this.keys = document.createElement("div");
    this.keys.className = "kb-keys";
    this.panel.append(bar, this.keys);
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close({ focusField: true });
      }
    });

    onLanguageChange(() => this.redraw());
    if (open) this.open();
    else this.close();
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  /** Show the keyboard, its keys in a new order. */
  open() {
    this.layout = { letters: shuffled(LETTERS), digits: shuffled(DIGITS), symbols: shuffled(SYMBOLS) };
    this.page = "letters";
    this.shift = false;
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.draw();
  }

  close({ focusField = false } = {}) {
    const hadFocus = this.panel.contains(document.activeElement);
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    this.redraw();
    if (focusField || hadFocus) this.input.focus();
  }

  showPage(page) {
    this.page = page;
    this.draw();
  }

  type(char) {
    const input = this.input;
    if (input.maxLength > 0 && input.value.length >= input.maxLength) return;
    let start = input.value.length;
    let end = start;
    try {
      if (input.selectionStart !== null) [start, end] = [input.selectionStart, input.selectionEnd];
    } catch {
      // a field type without a selection: add at the end
    }
    input.setRangeText(char, start, end, "end");
    input.dispatchEvent(new Event("input", { bubbles: true }));
    // A pointer press leaves the focus where it was: bring it to the field typed into (a key pressed
    // with Enter keeps it, so Tab goes on from that key).
    if (!this.panel.contains(document.activeElement)) input.focus();
    if (this.shift) {
      this.shift = false;
      this.draw();
    }
  }

  backspace() {
    const input = this.input;
    let start = input.value.length;
    let end = start;
    try {
      if (input.selectionStart !== null) [start, end] = [input.selectionStart, input.selectionEnd];
    } catch {
      // as in type()
    }
    if (start === end && start > 0) start -= 1;
    input.setRangeText("", start, end, "end");
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  draw() {
    const focused = document.activeElement;
    const refocus = this.keys.contains(focused) ? focused.dataset.action || focused.dataset.slot : null;
    this.keys.replaceChildren();
    this.keys.dataset.page = this.page;
    this.layout[this.page].forEach((base, slot) => {
      const char = this.shift && this.page === "letters" ? base.toUpperCase() : base;
      const key = button("kb-key", () => this.type(char));
      key.dataset.key = char;
      key.dataset.slot = String(slot);
      key.textContent = char;
      key.setAttribute("aria-label", keyLabel(char));
      this.keys.append(key);
    });
    if (this.page === "letters") {
      this.shiftButton = button("kb-key kb-wide kb-shift", () => {
        this.shift = !this.shift;
        this.draw();
      });
      this.shiftButton.dataset.action = "shift";
      this.shiftButton.setAttribute("aria-pressed", String(this.shift));
      this.keys.append(this.shiftButton);
    }
    const back = button("kb-key kb-wide kb-backspace", () => this.backspace());
    back.dataset.action = "backspace";
    this.keys.append(back);
    for (const page of PAGES) this.pageButtons[page].setAttribute("aria-pressed", String(page === this.page));
    this.redraw();
    if (refocus !== null && refocus !== undefined) {
      const again = this.keys.querySelector(`[data-action="${refocus}"]`) ?? this.keys.querySelector(`[data-slot="${refocus}"]`);
      again?.focus();
    }
  }

  /** The texts of the current language. */
  redraw() {
    this.panel.setAttribute("aria-label", t("kb_title"));
    this.toggle.setAttribute("aria-label", t(this.isOpen ? "kb_hide" : "kb_show"));
    this.toggle.title = t(this.isOpen ? "kb_hide" : "kb_show");
    this.pageButtons.letters.textContent = "abc";
    this.pageButtons.letters.setAttribute("aria-label", `abc ${t("kb_page_letters")}`);
    this.pageButtons.digits.textContent = "123";
    this.pageButtons.digits.setAttribute("aria-label", `123 ${t("kb_page_digits")}`);
    this.pageButtons.symbols.textContent = "#+=";
    this.pageButtons.symbols.setAttribute("aria-label", `#+= ${t("kb_page_symbols")}`);
    this.closeButton.textContent = t("kb_close");
    for (const key of this.keys.querySelectorAll("[data-key]")) key.setAttribute("aria-label", keyLabel(key.dataset.key));
    const shift = this.keys.querySelector('[data-action="shift"]');
    if (shift) {
      shift.textContent = t("kb_shift");
      shift.setAttribute("aria-label", t("kb_shift_label"));
    }
    const back = this.keys.querySelector('[data-action="backspace"]');
    if (back) {
      back.textContent = t("kb_backspace");
      back.setAttribute("aria-label", t("kb_backspace_label"));
    }
  }
}

/**
 * Give `input` (a password field) the on-screen keyboard. options.open: shown at once (default true).
 * Returns the keyboard: open(), close(), isOpen, panel (its element), toggle (the icon button).
 */
export function attachKeyboard(input, options = {}) {
  return new OnScreenKeyboard(input, options);
}
