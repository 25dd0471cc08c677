// A relying party built with openid-client (v6), configured with nothing but the issuer URL, a
// client id (and secret) and a redirect URI: everything else comes from discovery. Driven by
// tests/test_oidc_relying_parties.py over stdin/stdout, one JSON object per line:
//   argv: ISSUER CLIENT_ID CLIENT_SECRET|-|jwk:FILE REDIRECT_URI SCOPE POST_LOGOUT_REDIRECT_URI
//         (a secret: client_secret_basic; -: a public client; jwk:FILE: private_key_jwt with the
//         private EC P-256 JWK in FILE, whose public half the client registered)
//   out:  {"authorization_url"}                      in: the callback URL the browser was sent to
//   out:  {"claims", "userinfo", "refreshed", "end_session_url"}   or {"error", ...}
//   then, for each line "refresh" read: out {"refreshed": true} or {"error", "oauth_error", ...}
//   (a refresh with the newest refresh token); the process ends when stdin closes.
//
// What openid-client checks: the authorization response (state, and iss as RFC 9207 requires since
// discovery says authorization_response_iss_parameter_supported), the code exchange with PKCE, and
// the id_token's iss, aud, azp, exp, iat, nonce and (with enableNonRepudiationChecks) its signature
// against the JWKS. openid-client leaves at_hash to the application in the code flow (OpenID
// Connect Core 3.1.3.8 makes it optional there), so this relying party checks it itself below.
import * as client from "openid-client";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import * as readline from "node:readline";

const [issuer, clientId, secret, redirectUri, scope, postLogout] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const queued = [];
const waiting = [];
lines.on("line", (line) => (waiting.length ? waiting.shift()(line) : queued.push(line)));
lines.on("close", () => waiting.splice(0).forEach((resolve) => resolve(null)));
const nextLine = () => new Promise((resolve) => (queued.length ? resolve(queued.shift()) : waiting.push(resolve)));
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");
// A refusal as openid-client reports it; when it could not read the answer as an OAuth error (a
// ResponseBodyError), the answer itself (error.cause is then the Response): status, type and body.
async function failure(error) {
  const said = { error: `${error.name}: ${error.message}`, code: error.code, oauth_error: error.error };
  if (error.cause instanceof Response) {
    said.status = error.cause.status;
    said.content_type = error.cause.headers.get("content-type");
    said.body = await error.cause.text().catch(() => undefined);
  }
  return said;
}

// at_hash (Core 3.1.3.6): the left half of the hash of the access token, the hash of the JWS alg.
function checkAtHash(idToken, accessToken, atHash) {
  const { alg } = JSON.parse(Buffer.from(idToken.split(".")[0], "base64url").toString());
  const hash = { ES256: "sha256", EdDSA: "sha512" }[alg];
  if (!hash) throw new Error(`unexpected id_token alg ${alg}`);
  const digest = createHash(hash).update(accessToken, "ascii").digest();
  if (digest.subarray(0, digest.length / 2).toString("base64url") !== atHash) {
    throw new Error("the id_token's at_hash does not match the access token");
  }
}

// How the client authenticates at the token endpoint.
async function authentication() {
  if (secret === "-") return client.None();
  if (!secret.startsWith("jwk:")) return client.ClientSecretBasic(secret);
  const jwk = JSON.parse(await readFile(secret.slice(4), "utf8"));
  const key = await crypto.subtle.importKey("jwk", jwk, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  return client.PrivateKeyJwt({ key, kid: jwk.kid }); // signs a fresh assertion for every request
}

try {
  const auth = await authentication();
  const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
    execute: issuer.startsWith("http:") ? [client.allowInsecureRequests] : [],
  });
  client.enableNonRepudiationChecks(config); // verify the id_token's signature with the issuer's JWKS
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
  if (typeof claims.at_hash !== "string") throw new Error("the id_token has no at_hash");
  checkAtHash(tokens.id_token, tokens.access_token, claims.at_hash);
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  let refreshToken = tokens.refresh_token;
  let refreshed = false;
  if (refreshToken) {
    const again = await client.refreshTokenGrant(config, refreshToken);
    refreshed = typeof again.access_token === "string" && again.refresh_token !== refreshToken;
    refreshToken = again.refresh_token ?? refreshToken; // rotated on every use
  }
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogout,
    state: "bye",
  });
  say({ claims, userinfo, refreshed, end_session_url: endSession.href });
  for (let line = await nextLine(); line !== null; line = await nextLine()) {
    if (line !== "refresh") {
      say({ error: `unknown command ${line}` });
      continue;
    }
    try {
      const again = await client.refreshTokenGrant(config, refreshToken);
      refreshToken = again.refresh_token ?? refreshToken;
      say({ refreshed: true });
    } catch (error) {
      say(await failure(error));
    }
  }
} catch (error) {
  say(await failure(error));
}
lines.close();
