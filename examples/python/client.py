#!/usr/bin/env python3
"""End-to-end example client for the identity service, generated from proto/ at run time.

    pip install -r requirements.txt
    python client.py 127.0.0.1:50051        # or IDENTITY_ADDR=127.0.0.1:50051 python client.py
    python client.py 127.0.0.1:50051 http://127.0.0.1:8080   # also over IDENTITY_HTTP_ADDR

Signs up a fresh user, logs in, checks the access token both remotely (ValidateToken) and locally
(PyJWT against GetJwks, and with an HTTP URL also PyJWKClient against the discovery document's
jwks_uri), refreshes, logs out and checks the session is gone. Then the second factor, with
codes computed by pyotp from the otpauth:// URI alone (authenticator.py: an authenticator app
independent of the server's own TOTP code): enrols TOTP, logs in through the challenge
(CompleteLogin), sees a replayed code refused and a recovery code accepted once, and steps up.
Prints one line per step; exits non-zero with a FAIL line on the first mismatch.
"""

import importlib.resources
import json
import urllib.request
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent.parent / "proto"
GEN_DIR = HERE / "gen"  # gitignored: regenerated on every run so it always matches proto/

ISSUER = AUDIENCE = "identity"
PASSWORD = "maple-orbit-tundra-42-vessel"  # >= 15 chars and not guessable, as the server demands
TIMEOUT = 10  # seconds per RPC


def generate():
    """Compile proto/ with grpcio-tools into gen/ (identity/v1/*_pb2.py, *_pb2_grpc.py)."""
    from grpc_tools import protoc

    # grpcio-tools ships google/protobuf/*.proto (types.proto imports timestamp.proto).
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.glob("identity/v1/*.proto"))
    shutil.rmtree(GEN_DIR, ignore_errors=True)  # no stale modules from a removed .proto
    GEN_DIR.mkdir()
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={GEN_DIR}",
            f"--pyi_out={GEN_DIR}", f"--grpc_python_out={GEN_DIR}", *sources]
    if protoc.main(args) != 0:
        sys.exit(f"FAIL: protoc could not compile {PROTO_DIR}")
    sys.path.insert(0, str(GEN_DIR))


generate()

import grpc  # noqa: E402
import jwt  # noqa: E402  (PyJWT)
from authenticator import Authenticator  # noqa: E402  (pyotp, beside this file)
from google.protobuf import text_format  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from identity.v1 import auth_service_pb2 as auth_pb  # noqa: E402
from identity.v1 import auth_service_pb2_grpc as auth_grpc  # noqa: E402
from identity.v1 import token_service_pb2 as token_pb  # noqa: E402
from identity.v1 import token_service_pb2_grpc as token_grpc  # noqa: E402
from identity.v1 import types_pb2 as types_pb  # noqa: E402
from identity.v1 import user_service_pb2 as user_pb  # noqa: E402
from identity.v1 import user_service_pb2_grpc as user_grpc  # noqa: E402


def fail(message):
    sys.exit(f"FAIL: {message}")


def expect(condition, message):
    if not condition:
        fail(message)


def show(message):
    return text_format.MessageToString(message, as_one_line=True)


def ok(step, detail=""):
    print(f"ok   {step:<16} {detail}".rstrip(), flush=True)


def rpc(name, method, request, **kwargs):
    """Calls one RPC; a gRPC error becomes a FAIL line that names the RPC."""
    try:
        return method(request, timeout=TIMEOUT, **kwargs)
    except grpc.RpcError as err:
        fail(f"{name}: {err.code().name}: {err.details()}")


def refused(name, method, request, code, **kwargs):
    """Calls one RPC that must fail with `code`; returns the error's message."""
    try:
        method(request, timeout=TIMEOUT, **kwargs)
    except grpc.RpcError as err:
        expect(err.code() == code, f"{name}: {err.code().name} ({err.details()}), want {code.name}")
        return err.details()
    fail(f"{name}: succeeded, want {code.name}")


