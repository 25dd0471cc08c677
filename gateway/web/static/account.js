// What the registration, forgotten-password and change-password pages share: the rules as live
// hints, each refusal shown with its rule's own message beside its field (never clearing what was
// typed), the identity fields, and the rare-character picker (【录入生僻字】).

import { $, api, show } from "./common.js";
import { lang, t } from "./i18n.js";

// The tab's hand-over to the login page: the identifier to fill in there (removed when read). Not a
// URL: an ID number or a phone number is personal data, and URLs end up in history and logs.
export const LOGIN_IDENTIFIER_KEY = "qrgate.login-identifier";
// From the login page to /change-password: the identifier, after a hall temporary password (403
// password_change_required). Never the ticket or the password: the change page asks again.
export const PASSWORD_CHANGE_KEY = "qrgate.password-change";

/** Which field a refusal's code is about (the rest are shown at the form's foot). */
const FIELD_OF_CODE = {
  invalid_id_number: "id-number",
  invalid_name: "name",
  invalid_nationality: "nationality",
  registration_code_invalid: "registration-code",
  registration_code_exhausted: "registration-code",
  registration_code_expired: "registration-code",
  registration_code_used: "registration-code",
  login_name_length: "login-name",
  login_name_characters: "login-name",
  login_name_all_digits: "login-name",
  login_name_taken: "login-name",
  password_length: "password",
  password_spaces: "password",
  password_invalid_character: "password",
  password_too_simple: "password",
  invalid_phone: "phone",
  phone_taken: "phone",
  sms_too_soon: "phone",
  sms_daily_limit: "phone",
  sms_code_invalid: "sms-code",
  sms_attempts_exceeded: "sms-code",
  household_region_format: "region",
  household_region_unknown: "region",
  household_region_not_county: "region",
  household_region_required: "region",
  captcha_required: "captcha",
  captcha_invalid: "captcha",
};

/** The message for a refusal: the rule's own text in the page's language, else the server's detail. */
export function ruleMessage(answer) {
  const { status, body } = answer;
  if (status === 0) return t("network_error");
  if (status === 429) return t("too_many");
  if (status === 503) return t("service_down");
  const key = body.attempts_left === 1 && t(`rule_${body.code}_one`) !== `rule_${body.code}_one` ? `rule_${body.code}_one` : `rule_${body.code}`;
  const text = t(key, { attempts: body.attempts_left ?? "" });
  if (text !== key) return text;
  return body.detail || `HTTP ${status}`;
}

/** Clear every field error of `form`. */
export function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

/** Show `message` under the field `id` (its input marked invalid and focused when `focus`). */
export function fieldError(id, message, { focus = true } = {}) {
  const error = $(`${id}-error`);
  const input = $(id) ?? $(`${id}-province`);
  if (!error) return false;
  error.textContent = message;
  input?.setAttribute("aria-invalid", "true");
  if (focus) input?.focus();
  return true;
}

/** A refusal shown where it belongs: beside its field, or in `fallback` (a message element). */
export function showRefusal(answer, fallback) {
  const field = FIELD_OF_CODE[answer.body.code];
  const message = ruleMessage(answer);
  if (!field || !fieldError(field, message)) fallback.textContent = message;
}

// --- The rules, as the page checks them before asking (the server checks them again) ------------

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
const LOGIN_NAME = /^[A-Za-z0-9_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u{20000}-\u{3134f}]+$/u;
const PHONE = /^1[3-9][0-9]{9}$/;

