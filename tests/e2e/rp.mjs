// A relying party built with openid-client (v6), configured with nothing but the issuer URL, a
// client id (and secret) and a redirect URI. Driven by tests/test_oidc_relying_parties.py over
// stdin/stdout, one JSON object per line:
//   argv: ISSUER CLIENT_ID CLIENT_SECRET|- REDIRECT_URI SCOPE POST_LOGOUT_REDIRECT_URI
//   out:  {"authorization_url"}                      in: the callback URL the browser was sent to
//   out:  {"claims", "userinfo", "refreshed", "end_session_url"}   or {"error"}
import * as client from "openid-client";
import * as readline from "node:readline";

const [issuer, clientId, secret, redirectUri, scope, postLogout] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");

try {
  const metadata = { id_token_signed_response_alg: "ES256" }; // qrgate signs id_tokens with ES256
  const auth = secret === "-" ? client.None() : client.ClientSecretBasic(secret);
  const config = await client.discovery(new URL(issuer), clientId, metadata, auth, {
    execute: issuer.startsWith("http:") ? [client.allowInsecureRequests] : [],
  });
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  });
  say({ authorization_url: url.href });
  const callback = new URL(await nextLine());
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  let refreshed = false;
  if (tokens.refresh_token) {
    const again = await client.refreshTokenGrant(config, tokens.refresh_token);
    refreshed = typeof again.access_token === "string";
  }
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogout,
    state: "bye",
  });
  say({ claims, userinfo, refreshed, end_session_url: endSession.href, access_token: tokens.access_token });
} catch (error) {
  say({ error: `${error.name}: ${error.message}`, code: error.code, cause: String(error.cause ?? "") });
}
lines.close();
