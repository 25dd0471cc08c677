// After the real-name login: the units the person does tax work for (units service at /units).
// One unit: straight to it. Several: pick one (double-click, or select and press Enter). Authorized
// staff enter directly; everyone else gives the unit's declaration password (captcha after a wrong
// one, locked after five).
//
// The calls go through a `backend`: the desktop's (tokenBackend: the page holds the gateway access
// token and calls /units itself) or the sign-in page's (its server calls /units; see signin.js).
// backend.list() -> {units}; backend.enter(tin) and backend.verify(tin, fields) -> the entry's answer.

import { $, Captcha, api, duration, problemMessage, show } from "./common.js";
import { t } from "./i18n.js";

const STATUS_KEYS = { authorized: "unit_authorized", password: "unit_needs_password", locked: "unit_locked" };

function unitStatus(unit) {
  if (unit.authorized) return "authorized";
  return unit.locked ? "locked" : "password";
}

/** The desktop's backend: the units service called from the page, with the session's access token. */
export function tokenBackend(session) {
  const token = () => session.tokens?.access_token;
  const path = (tin, action) => `/units/v1/units/${encodeURIComponent(tin)}/${action}`;
  return {
    list: () => api("GET", "/units/v1/units", { token: token() }),
    enter: (tin) => api("POST", path(tin, "enter"), { token: token() }),
    verify: (tin, fields) => api("POST", path(tin, "verify"), { token: token(), json: fields }),
  };
}

export class UnitChooser {
  constructor({ onEntered, backend }) {
    this.onEntered = onEntered;
    this.backend = backend;
    this.units = [];
    this.selected = -1;
    this.chosen = null;
    this.message = null; // [key, values] or a plain string
    this.lockTimer = null;
    this.captcha = new Captcha(
      "unit-captcha-row", "unit-captcha-image", "unit-captcha-answer", "unit-captcha-refresh", "/units/v1/captcha",
    );
    const list = $("unit-list");
    list.addEventListener("keydown", (event) => this.onKey(event));
    list.addEventListener("click", (event) => this.select(this.indexOf(event)));
    list.addEventListener("dblclick", (event) => this.choose(this.indexOf(event)));
    $("declaration").addEventListener("submit", (event) => this.verify(event));
    $("declaration-back").addEventListener("click", () => this.back());
    $("unit-enter")?.addEventListener("click", () => this.choose(this.selected));
  }

  async start() {
    this.reset();
    show($("units"), true);
    this.say("units_loading");
    const answer = await this.backend.list();
    if (answer.status === 404 && answer.body.code === "not_found") return this.onEntered(null); // no units service
    if (!answer.ok) return this.say(problemMessage(answer));
    this.units = answer.body.units;
    this.say(null);
    if (this.units.length === 0) {
      this.say("units_none");
      return this.onEntered(null);
    }
    this.drawList();
    if (this.units.length === 1) return this.choose(0);
    this.select(0);
    if ($("unit-enter")) show($("unit-enter"), true);
    $("unit-list").focus();
  }

  reset() {
    this.units = [];
    this.selected = -1;
    this.chosen = null;
    clearInterval(this.lockTimer);
    $("unit-list").replaceChildren();
    show($("unit-list"), true);
    if ($("unit-enter")) show($("unit-enter"), false);
    show($("declaration"), false);
    this.captcha.hide();
    this.say(null);
  }

  say(message, values = {}) {
    this.message = message ? [message, values] : null;
    this.redraw();
  }

  redraw() {
    const [key, values] = this.message ?? ["", {}];
    $("units-message").textContent = key ? t(key, values) : "";
    if (this.units.length) this.drawList();
    if (this.chosen) $("unit-chosen").textContent = t("unit_chosen", this.chosen);
  }

