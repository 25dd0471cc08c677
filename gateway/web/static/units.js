// After the real-name login: the units the person does tax work for (units service at /units).
// One unit: straight to it. Several: pick one (select, then 【进入】; double-click and Enter work too).
// Authorized staff enter directly; everyone else gives the unit's declaration password (captcha after
// a wrong one, locked after five). Where the page has the form (the desktop), "add a unit" links the
// person to a unit with its TIN and declaration password (the first unit link, POST
// /units/v1/units/link); with no unit yet the page opens at that form.
//
// The calls go through a `backend`: the desktop's (tokenBackend: the page holds the gateway access
// token and calls /units itself) or the sign-in page's (its server calls /units; see signin.js).
// backend.list() -> {units, person}; backend.enter(tin) and backend.verify(tin, fields) -> the entry's
// answer; backend.link(fields) (optional) -> the first link's answer.

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
    link: (fields) => api("POST", "/units/v1/units/link", { token: token(), json: fields }),
  };
}

export class UnitChooser {
  constructor({ onEntered, backend, onLogout }) {
    this.onEntered = onEntered;
    this.backend = backend;
    this.units = [];
    this.person = null; // {display_name}: masked
    this.linking = Boolean(backend.link && $("unit-link"));
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
    if (this.linking) {
      this.linkCaptcha = new Captcha(
        "link-captcha-row", "link-captcha-image", "link-captcha-answer", "link-captcha-refresh", "/units/v1/captcha",
      );
      $("unit-add").addEventListener("click", () => this.openLink());
      $("unit-link").addEventListener("submit", (event) => this.link(event));
      $("link-back").addEventListener("click", () => this.closeLink());
    } else if ($("unit-add")) {
      show($("unit-add"), false);
    }
    const help = $("declaration-help-toggle");
    if (help && !$("declaration-help-link")?.getAttribute("href")) show(help.parentElement, false);
    help?.addEventListener("click", () => {
      const open = help.getAttribute("aria-expanded") !== "true";
      help.setAttribute("aria-expanded", String(open));
      show($("declaration-help"), open);
    });
    if (onLogout) $("units-logout")?.addEventListener("click", onLogout);
  }

  async start() {
    this.reset();
    show($("units"), true);
    this.say("units_loading");
    const answer = await this.backend.list();
    if (answer.status === 404 && answer.body.code === "not_found") return this.onEntered(null); // no units service
    if (!answer.ok) return this.say(problemMessage(answer));
    this.units = answer.body.units;
    this.person = answer.body.person ?? null;
    this.say(null);
    if (this.units.length === 0) {
      if (this.linking) return this.openLink({ none: true });
      this.say("units_none");
      return this.onEntered(null);
    }
    this.drawList();
    if (this.units.length === 1) return this.choose(0);
    this.showList();
    this.select(0);
    $("unit-list").focus();
  }

  /** The list with its buttons (【进入】 for several units, "add a unit"). */
  showList() {
    show($("unit-list"), this.units.length > 0);
    if ($("units-pick-hint")) show($("units-pick-hint"), this.units.length > 1);
    if ($("unit-list-actions")) show($("unit-list-actions"), true);
    if ($("unit-enter")) show($("unit-enter"), this.units.length > 0);
  }

  hideList() {
    show($("unit-list"), false);
    if ($("units-pick-hint")) show($("units-pick-hint"), false);
    if ($("unit-list-actions")) show($("unit-list-actions"), false);
    if ($("unit-enter")) show($("unit-enter"), false);
  }

  // --- The first unit link ("add a unit") ---------------------------------------------------------

  openLink({ none = false } = {}) {
    this.chosen = null;
    clearInterval(this.lockTimer);
    this.hideList();
    show($("declaration"), false);
    this.captcha.hide();
    this.say(none ? "units_none_link" : null);
    $("link-message").textContent = "";
    show($("unit-link"), true);
    show($("link-back"), this.units.length > 0);
    $("link-tin").focus();
  }

  closeLink() {
    show($("unit-link"), false);
    this.linkCaptcha.hide();
    $("link-message").textContent = "";
    clearInterval(this.lockTimer);
    this.showList();
    $("unit-list").focus();
  }