def verify_locally(token, jwks):
    """Verifies an access token with the published keys only, as a resource server would."""
    header = jwt.get_unverified_header(token)
    expect(header.get("typ") == "at+jwt", f"header typ is {header.get('typ')!r}, want 'at+jwt'")
    expect(header.get("kid") in jwks, f"header kid {header.get('kid')!r} is not in GetJwks")
    key = jwks[header["kid"]]
    # Never take the algorithm from the token: each key verifies with its own algorithm only
    # (EdDSA, ES256 or RS256), and PyJWT checks signature, exp, iss, aud.
    expect(header.get("alg") == key.algorithm_name,
           f"header alg is {header.get('alg')!r}, its key's is {key.algorithm_name!r}")
    try:
        return jwt.decode(token, key, algorithms=[key.algorithm_name], issuer=ISSUER,
                          audience=AUDIENCE,
                          options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
    except jwt.InvalidTokenError as err:
        fail(f"local verification: {type(err).__name__}: {err}")


def verify_over_http(token, http_url):
    """Verifies an access token as a gateway or resource server that speaks only HTTP does: the
    discovery document names the key set, PyJWKClient fetches it and picks the token's key. The
    algorithms allowed are the issuer's published ones, never the token's say-so."""
    discovery_url = f"{http_url.rstrip('/')}/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery_url, timeout=TIMEOUT) as response:
        discovery = json.load(response)
    algorithms = discovery["id_token_signing_alg_values_supported"]
    keys = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=True, timeout=TIMEOUT)
    try:
        key = keys.get_signing_key_from_jwt(token)
        expect(key.algorithm_name in algorithms, f"key algorithm {key.algorithm_name} not published")
        claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], issuer=ISSUER,
                            audience=AUDIENCE,
                            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
    except jwt.PyJWTError as err:
        fail(f"verification over HTTP: {type(err).__name__}: {err}")
    return claims, key.algorithm_name, discovery["jwks_uri"]


