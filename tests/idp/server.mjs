// A real, certified OpenID Provider (npm `oidc-provider`) for Countersign's integration tests.
//
// Usage: PORT=4000 [REDIRECT_URIS=http://127.0.0.1:9090/oidc/callback,...] node server.mjs
//
// Listens on 127.0.0.1:$PORT only, with issuer http://127.0.0.1:$PORT, prints one line
// `READY <issuer>` on stdout once it accepts connections, and exits when stdin closes (so a
// test that dies never leaves it behind) or on SIGTERM/SIGINT. Set IDP_IGNORE_STDIN=1 to run
// it by hand with stdin detached.
//
// What it offers:
// - JWKS with an RS256 and an ES256 key, generated fresh at every start (never committed).
// - `svc-client` / `svc-secret`: a confidential client allowed the client_credentials grant.
//   With `resource=<an https URL>` (RFC 8707) the access token is a JWT (RFC 9068, typ
//   at+jwt) with `aud` = the resource and the granted `scope`. Set ACCESS_TOKEN_ALG=ES256 to
//   sign access tokens with the EC key instead.
// - `countersign`: an authorization-code client (PKCE required) for approver login, with
//   redirect URIs from REDIRECT_URIS (comma separated) and secret `countersign-secret`.
//   Development interactions are on: any login name is accepted, and the account's `email`
//   claim is the login name (log in as alice@example.com to get that email).
//   By default the provider conforms to OIDC Core 5.4: with an access token issued, the
//   `email` claim is served by the UserInfo endpoint only, not put into the ID token. Set
//   ID_TOKEN_CLAIMS=1 to put scope claims into the ID token as well (as Okta, Auth0, Keycloak
//   and Entra ID do).
// - STALE_AUTH_TIME=1 makes it an IdP that does not honour `max_age=0` / `prompt=login`: the
//   login form is still shown, but every ID token says the person authenticated an hour
//   earlier (`auth_time` = login time - 3600), as an IdP reusing an old SSO session would.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

import Provider from 'oidc-provider';

const port = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('server.mjs: set PORT to the loopback port to listen on');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const accessTokenAlg = process.env.ACCESS_TOKEN_ALG ?? 'RS256';
const idTokenClaims = process.env.ID_TOKEN_CLAIMS === '1';
const redirectUris = (process.env.REDIRECT_URIS ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);

// Scopes any resource server accepts; tests ask for a subset.
const RESOURCE_SCOPES = 'read write deploy:read deploy:write admin';

function signingJwk(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid };
}

const jwks = {
  keys: [
    signingJwk('rsa', { modulusLength: 2048 }, 'RS256', `rsa-${randomBytes(4).toString('hex')}`),
    signingJwk('ec', { namedCurve: 'P-256' }, 'ES256', `ec-${randomBytes(4).toString('hex')}`),
  ],
};

const clients = [
  {
    client_id: 'svc-client',
    client_secret: 'svc-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: RESOURCE_SCOPES,
  },
];
if (redirectUris.length > 0) {
  clients.push({
    client_id: 'countersign',
    client_secret: 'countersign-secret',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: redirectUris,
    token_endpoint_auth_method: 'client_secret_basic',
  });
}

const provider = new Provider(issuer, {
  clients,
  jwks,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  conformIdTokenClaims: !idTokenClaims,
  scopes: ['openid', 'email', ...RESOURCE_SCOPES.split(' ')],
  // Login name = subject = email, so browser tests choose who approves.
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: sub, email_verified: true };
      },
    };
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No resource parameter -> no default audience (opaque token, as the provider does).
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resourceIndicator) {
        return {
          scope: RESOURCE_SCOPES,
          audience: resourceIndicator,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: accessTokenAlg } },
        };
      },
    },
  },
  ttl: { AccessToken: 600, ClientCredentials: 600, IdToken: 600 },
  // ID tokens for approver login may be signed with either key.
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'ES256'],
  },
});

if (process.env.STALE_AUTH_TIME === '1') {
  const { authTime } = provider.Session.prototype;
  provider.Session.prototype.authTime = function staleAuthTime() {
    const t = authTime.call(this);
    return t === undefined ? undefined : t - 3600;
  };
}

// Plain http on loopback: nothing sits in front of us, so do not trust X-Forwarded-*.
provider.proxy = false;
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`server.mjs: cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});

function shutdown() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.IDP_IGNORE_STDIN !== '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}
