// The registration page (/register, 实名注册): ① the registration agreement (【同意并继续】), ② the
// method (hall registration code; face recognition for resident ID cards only) and the identity, with
// 【录入生僻字】 beside the name, ③ login name, password (on-screen keyboard), phone + SMS code and the
// household region (resident ID card holders only), ④ done. The registration token lives in this
// page's memory only; every refusal is shown beside its field and nothing typed is lost.

import { $, api, show } from "./common.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";
import { attachKeyboard } from "/web/keyboard.js";
import {
  RareCharPicker,
  backToLogin,
  checkFields,
  clearErrors,
  drawPasswordChecks,
  fieldError,
  identityFields,
  identityIds,
  liveRule,
  showRefusal,
  watchIdType,
} from "./account.js";

const AGREEMENT_VERSION = document.body.dataset.agreementVersion;
const state = { step: "agreement", registration: null, identity: null, sms: null, resendTimer: null, done: null };

function go(step) {
  state.step = step;
  for (const name of ["agreement", "identity", "account", "done"]) {
    show($(`step-${name}`), name === step);
    const item = $(`progress-${name}`);
    if (name === step) item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
  }
  const heading = $(`step-${step}`).querySelector("h2");
  heading.tabIndex = -1;
  heading.focus();
}

// ① The agreement ------------------------------------------------------------------------------
$("agree").addEventListener("click", () => go("identity"));
$("identity-back").addEventListener("click", () => go("agreement"));

// ② Method and identity --------------------------------------------------------------------------
const picker = new RareCharPicker($("name"));

function drawMethod() {
  const resident = $("id-type").value === "resident_id";
  $("method-face").disabled = !resident;
  if (!resident && $("method-face").checked) $("method-hall").checked = true;
  const face = $("method-face").checked;
  show($("code-field"), !face);
  show($("face-note"), face);
  $("identity-submit").disabled = face;
}
watchIdType(drawMethod);
for (const id of ["method-hall", "method-face"]) $(id).addEventListener("change", drawMethod);
$("step-identity").addEventListener("input", () => ($("identity-message").textContent = ""));
$("step-account").addEventListener("input", () => ($("account-message").textContent = ""));
for (const id of ["id-number", "name", "nationality", "registration-code"]) liveRule(id);

$("step-identity").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("step-identity");
  clearErrors(form);
  $("identity-message").textContent = "";
  if (!checkFields([...identityIds(), "registration-code"])) return;
  const identity = identityFields();
  const body = {
    method: "hall_code",
    registration_code: $("registration-code").value.trim(),
    agreement_version: AGREEMENT_VERSION,
    ...identity,
  };
  $("identity-submit").disabled = true;
  const answer = await api("POST", "/v1/registrations", { json: body });
  $("identity-submit").disabled = false;
  if (!answer.ok) {
    if (answer.body.code?.startsWith("agreement_")) go("agreement");
    return showRefusal(answer, $("identity-message"));
  }
  state.registration = answer.body;
  state.identity = identity;
  show($("region-field"), identity.id_type === "resident_id");
  drawAccountFor();
  go("account");
  if (identity.id_type === "resident_id") regions.start();
});

function drawAccountFor() {
  if (state.identity) $("account-for").textContent = t("account_for", { name: state.identity.name });
}

// ③ The account ----------------------------------------------------------------------------------
attachKeyboard($("password"));
for (const id of ["login-name", "password", "phone", "sms-code"]) liveRule(id);
$("password").addEventListener("input", () => drawPasswordChecks($("password"), $("password-checks")));
drawPasswordChecks($("password"), $("password-checks"));

$("sms-send").addEventListener("click", async () => {
  $("phone-error").textContent = "";
  if (!checkFields(["phone"])) return;
  $("sms-send").disabled = true;
  const answer = await api("POST", "/v1/sms/challenges", { json: { purpose: "register", phone: $("phone").value.trim() } });
  if (!answer.ok) {
    $("sms-send").disabled = false;
    return showRefusal(answer, $("account-message"));
  }
  state.sms = { ...answer.body, phone: $("phone").value.trim() };
  drawSmsSent();
  resendCountdown(answer.body.resend_after);
  $("sms-code").focus();
});

function drawSmsSent() {
  if (state.sms) $("sms-code-hint").textContent = t("sms_sent", { phone: state.sms.phone_masked });
}

