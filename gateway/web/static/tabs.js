// The two login tabs (QR code, password) of the desktop page and the browser sign-in page: the
// selected tab's panel is shown, and the QR tab gets a fresh code when it is selected.

import { $, show } from "./common.js";

export class LoginTabs {
  /** qr: the QrLogin, password: the PasswordForm. */
  constructor({ qr, password }) {
    this.qr = qr;
    this.password = password;
    $("tab-qr").addEventListener("click", () => this.select("qr"));
    $("tab-password").addEventListener("click", () => this.select("password"));
  }

  get active() {
    return $("tab-qr").getAttribute("aria-selected") === "true" ? "qr" : "password";
  }

  select(name, { force = false } = {}) {
    if (!force && name === this.active && (name !== "qr" || this.qr.current)) return;
    $("tab-qr").setAttribute("aria-selected", String(name === "qr"));
    $("tab-password").setAttribute("aria-selected", String(name === "password"));
    show($("panel-qr"), name === "qr");
    show($("panel-password"), name === "password");
    if (name === "qr") this.qr.refresh();
    else {
      this.qr.stop();
      this.password.focus();
    }
  }
}
