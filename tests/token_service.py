#!/usr/bin/python3
"""A registry token service, for the tests of bearer-token registries (Docker Hub, Quay, GHCR and
docker_auth work this way). It stands in for such a service, which Debian does not package; the
registry that checks its tokens is the real one (distribution's `auth: token`).

Makes an ECDSA P-256 key and a self-signed certificate for it, writes the certificate to CERT
(the registry's `rootcertbundle`), prints its port on the first line of stdout, then serves
GET /token on 127.0.0.1 until killed, as distribution's token specification describes:

- with HTTP Basic credentials: USER with PASSWORD gets every action asked for; anything else is
  refused with 401;
- anonymously: only `pull`, and only for repositories under PUBLIC/.

Tokens are JWTs signed with ES256, the certificate in their `x5c` header. Each request is logged
to LOG as one JSON line: the account (or null) and the access granted.

  token_service.py CERT LOG --user USER --password PASSWORD [--public PREFIX]
"""

import argparse
import base64
import datetime
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ISSUER = "sysctr-test-tokens"
SERVICE = "sysctr-test-registry"
LIFETIME = 300


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_identity():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign_token(key, cert, account, access):
    now = int(time.time())
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    claims = {
        "iss": ISSUER,
        "sub": account or "",
        "aud": SERVICE,
        "exp": now + LIFETIME,
        "nbf": now - 10,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def granted(scopes, account, public):
    """The access entries of a token: what was asked for, as far as `account` may have it."""
    access = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) != 3 or parts[0] != "repository":
            continue
        _, name, actions = parts
        wanted = [a for a in actions.split(",") if a]
        if account is None:
            wanted = [a for a in wanted if a == "pull" and name.startswith(public + "/")]
        if wanted:
            access.append({"type": "repository", "name": name, "actions": wanted})
    return access


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cert")
    parser.add_argument("log")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--public", default="public")
    args = parser.parse_args()

    key, cert = make_identity()
    with open(args.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    log_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                return self.answer(404, {"error": "not found"})
            query = parse_qs(url.query)
            account = None
            authorization = self.headers.get("Authorization", "")
            if authorization.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
                except ValueError:
                    user, password = "", ""
                if (user, password) != (args.user, args.password):
                    with log_lock, open(args.log, "a") as log:
                        log.write(json.dumps({"account": user, "refused": True}) + "\n")
                    return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong user name or password"}]})
                account = user
            access = granted(query.get("scope", []), account, args.public)
            with log_lock, open(args.log, "a") as log:
                log.write(json.dumps({"account": account, "access": access}) + "\n")
            token = sign_token(key, cert, account, access)
            self.answer(200, {"token": token, "access_token": token, "expires_in": LIFETIME})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