  async link(event) {
    event.preventDefault();
    const tin = $("link-tin").value.trim().toUpperCase();
    const password = $("link-password").value;
    if (!/^[0-9A-Z]{18}$/.test(tin)) {
      $("link-message").textContent = t("unit_link_tin_invalid");
      return $("link-tin").focus();
    }
    if (!password) {
      $("link-message").textContent = t("unit_link_password_missing");
      return $("link-password").focus();
    }
    clearInterval(this.lockTimer);
    $("link-submit").disabled = true;
    const answer = await this.backend.link({ tin, declaration_password: password, ...this.linkCaptcha.take() });
    $("link-submit").disabled = false;
    $("link-password").value = "";
    if (answer.ok) {
      const listed = await this.backend.list();
      if (listed.ok) {
        this.units = listed.body.units;
        this.person = listed.body.person ?? this.person;
      }
      const unit = this.units.find((u) => u.tin === answer.body.unit.tin) ?? { tin, name: "" };
      show($("unit-link"), false);
      this.linkCaptcha.hide();
      $("link-tin").value = "";
      return this.entered(unit, answer.body);
    }
    const { status, body } = answer;
    if (status === 401 && body.code === "invalid_credentials") {
      $("link-message").textContent = t("unit_link_wrong", { attempts: body.attempts_left });
    } else if (status === 423) {
      this.showLock(body.retry_after ?? Number(answer.retryAfter ?? 0), "link-message");
    } else if (body.code === "invalid_tin") {
      $("link-message").textContent = t("unit_link_tin_invalid");
    } else {
      $("link-message").textContent = problemMessage(answer, "unit_locked_message");
    }
    if (body.captcha_required || body.code === "captcha_required" || body.code === "captcha_invalid" || this.linkCaptcha.active) {
      await this.linkCaptcha.load();
    }
    $(body.code === "invalid_tin" ? "link-tin" : "link-password").focus();
  }

  reset() {
    this.units = [];
    this.person = null;
    this.selected = -1;
    this.chosen = null;
    clearInterval(this.lockTimer);
    $("unit-list").replaceChildren();
    this.hideList();
    show($("declaration"), false);
    this.captcha.hide();
    if (this.linking) {
      show($("unit-link"), false);
      this.linkCaptcha.hide();
      $("link-message").textContent = "";
    }
    if ($("declaration-message")) $("declaration-message").textContent = "";
    this.say(null);
  }

  say(message, values = {}) {
    this.message = message ? [message, values] : null;
    this.redraw();
  }

  redraw() {
    const [key, values] = this.message ?? ["", {}];
    $("units-message").textContent = key ? t(key, values) : "";
    if ($("units-who")) $("units-who").textContent = this.person ? t("logged_in_as", { name: this.person.display_name }) : "";
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
    this.selected = index; // back at the list, this one is still selected
    this.chosen = { tin: unit.tin, name: unit.name };
    if (unit.authorized) {
      this.say("unit_entering");
      const answer = await this.backend.enter(unit.tin);
      if (answer.ok) return this.entered(unit, answer.body);
      if (answer.body.code !== "declaration_password_required") return this.say("unit_refused", { detail: problemMessage(answer) });
    }
    this.say(null);
    this.hideList();
    show($("declaration"), true);
    // Back to the list: from several units, or (where units can be added) from the only one.
    show($("declaration-back"), this.units.length > 1 || this.linking);
    this.redraw();
    if (unit.captcha_required) await this.captcha.load();
    $("declaration-password").focus();
  }

  back() {
    this.chosen = null;
    clearInterval(this.lockTimer);
    show($("declaration"), false);
    this.showList();
    if (this.selected >= 0) this.select(this.selected);
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

  showLock(seconds, target = "declaration-message") {
    const until = Date.now() + seconds * 1000;
    const draw = () => {
      const left = (until - Date.now()) / 1000;
      $(target).textContent = left > 0 ? t("unit_locked_message", { time: duration(left) }) : "";
      if (left <= 0) clearInterval(this.lockTimer);
    };
    draw();
    this.lockTimer = setInterval(draw, 1000);
  }

  entered(unit, answer) {
    clearInterval(this.lockTimer);
    this.onEntered({
      tin: unit.tin,
      name: unit.name,
      role: answer.unit?.role ?? unit.role,
      via: answer.unit?.via,
      token: answer.unit_token,
      person: this.person,
      answer,
    });
  }
}