function resendCountdown(seconds) {
  clearInterval(state.resendTimer);
  const until = Date.now() + seconds * 1000;
  const draw = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(state.resendTimer);
      $("sms-send").disabled = false;
      $("sms-send").textContent = t("sms_send");
    } else $("sms-send").textContent = t("sms_resend_in", { s: left });
  };
  state.resendTimer = setInterval(draw, 1000);
  draw();
}

/** The household-region picker: province, prefecture, county (GB/T 2260, GET /v1/regions). */
class RegionPicker {
  constructor() {
    this.started = false;
    this.levels = ["region-province", "region-prefecture", "region-county"];
    $("region-province").addEventListener("change", () => this.pick(0));
    $("region-prefecture").addEventListener("change", () => this.pick(1));
    $("region-county").addEventListener("change", () => this.pick(2));
  }

  async start() {
    if (this.started) return;
    this.started = true;
    await this.fill(0, null);
  }

  async fill(level, parent) {
    const select = $(this.levels[level]);
    const answer = await api("GET", parent ? `/v1/regions?parent=${parent}` : "/v1/regions");
    if (!answer.ok) return fieldError("region", t("service_down"), { focus: false });
    const placeholder = select.options[0];
    select.replaceChildren(placeholder);
    for (const region of answer.body.regions) {
      const option = document.createElement("option");
      option.value = region.code;
      option.textContent = region.name;
      option.dataset.countyLevel = String(region.county_level);
      select.append(option);
    }
    select.disabled = false;
  }

  async pick(level) {
    $("region-error").textContent = "";
    for (let lower = level + 1; lower < 3; lower++) {
      const select = $(this.levels[lower]);
      select.replaceChildren(select.options[0]);
      select.disabled = true;
    }
    const chosen = $(this.levels[level]).selectedOptions[0];
    if (!chosen?.value || level === 2) return;
    if (level === 1 && chosen.dataset.countyLevel === "true") return; // a city without counties: itself
    await this.fill(level + 1, chosen.value);
  }

  /** The chosen county-level code, or null. */
  get value() {
    const county = $("region-county").value;
    if (county) return county;
    const prefecture = $("region-prefecture").selectedOptions[0];
    return prefecture?.dataset.countyLevel === "true" ? prefecture.value : null;
  }
}
const regions = new RegionPicker();

$("step-account").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("step-account");
  clearErrors(form);
  $("account-message").textContent = "";
  let ok = checkFields(["login-name", "password", "phone", "sms-code"]);
  const needsRegion = state.identity.id_type === "resident_id";
  if (needsRegion && !regions.value) {
    fieldError("region", t("rule_household_region_not_county"), { focus: ok });
    ok = false;
  }
  if (ok && (!state.sms || state.sms.phone !== $("phone").value.trim())) {
    fieldError("sms-code", t("rule_sms_first"));
    ok = false;
  }
  if (!ok) return;
  const body = {
    registration_token: state.registration.registration_token,
    login_name: $("login-name").value.trim(),
    password: $("password").value,
    phone: $("phone").value.trim(),
    sms_challenge_id: state.sms.challenge_id,
    sms_code: $("sms-code").value.trim(),
  };
  if (needsRegion) body.household_region = regions.value;
  $("account-submit").disabled = true;
  const answer = await api("POST", `/v1/registrations/${encodeURIComponent(state.registration.registration_id)}/complete`, {
    json: body,
  });
  $("account-submit").disabled = false;
  if (!answer.ok) {
    if (answer.status === 404 && answer.body.code === "registration_not_found") {
      $("identity-message").textContent = t("rule_registration_not_found");
      return go("identity");
    }
    return showRefusal(answer, $("account-message"));
  }
  state.done = answer.body;
  state.registration = null;
  drawDone();
  go("done");
});

function drawDone() {
  if (!state.done) return;
  const ways = state.done.log_in_with.map((way) => t(`way_${way}`)).join(t("list_sep"));
  $("done-text").textContent = t("reg_done_text", { login_name: state.done.login_name, ways });
}

$("done-login").addEventListener("click", (event) => {
  event.preventDefault();
  location.assign(backToLogin(state.done?.login_name));
});

installLanguageSwitch();
onLanguageChange(() => {
  drawAccountFor();
  drawSmsSent();
  drawDone();
  drawPasswordChecks($("password"), $("password-checks"));
  picker.redraw();
});
drawMethod();
