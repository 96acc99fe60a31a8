#!/usr/bin/env node
// End-to-end example client for the identity service; loads ../../proto at run time, so there is
// no generated code to keep in sync.
//
//   npm ci
//   node client.js 127.0.0.1:50051        # or IDENTITY_ADDR=127.0.0.1:50051 node client.js
//   node client.js 127.0.0.1:50051 http://127.0.0.1:8080   # also over IDENTITY_HTTP_ADDR
//
// Signs up a fresh user, logs in, checks the access token both remotely (ValidateToken) and
// locally (jose against GetJwks, and with an HTTP URL also jose's createRemoteJWKSet against the
// discovery document's jwks_uri), refreshes, logs out and checks the session is gone. Prints one
// line per step; exits non-zero with a FAIL line on the first mismatch.
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const PROTO_DIR = fileURLToPath(new URL('../../proto', import.meta.url));
const ISSUER = 'identity';
const AUDIENCE = 'identity';
// At least 15 characters and not guessable, as the server demands.
const PASSWORD = 'maple-orbit-tundra-42-vessel';
const TIMEOUT_MS = 10_000;

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

function ok(step, detail = '') {
  console.log(`ok   ${step.padEnd(16)} ${detail}`.trimEnd());
}

// Calls one unary RPC as a promise; a gRPC error names the RPC and its status code.
function rpc(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + TIMEOUT_MS;
    client[method](request, metadata, { deadline }, (err, response) => {
      if (err) reject(new Error(`${method}: ${grpc.status[err.code]}: ${err.details}`));
      else resolve(response);
    });
  });
}

// Verifies an access token with the published keys only, as a resource server would. The
// algorithm is the key's, never the token's say-so; jose checks signature, typ, iss, aud, exp.
async function verifyLocally(token, jwks) {
  const { kid } = decodeProtectedHeader(token);
  const key = jwks.keys.find((candidate) => candidate.kid === kid);
  expect(key, `header kid ${kid} is not in GetJwks`);
  try {
    // Each key verifies with its own algorithm only (EdDSA, ES256 or RS256).
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
      algorithms: [key.alg],
      typ: 'at+jwt',
      issuer: ISSUER,
      audience: AUDIENCE,
      requiredClaims: ['exp', 'iat', 'nbf', 'sub', 'jti', 'sid'],
    });
    return payload;
  } catch (err) {
    throw new Error(`local verification: ${err.code ?? err.name}: ${err.message}`);
  }
}

