// The two login tabs (password, QR code) of the desktop page and the browser sign-in page, at the top
// right of the card: the selected tab's panel is shown, and the QR tab gets a fresh code when it is
// selected. The tabs follow the ARIA tabs pattern: one Tab stop, the arrow keys (and Home/End) move
// between them. Also the panels' links: 【手机端下载】 opens the app's download QR code.

import { $, show } from "./common.js";

const NAMES = ["password", "qr"];

export class LoginTabs {
  /** qr: the QrLogin, password: the PasswordForm. */
  constructor({ qr, password }) {
    this.qr = qr;
    this.password = password;
    for (const name of NAMES) {
      const tab = $(`tab-${name}`);
      tab.addEventListener("click", () => this.select(name));
      tab.addEventListener("keydown", (event) => this.keydown(event, name));
    }
    installAppDownload();
  }

  get active() {
    return $("tab-qr").getAttribute("aria-selected") === "true" ? "qr" : "password";
  }

  keydown(event, name) {
    const index = NAMES.indexOf(name);
    const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: NAMES.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = NAMES[(next + NAMES.length) % NAMES.length];
    this.select(target, { focusTab: true });
  }

  select(name, { force = false, focusTab = false } = {}) {
    if (focusTab) $(`tab-${name}`).focus();
    if (!force && name === this.active && (name !== "qr" || this.qr.current)) return;
    for (const other of NAMES) {
      const tab = $(`tab-${other}`);
      tab.setAttribute("aria-selected", String(other === name));
      tab.tabIndex = other === name ? 0 : -1;
      show($(`panel-${other}`), other === name);
    }
    if (name === "qr") this.qr.refresh();
    else {
      this.qr.stop();
      if (!focusTab) this.password.focus();
    }
  }
}

/** 【手机端下载】: shows (and hides) the QR code of the app's download address. */
function installAppDownload() {
  const toggle = $("app-download-toggle");
  const box = $("app-download");
  if (!toggle || !box) return;
  if (box.dataset.available === "false") {
    show(toggle.parentElement, false);
    return;
  }
  toggle.addEventListener("click", () => {
    const open = box.hidden;
    const image = $("app-download-image");
    if (open && !image.getAttribute("src")) image.src = image.dataset.src;
    show(box, open);
    toggle.setAttribute("aria-expanded", String(open));
  });
}