/** The password's four classes, counted over printable ASCII only (as gateway/rules.py does). */
export function passwordChecks(value) {
  const chars = [...value];
  return {
    length: chars.length >= 8 && chars.length <= 15,
    ascii: chars.every((ch) => ch >= "!" && ch <= "~"),
    classes:
      [/[A-Z]/, /[a-z]/, /[0-9]/, /[!-/:-@[-`{-~]/].filter((re) => re.test(value)).length,
  };
}

/** The rule the value breaks (an i18n key), or null. */
export function checkField(id, raw) {
  const value = id === "password" || id === "password-again" ? raw : raw.trim();
  if (value === "") return "rule_required";
  if (value.includes("\u0000")) return "rule_nul";
  switch (id) {
    case "name":
      return [...value].length > 100 || CONTROL.test(value) ? "rule_invalid_name" : null;
    case "id-number":
      return value.length > 32 || CONTROL.test(value) ? "rule_invalid_id_number" : null;
    case "registration-code":
      return /^[A-Za-z0-9]{6}$/.test(value) ? null : "rule_registration_code_format";
    case "nationality":
      return /^[A-Za-z]{3}$/.test(value) ? null : "rule_invalid_nationality";
    case "login-name": {
      const length = [...value.normalize("NFC")].length;
      if (length < 2 || length > 16) return "rule_login_name_length";
      if (!LOGIN_NAME.test(value)) return "rule_login_name_characters";
      return /^[0-9]+$/.test(value) ? "rule_login_name_all_digits" : null;
    }
    case "password": {
      const checks = passwordChecks(value);
      if (!checks.length) return "rule_password_length";
      if (/\s/u.test(value)) return "rule_password_spaces";
      if (!checks.ascii) return "rule_password_invalid_character";
      return checks.classes < 3 ? "rule_password_too_simple" : null;
    }
    case "phone":
      return PHONE.test(value) ? null : "rule_invalid_phone";
    case "sms-code":
      return /^[0-9]{6}$/.test(value) ? null : "rule_sms_code_format";
    default:
      return null;
  }
}

/** Check `ids` in order; show each broken rule beside its field; true when all pass. */
export function checkFields(ids) {
  let ok = true;
  for (const id of ids) {
    const broken = checkField(id, $(id).value);
    if (broken) {
      fieldError(id, t(broken), { focus: ok });
      ok = false;
    }
  }
  return ok;
}

/** The live rule list under the password field: each of the rule's parts, met or not. */
export function drawPasswordChecks(input, list) {
  const { length, ascii, classes } = passwordChecks(input.value);
  const items = [
    [length, t("check_length")],
    [ascii && !/\s/.test(input.value), t("check_ascii")],
    [classes >= 3, t("check_classes", { n: classes })],
  ];
  list.replaceChildren(
    ...items.map(([met, text]) => {
      const item = document.createElement("li");
      item.className = met ? "met" : "unmet";
      item.textContent = `${met ? "✓" : "○"} ${text}`;
      return item;
    }),
  );
}

/** Live: a field's broken rule shows once the person leaves it (and clears as soon as it is met). */
export function liveRule(id) {
  const input = $(id);
  const error = $(`${id}-error`);
  const check = (strict) => {
    const broken = input.value === "" && !strict ? null : checkField(id, input.value);
    if (!broken) {
      error.textContent = "";
      input.removeAttribute("aria-invalid");
    } else if (strict) {
      error.textContent = t(broken);
      input.setAttribute("aria-invalid", "true");
    }
  };
  input.addEventListener("input", () => check(false));
  input.addEventListener("blur", () => check(true));
}

// --- The identity ------------------------------------------------------------------------------

const NATIONALITY_TYPES = new Set(["passport", "foreign_permanent_resident"]);

export function identityFields() {
  const idType = $("id-type").value;
  const fields = { id_type: idType, id_number: $("id-number").value.trim(), name: $("name").value.trim() };
  if (NATIONALITY_TYPES.has(idType)) fields.nationality = $("nationality").value.trim().toUpperCase();
  return fields;
}

export function identityIds() {
  return ["id-number", "name", ...(NATIONALITY_TYPES.has($("id-type").value) ? ["nationality"] : [])];
}

/** Show the nationality only for the ID types that need it; call `onChange` after a change. */
export function watchIdType(onChange = () => {}) {
  const draw = () => {
    show($("nationality-field"), NATIONALITY_TYPES.has($("id-type").value));
    const hint = $("id-number-hint");
    hint.dataset.i18n = `hint_id_number_${$("id-type").value}`; // redrawn by the language switch too
    hint.textContent = t(hint.dataset.i18n);
    onChange($("id-type").value);
  };
  $("id-type").addEventListener("change", draw);
  draw();
}

// --- 【录入生僻字】 ------------------------------------------------------------------------------

/** The rare-character picker: radical (grouped by its strokes), then the stroke count (in all, or
 * beyond the radical), then the character; 【确定】 inserts it at the name field's cursor. */
export class RareCharPicker {
  constructor(target) {
    this.target = target;
    this.dialog = $("rare-dialog");
    this.radicals = null;
    this.radical = null;
    this.chosen = "";
    this.selection = [0, 0];
    $("rare-open").addEventListener("click", () => this.open());
    $("rare-cancel").addEventListener("click", () => this.dialog.close());
    $("rare-ok").addEventListener("click", () => this.insert());
    $("rare-stroke-select").addEventListener("change", () => this.loadCharacters());
    for (const id of ["rare-count-total", "rare-count-residual"]) {
      $(id).addEventListener("change", () => this.drawStrokes());
    }
    this.dialog.addEventListener("close", () => this.target.focus());
    $("rare-char-list").addEventListener("keydown", (event) => this.moveInList(event));
  }

  async open() {
    this.choose(null);
    this.selection = [this.target.selectionStart ?? this.target.value.length, this.target.selectionEnd ?? this.target.value.length];
    this.dialog.showModal();
    if (!this.radicals) {
      const answer = await api("GET", "/v1/rare-chars/radicals");
      if (!answer.ok) {
        $("rare-status").textContent = ruleMessage(answer);
        return;
      }
      this.radicals = answer.body.radicals;
      this.drawRadicals();
    }
  }

  drawRadicals() {
    const groups = new Map();
    for (const radical of this.radicals) {
      if (!groups.has(radical.strokes)) groups.set(radical.strokes, []);
      groups.get(radical.strokes).push(radical);
    }
    const list = $("rare-radical-list");
    list.replaceChildren();
    for (const [strokes, radicals] of groups) {
      const group = document.createElement("div");
      group.className = "radical-group";
      group.setAttribute("role", "group");
      const heading = document.createElement("p");
      heading.className = "radical-strokes";
      heading.id = `radical-strokes-${strokes}`;
      heading.textContent = t("strokes_n", { n: strokes });
      group.setAttribute("aria-labelledby", heading.id);
      group.append(heading);
      for (const radical of radicals) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "radical";
        button.lang = "zh-CN";
        button.textContent = radical.character;
        button.dataset.number = radical.number;
        button.setAttribute("aria-pressed", "false");
        button.setAttribute("aria-label", t("radical_label", { r: radical.character, n: radical.strokes }));
        button.addEventListener("click", () => this.pickRadical(radical, button));
        group.append(button);
      }
      list.append(group);
    }
  }

  pickRadical(radical, button) {
    this.radical = radical;
    for (const other of $("rare-radical-list").querySelectorAll("[aria-pressed]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    this.drawStrokes();
    $("rare-stroke-select").focus();
  }

  get count() {
    return $("rare-count-residual").checked ? "residual" : "total";
  }

  drawStrokes() {
    const select = $("rare-stroke-select");
    if (!this.radical) return;
    const total = this.count === "total";
    const first = total ? this.radical.strokes : 0;
    const last = total ? 100 : 80;
    select.replaceChildren();
    for (let n = first; n <= last; n++) {
      const option = document.createElement("option");
      option.value = String(n);
      option.textContent = total ? t("strokes_n", { n }) : t("strokes_beyond", { n });
      select.append(option);
    }
    select.disabled = false;
    select.value = String(first);
    this.loadCharacters();
  }

  async loadCharacters() {
    const strokes = $("rare-stroke-select").value;
    if (!this.radical || strokes === "") return;
    const query = new URLSearchParams({ radical: this.radical.number, strokes, count: this.count });
    $("rare-status").textContent = t("rare_loading");
    const answer = await api("GET", `/v1/rare-chars?${query}`);
    const list = $("rare-char-list");
    list.replaceChildren();
    this.choose(null);
    if (!answer.ok) {
      $("rare-status").textContent = ruleMessage(answer);
      return;
    }
    const characters = answer.body.characters;
    const found = characters.length === 1 ? "rare_found_one" : "rare_found";
    $("rare-status").textContent = characters.length ? t(found, { n: characters.length }) : t("rare_none");
    for (const [index, character] of characters.entries()) {
      const option = document.createElement("span");
      option.id = `rare-char-${index}`;
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      option.className = "char";
      option.lang = "zh-CN";
      option.textContent = character;
      option.title = `U+${character.codePointAt(0).toString(16).toUpperCase()}`;
      option.addEventListener("click", () => this.choose(option));
      option.addEventListener("dblclick", () => this.insert());
      list.append(option);
    }
  }

  /** Select `option` (a character of the list), or nothing (null). */
  choose(option) {
    for (const other of $("rare-char-list").children) other.setAttribute("aria-selected", String(other === option));
    this.chosen = option ? option.textContent : "";
    if (option) $("rare-char-list").setAttribute("aria-activedescendant", option.id);
    else $("rare-char-list").removeAttribute("aria-activedescendant");
    $("rare-chosen").textContent = this.chosen;
    $("rare-ok").disabled = !option;
  }

  moveInList(event) {
    const options = [...$("rare-char-list").children];
    if (!options.length) return;
    const at = options.findIndex((o) => o.getAttribute("aria-selected") === "true");
    const step = { ArrowRight: 1, ArrowDown: 8, ArrowLeft: -1, ArrowUp: -8 }[event.key];
    if (step !== undefined) {
      event.preventDefault();
      const next = options[Math.min(options.length - 1, Math.max(0, (at < 0 ? 0 : at + step)))];
      this.choose(next);
      next.scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" && this.chosen) {
      event.preventDefault();
      this.insert();
    }
  }

  insert() {
    if (!this.chosen) return;
    const [start, end] = this.selection;
    const value = this.target.value;
    this.target.value = value.slice(0, start) + this.chosen + value.slice(end);
    const cursor = start + this.chosen.length;
    this.dialog.close();
    this.target.setSelectionRange(cursor, cursor);
    this.target.dispatchEvent(new Event("input", { bubbles: true }));
  }

  redraw() {
    if (this.radicals) this.drawRadicals();
    if (this.radical) {
      const pressed = $("rare-radical-list").querySelector(`[data-number="${this.radical.number}"]`);
      pressed?.setAttribute("aria-pressed", "true");
      const value = $("rare-stroke-select").value;
      for (const option of $("rare-stroke-select").options) {
        const n = Number(option.value);
        option.textContent = this.count === "total" ? t("strokes_n", { n }) : t("strokes_beyond", { n });
      }
      $("rare-stroke-select").value = value;
    }
  }
}

/** Hand the identifier to the login page (see LOGIN_IDENTIFIER_KEY) and go there. */
export function backToLogin(identifier) {
  if (identifier) sessionStorage.setItem(LOGIN_IDENTIFIER_KEY, identifier);
  const url = new URL("/", location.origin);
  if (lang() === "en") url.searchParams.set("lang", "en");
  return url.pathname + url.search;
}
