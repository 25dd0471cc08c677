// PLACEHOLDER (branch register-pages): the on-screen password keyboard is another change's
// (`attachKeyboard(input, options)`, gateway/web/static/keyboard.js there). This no-op stands in for it
// only so the registration and password pages load; merge the real file over it.
export function attachKeyboard(_input, _options = {}) {
  return { open() {}, close() {}, detach() {} };
}