  drawList() {
    const list = $("unit-list");
    list.replaceChildren(
      ...this.units.map((unit, index) => {
        const item = document.createElement("li");
        item.role = "option";
        item.id = `unit-${index}`;
        item.dataset.index = String(index);
        item.dataset.tin = unit.tin;
        item.setAttribute("aria-selected", String(index === this.selected));
        const name = document.createElement("span");
        name.className = "unit-name";
        name.textContent = unit.name;
        const tin = document.createElement("span");
        tin.className = "unit-tin";
        tin.textContent = unit.tin;
        const status = document.createElement("span");
        status.className = `badge ${unitStatus(unit)}`;
        status.textContent = t(STATUS_KEYS[unitStatus(unit)]);
        item.append(name, tin, status);
        return item;
      }),
    );
    if (this.selected >= 0) list.setAttribute("aria-activedescendant", `unit-${this.selected}`);
  }

  indexOf(event) {
    const item = event.target.closest("li[data-index]");
    return item ? Number(item.dataset.index) : -1;
  }

  select(index) {
    if (index < 0 || index >= this.units.length) return;
    this.selected = index;
    // Only the marks change (rebuilding the items would break a double-click in progress).
    for (const item of $("unit-list").children) {
      item.setAttribute("aria-selected", String(Number(item.dataset.index) === index));
    }
    $("unit-list").setAttribute("aria-activedescendant", `unit-${index}`);
    $(`unit-${index}`).scrollIntoView({ block: "nearest" });
  }

  onKey(event) {
    if (event.key === "ArrowDown") this.select(Math.min(this.units.length - 1, this.selected + 1));
    else if (event.key === "ArrowUp") this.select(Math.max(0, this.selected - 1));
    else if (event.key === "Enter") this.choose(this.selected);
    else return;
    event.preventDefault();
  }

  async choose(index) {
    const unit = this.units[index];
    if (!unit) return;
    this.chosen = { tin: unit.tin, name: unit.name };
    if (unit.authorized) {
      this.say("unit_entering");
      const answer = await this.backend.enter(unit.tin);
      if (answer.ok) return this.entered(unit, answer.body);
      if (answer.body.code !== "declaration_password_required") return this.say("unit_refused", { detail: problemMessage(answer) });
    }
    this.say(null);
    show($("unit-list"), this.units.length > 1);
    if ($("unit-enter")) show($("unit-enter"), false);
    show($("declaration"), true);
    show($("declaration-back"), this.units.length > 1);
    this.redraw();
    if (unit.captcha_required) await this.captcha.load();
    $("declaration-password").focus();
  }

  back() {
    this.chosen = null;
    clearInterval(this.lockTimer);
    show($("declaration"), false);
    show($("unit-list"), true);
    if ($("unit-enter")) show($("unit-enter"), true);
    $("declaration-message").textContent = "";
    this.captcha.hide();
    $("unit-list").focus();
  }

  async verify(event) {
    event.preventDefault();
    const password = $("declaration-password").value;
    if (!password || !this.chosen) return;
    clearInterval(this.lockTimer);
    $("declaration-submit").disabled = true;
    const tin = this.chosen.tin;
    const answer = await this.backend.verify(tin, { declaration_password: password, ...this.captcha.take() });
    $("declaration-submit").disabled = false;
    $("declaration-password").value = "";
    const unit = this.units.find((u) => u.tin === tin);
    if (answer.ok) return this.entered(unit, answer.body);
    const { status, body } = answer;
    if (status === 401 && body.code === "invalid_credentials") {
      $("declaration-message").textContent = t("unit_wrong_password", { attempts: body.attempts_left });
    } else if (status === 423) {
      this.showLock(body.retry_after ?? Number(answer.retryAfter ?? 0));
    } else {
      $("declaration-message").textContent = problemMessage(answer, "unit_locked_message");
    }
    if (body.captcha_required || status === 400 || this.captcha.active) await this.captcha.load();
    $("declaration-password").focus();
  }

  showLock(seconds) {
    const until = Date.now() + seconds * 1000;
    const draw = () => {
      const left = (until - Date.now()) / 1000;
      $("declaration-message").textContent = left > 0 ? t("unit_locked_message", { time: duration(left) }) : "";
      if (left <= 0) clearInterval(this.lockTimer);
    };
    draw();
    this.lockTimer = setInterval(draw, 1000);
  }

  entered(unit, answer) {
    clearInterval(this.lockTimer);
    this.onEntered({ tin: unit.tin, name: unit.name, via: answer.unit?.via, token: answer.unit_token, answer });
  }
}