// Verifies an access token as a gateway or resource server that speaks only HTTP does: the
// discovery document names the key set, createRemoteJWKSet fetches (and caches) it and picks the
// token's key. The algorithms allowed are the issuer's published ones, never the token's say-so.
async function verifyOverHttp(token, httpUrl) {
  const discoveryUrl = `${httpUrl.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const response = await fetch(discoveryUrl, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  expect(response.ok, `GET ${discoveryUrl}: HTTP ${response.status}`);
  const discovery = await response.json();
  const keys = createRemoteJWKSet(new URL(discovery.jwks_uri), { timeoutDuration: TIMEOUT_MS });
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      algorithms: discovery.id_token_signing_alg_values_supported,
      typ: 'at+jwt',
      issuer: ISSUER,
      audience: AUDIENCE,
      requiredClaims: ['exp', 'iat', 'nbf', 'sub', 'jti', 'sid'],
    });
    return { payload, alg: protectedHeader.alg, jwksUri: discovery.jwks_uri };
  } catch (err) {
    throw new Error(`verification over HTTP: ${err.code ?? err.name}: ${err.message}`);
  }
}

// Whether verified token claims name `role` (tokens from before roles existed have none).
function hasRole(claims, role) {
  return (claims.roles ?? []).includes(role);
}

async function main() {
  const addr = process.argv[2] ?? process.env.IDENTITY_ADDR ?? '127.0.0.1:50051';
  const httpUrl = process.argv[3] ?? process.env.IDENTITY_HTTP_URL;
  const files = readdirSync(`${PROTO_DIR}/identity/v1`).filter((f) => f.endsWith('.proto'));
  // keepCase: fields keep their proto names (access_token), as in the other languages' clients.
  const definition = await protoLoader.load(files.map((f) => `identity/v1/${f}`), {
    includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true,
  });
  const { identity: { v1 } } = grpc.loadPackageDefinition(definition);
  const credentials = grpc.credentials.createInsecure();
  const auth = new v1.AuthService(addr, credentials);
  const tokensApi = new v1.TokenService(addr, credentials);
  const users = new v1.UserService(addr, credentials);
  await new Promise((resolve, reject) => auth.waitForReady(Date.now() + TIMEOUT_MS,
    (err) => (err ? reject(new Error(`no gRPC server at ${addr}: ${err.message}`)) : resolve())));

  const email = `node-client-${randomUUID().replaceAll('-', '').slice(0, 12)}@example.com`;
  const signup = { email, password: PASSWORD, full_name: 'Node Client' };
  const { user } = await rpc(auth, 'Signup', signup);
  expect(user.id && user.email === email && user.is_active,
    `unexpected user: ${JSON.stringify(user)}`);
  ok('signup', `${user.id} ${email}`);

  const login = await rpc(auth, 'Login', { email, password: PASSWORD });
  const { tokens } = login;
  expect(tokens.token_type === 'Bearer', `token_type is ${tokens.token_type}`);
  expect(tokens.access_token && tokens.refresh_token, 'login returned an empty token');
  expect(tokens.expires_in > 0 && tokens.refresh_expires_in > 0, 'non-positive lifetimes');
  expect(login.user.id === user.id, 'login returned another user');
  ok('login', `access token expires in ${tokens.expires_in}s`);

  const result = await rpc(tokensApi, 'ValidateToken', { access_token: tokens.access_token });
  const { claims } = result;
  expect(result.active, 'ValidateToken says the fresh access token is not active');
  expect(claims.subject === user.id && claims.email === email && claims.full_name === 'Node Client',
    `claims do not match the user: ${JSON.stringify(claims)}`);
  expect(claims.issuer === ISSUER && claims.audience.includes(AUDIENCE),
    `claims iss ${claims.issuer}, aud ${claims.audience}; want ${ISSUER}`);
  expect(claims.session_id && claims.token_id, 'claims lack session_id or token_id');
  expect(Number(claims.expires_at.seconds) * 1000 > Date.now(), 'claims expires_at is in the past');
  ok('validate', `active, session ${claims.session_id}`);

  // The message has every member of every kind of key; a JWK holds only its own (no empty ones).
  const jwks = {
    keys: (await rpc(tokensApi, 'GetJwks', {})).keys
      .map((key) => Object.fromEntries(Object.entries(key).filter(([, value]) => value !== ''))),
  };
  expect(jwks.keys.length > 0, 'GetJwks returned no keys');
  ok('jwks', `${jwks.keys.length} key(s): ${jwks.keys.map((k) => k.kid).join(', ')}`);

  const local = await verifyLocally(tokens.access_token, jwks);
  expect(local.sub === user.id && local.sid === claims.session_id && local.jti === claims.token_id
    && local.email === email, `local claims differ from ValidateToken: ${JSON.stringify(local)}`);
  const { alg } = decodeProtectedHeader(tokens.access_token);
  ok('verify locally', `${alg} signature, typ, iss, aud, exp ok (jti ${local.jti})`);

  // Roles: a list of names in the token (`roles` claim) and in ValidateToken's claims. A new
  // account holds none; `identity user grant-role EMAIL ROLE` or AdminService.SetRoles add some,
  // from the next refresh on.
  expect(JSON.stringify(local.roles ?? []) === JSON.stringify(claims.roles ?? []),
    `roles differ: token ${JSON.stringify(local.roles)}, ValidateToken ${JSON.stringify(claims.roles)}`);
  expect(!hasRole(local, 'billing.read'), 'a new account holds no roles');
  ok('roles', `${JSON.stringify(claims.roles ?? [])} (has billing.read: ${hasRole(local, 'billing.read')})`);

  if (httpUrl) {
    const { payload: remote, alg, jwksUri } = await verifyOverHttp(tokens.access_token, httpUrl);
    expect(remote.sub === user.id && remote.jti === claims.token_id,
      `claims verified over HTTP differ from ValidateToken: ${JSON.stringify(remote)}`);
    ok('verify over http', `createRemoteJWKSet(${jwksUri}): ${alg} signature ok`);
  }

  const bearer = new grpc.Metadata();
  bearer.set('authorization', `Bearer ${tokens.access_token}`);
  const { user: me } = await rpc(users, 'GetCurrentUser', {}, bearer);
  expect(me.id === user.id && me.email === email, `GetCurrentUser returned ${JSON.stringify(me)}`);
  ok('current user', `${me.id} ${me.full_name}`);

  const refresh = { refresh_token: tokens.refresh_token };
  const { tokens: fresh } = await rpc(auth, 'RefreshToken', refresh);
  expect(fresh.access_token !== tokens.access_token, 'refresh returned the same access token');
  expect(fresh.refresh_token !== tokens.refresh_token, 'refresh token was not rotated');
  const refreshed = await verifyLocally(fresh.access_token, jwks);
  expect(refreshed.sub === user.id && refreshed.sid === claims.session_id,
    `refreshed token is for another user or session: ${JSON.stringify(refreshed)}`);
  ok('refresh', 'new tokens, same session, new access token verifies locally');

  await rpc(auth, 'Logout', { refresh_token: fresh.refresh_token });
  ok('logout');

  const after = await rpc(tokensApi, 'ValidateToken', { access_token: fresh.access_token });
  expect(!after.active, 'ValidateToken still says active after logout');
  ok('after logout', 'refreshed access token is no longer active');
  console.log(`node client: all steps passed against ${addr}`);
  for (const client of [auth, tokensApi, users]) client.close();
}

main().catch((err) => {
  console.error(`FAIL: ${err.message}`);
  process.exit(1);
});