def has_role(claims, role):
    """Whether verified token claims name `role` (tokens from before roles existed have none)."""
    return role in claims.get("roles", [])


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("IDENTITY_ADDR", "127.0.0.1:50051")
    http_url = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("IDENTITY_HTTP_URL")
    channel = grpc.insecure_channel(addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        fail(f"no gRPC server at {addr}")
    auth = auth_grpc.AuthServiceStub(channel)
    tokens_api = token_grpc.TokenServiceStub(channel)
    users = user_grpc.UserServiceStub(channel)

    email = f"py-client-{uuid.uuid4().hex[:12]}@example.com"
    user = rpc("Signup", auth.Signup, auth_pb.SignupRequest(
        email=email, password=PASSWORD, full_name="Python Client")).user
    expect(user.id and user.email == email and user.is_active, f"unexpected user: {show(user)}")
    ok("signup", f"{user.id} {email}")

    login = rpc("Login", auth.Login, auth_pb.LoginRequest(email=email, password=PASSWORD))
    tokens = login.tokens
    expect(tokens.token_type == "Bearer", f"token_type is {tokens.token_type!r}")
    expect(tokens.access_token and tokens.refresh_token, "login returned an empty token")
    expect(tokens.expires_in > 0 and tokens.refresh_expires_in > 0, "non-positive lifetimes")
    expect(login.user.id == user.id, "login returned another user")
    ok("login", f"access token expires in {tokens.expires_in}s")

    result = rpc("ValidateToken", tokens_api.ValidateToken,
                 token_pb.ValidateTokenRequest(access_token=tokens.access_token))
    claims = result.claims
    expect(result.active, "ValidateToken says the fresh access token is not active")
    expect((claims.subject, claims.email, claims.full_name) == (user.id, email, "Python Client"),
           f"claims do not match the user: {show(claims)}")
    expect(claims.issuer == ISSUER and AUDIENCE in claims.audience,
           f"claims iss {claims.issuer!r}, aud {list(claims.audience)}; want {ISSUER!r}")
    expect(claims.session_id and claims.token_id, "claims lack session_id or token_id")
    expect(claims.expires_at.seconds > time.time(), "claims expires_at is in the past")
    ok("validate", f"active, session {claims.session_id}")

    keys = rpc("GetJwks", tokens_api.GetJwks, token_pb.GetJwksRequest()).keys
    expect(keys, "GetJwks returned no keys")
    jwks = {key.kid: jwt.PyJWK(MessageToDict(key, preserving_proto_field_name=True))
            for key in keys}
    ok("jwks", f"{len(jwks)} key(s): {', '.join(jwks)}")

    local = verify_locally(tokens.access_token, jwks)
    expect(local["sub"] == user.id and local["sid"] == claims.session_id
           and local["jti"] == claims.token_id and local["email"] == email,
           f"local claims differ from ValidateToken: {local}")
    algorithm = jwt.get_unverified_header(tokens.access_token)["alg"]
    ok("verify locally", f"{algorithm} signature, iss, aud, exp ok (jti {local['jti']})")

    # Roles: a list of names in the token (`roles` claim) and in ValidateToken's claims. A new
    # account holds none; `identity user grant-role EMAIL ROLE` or AdminService.SetRoles add some,
    # from the next refresh on.
    expect(local.get("roles", []) == list(claims.roles),
           f"roles differ: token {local.get('roles')}, ValidateToken {list(claims.roles)}")
    expect(not has_role(local, "billing.read"), "a new account holds no roles")
    ok("roles", f"{list(claims.roles)} (has billing.read: {has_role(local, 'billing.read')})")

    if http_url:
        remote, algorithm, jwks_uri = verify_over_http(tokens.access_token, http_url)
        expect(remote["sub"] == user.id and remote["jti"] == claims.token_id,
               f"claims verified over HTTP differ from ValidateToken: {remote}")
        ok("verify over http", f"PyJWKClient({jwks_uri}): {algorithm} signature ok")

    bearer = [("authorization", f"Bearer {tokens.access_token}")]
    me = rpc("GetCurrentUser", users.GetCurrentUser, user_pb.GetCurrentUserRequest(),
             metadata=bearer).user
    expect(me.id == user.id and me.email == email, f"GetCurrentUser returned {show(me)}")
    ok("current user", f"{me.id} {me.full_name}")

    new = rpc("RefreshToken", auth.RefreshToken,
              auth_pb.RefreshTokenRequest(refresh_token=tokens.refresh_token)).tokens
    expect(new.access_token != tokens.access_token, "refresh returned the same access token")
    expect(new.refresh_token != tokens.refresh_token, "refresh token was not rotated")
    refreshed = verify_locally(new.access_token, jwks)
    expect(refreshed["sub"] == user.id and refreshed["sid"] == claims.session_id,
           f"refreshed token is for another user or session: {refreshed}")
    ok("refresh", "new tokens, same session, new access token verifies locally")

    rpc("Logout", auth.Logout, auth_pb.LogoutRequest(refresh_token=new.refresh_token))
    ok("logout")

    after = rpc("ValidateToken", tokens_api.ValidateToken,
                token_pb.ValidateTokenRequest(access_token=new.access_token))
    expect(not after.active, "ValidateToken still says active after logout")
    ok("after logout", "refreshed access token is no longer active")

    second_factor(auth, tokens_api, users, jwks, email)
    print(f"python client: all steps passed against {addr}")


def second_factor(auth, tokens_api, users, jwks, email):
    """TOTP enrolment, a login through the challenge, a replayed code, a recovery code, step-up."""
    tokens = rpc("Login", auth.Login, auth_pb.LoginRequest(email=email, password=PASSWORD)).tokens
    bearer = [("authorization", f"Bearer {tokens.access_token}")]
    started = rpc("BeginTotpEnrollment", users.BeginTotpEnrollment,
                  user_pb.BeginTotpEnrollmentRequest(), metadata=bearer)
    uri = started.otpauth_uri
    expect(uri.startswith("otpauth://totp/"), "BeginTotpEnrollment returned no otpauth://totp/ URI")
    expect(started.qr_code_png.startswith(b"\x89PNG\r\n\x1a\n"), "qr_code_png is not a PNG image")
    try:
        app = Authenticator(uri)
    except ValueError as err:
        fail(f"BeginTotpEnrollment: {err}")
    expect(app.totp.secret == started.secret, "the URI's secret differs from the base32 secret")
    expect(app.totp.name == email and app.totp.issuer == ISSUER,
           f"URI names {app.totp.name!r} of {app.totp.issuer!r}, want {email!r} of {ISSUER!r}")
    ok("totp begin", f"otpauth URI for {app.totp.name}, {len(started.qr_code_png)}-byte QR code")

    confirmed = rpc("ConfirmTotpEnrollment", users.ConfirmTotpEnrollment,
                    user_pb.ConfirmTotpEnrollmentRequest(totp_code=app.fresh_code()), metadata=bearer)
    recovery = list(confirmed.recovery_codes)
    expect(len(recovery) == 10 and len(set(recovery)) == 10, f"{len(recovery)} recovery codes, want 10")
    ok("totp confirm", "pyotp's code accepted, 10 recovery codes")

    def challenge():
        login = rpc("Login", auth.Login, auth_pb.LoginRequest(email=email, password=PASSWORD))
        expect(not login.HasField("tokens") and not login.HasField("user"),
               "Login with a second factor returned tokens")
        expect(login.HasField("mfa_challenge") and login.mfa_challenge.challenge, "Login gave no challenge")
        allowed = set(login.mfa_challenge.allowed_factors)
        expect(allowed == {auth_pb.MFA_FACTOR_TOTP, auth_pb.MFA_FACTOR_RECOVERY_CODE},
               f"allowed factors {sorted(allowed)}")
        return login.mfa_challenge.challenge

    def complete(handle, **factor):
        request = auth_pb.CompleteLoginRequest(challenge=handle, second_factor=types_pb.SecondFactor(**factor))
        return auth.CompleteLogin, request

    handle = challenge()
    ok("login", "mfa_challenge, no tokens")
    code = app.fresh_code()
    done = rpc("CompleteLogin", *complete(handle, totp_code=code))
    local = verify_locally(done.tokens.access_token, jwks)
    expect({"pwd", "otp"} <= set(local.get("amr", [])), f"amr is {local.get('amr')}, want pwd and otp")
    remote = rpc("ValidateToken", tokens_api.ValidateToken,
                 token_pb.ValidateTokenRequest(access_token=done.tokens.access_token)).claims
    expect(list(remote.amr) == ["pwd", "otp"] and remote.auth_time.seconds == local["auth_time"],
           f"ValidateToken: amr {list(remote.amr)}, auth_time {remote.auth_time.seconds}")
    ok("complete login", f"tokens, amr {local['amr']}, auth_time {local['auth_time']}")

    # The same code again, on a new challenge: refused (each time step is accepted once).
    handle = challenge()
    refused("CompleteLogin (replayed code)", *complete(handle, totp_code=code),
            code=grpc.StatusCode.UNAUTHENTICATED)
    ok("replayed code", "UNAUTHENTICATED")
    # The challenge survives a wrong code: a recovery code completes it, once.
    done = rpc("CompleteLogin", *complete(handle, recovery_code=recovery[0]))
    expect("otp" in verify_locally(done.tokens.access_token, jwks).get("amr", []), "no otp in amr")
    refused("CompleteLogin (used recovery code)", *complete(challenge(), recovery_code=recovery[0]),
            code=grpc.StatusCode.UNAUTHENTICATED)
    ok("recovery code", "accepted once, then UNAUTHENTICATED")

    # Step-up: the session that enrolled was authenticated with the password alone.
    before = verify_locally(tokens.access_token, jwks)
    expect(before.get("amr") == ["pwd"], f"the enrolling session's amr is {before.get('amr')}")
    stepped = rpc("StepUp", users.StepUp,
                  user_pb.StepUpRequest(second_factor=types_pb.SecondFactor(totp_code=app.fresh_code())),
                  metadata=bearer)
    after = verify_locally(stepped.access_token, jwks)
    expect(after["sid"] == before["sid"], "StepUp returned a token of another session")
    expect(after.get("amr") == ["pwd", "otp"] and after["auth_time"] >= before["auth_time"],
           f"after StepUp: amr {after.get('amr')}, auth_time {after['auth_time']} (was {before['auth_time']})")
    ok("step up", f"same session, amr {after['amr']}, auth_time {after['auth_time']}")


if __name__ == "__main__":
    main()
