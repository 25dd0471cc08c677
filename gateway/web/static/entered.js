// The screen after entering a unit, for a person rather than a developer: the unit's name and TIN,
// who is working, their role and how they got in (in words: 授权 / 申报密码 / CA 证书, never a raw
// value), when they logged in, until when this entry is valid and the time left (live). Dates follow
// the page's language (Intl). The raw claims stay behind the "details" toggle for client teams.

import { $, claimsOf, duration, fillClaims, show } from "./common.js";
import { lang, t } from "./i18n.js";

const ROLE_KEYS = { legal_rep: "role_legal_rep", finance_manager: "role_finance_manager", tax_staff: "role_tax_staff" };
const VIA_KEYS = { authorization: "via_authorization", declaration_password: "via_declaration_password", ca: "via_ca" };

export function formatDate(seconds) {
  const locale = lang() === "en" ? "en-GB" : "zh-CN";
  return new Intl.DateTimeFormat(locale, { dateStyle: "long", timeStyle: "medium" }).format(new Date(seconds * 1000));
}

/** A role or a way in, in words; anything unknown reads as "other", never as the raw value. */
export function roleWords(role) {
  return t(ROLE_KEYS[role] ?? "role_other");
}

export function viaWords(via) {
  return t(VIA_KEYS[via] ?? "via_other");
}

export class EnteredView {
  constructor() {
    this.timer = null;
  }

  /** Draw the facts of `unit` (null: logged in, no unit) from the tokens the page holds. */
  draw(session) {
    clearInterval(this.timer);
    const unit = session.unit;
    show($("unit-facts"), Boolean(unit));
    if ($("switch-unit")) show($("switch-unit"), Boolean(unit));
    $("done-heading").textContent = t(unit ? "entered_title" : "done_title");
    fillClaims($("claims"), session.claims);
    show($("unit-claims-block"), Boolean(unit));
    if (!unit) return;
    const claims = claimsOf(unit.token);
    fillClaims($("unit-claims"), claims);
    $("fact-name").textContent = unit.name || "—";
    $("fact-tin").textContent = unit.tin;
    $("fact-person").textContent = unit.person?.display_name ?? "—";
    $("fact-role").textContent = roleWords(claims.unit?.role ?? unit.role);
    $("fact-via").textContent = viaWords(claims.unit?.via ?? unit.via);
    $("fact-login-time").textContent = claims.auth_time ? formatDate(claims.auth_time) : "—";
    $("fact-valid-until").textContent = claims.exp ? formatDate(claims.exp) : "—";
    const tick = () => {
      const left = (claims.exp ?? 0) - Date.now() / 1000;
      $("fact-remaining").textContent = left > 0 ? duration(left) : t("entered_expired");
      if (left <= 0) clearInterval(this.timer);
    };
    tick();
    this.timer = setInterval(tick, 1000);
  }

  stop() {
    clearInterval(this.timer);
  }
}
