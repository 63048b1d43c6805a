"""Helpers for the tests: forging tokens (with real keys), and asking the real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import unittest
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aegis_license.jws import b64url_decode, b64url_encode


def seg(obj: Any) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def parts(token: str) -> Tuple[Dict[str, Any], Dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def sign_ed25519(key: Ed25519PrivateKey, header: Dict[str, Any], payload: Dict[str, Any]) -> str:
    signing_input = f"{seg(header)}.{seg(payload)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def sign_hs256(secret: bytes, header: Dict[str, Any], payload: Dict[str, Any]) -> str:
    signing_input = f"{seg(header)}.{seg(payload)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def jwk_of(key: Ed25519PrivateKey, kid: str) -> Dict[str, Any]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw_public(key)), "kid": kid, "alg": "EdDSA", "use": "sig"}


def module_claims(now: int, **over: Any) -> Dict[str, Any]:
    claims: Dict[str, Any] = {
        "jti": "j-1",
        "iss": "aegis-server",
        "aud": "aegis-module-license",
        "sub": "lic-1",
        "iat": now,
        "customer": {"id": "CUST-001", "name": "Acme Corp"},
        "module": {"technical_name": "biz4a_payroll_drc", "allowed_major_versions": ["17", "18"]},
        "license_type": "perpetual",
        "license_id": "lic-1",
        "tier": "basic",
        "features": [],
    }
    claims.update(over)
    return claims


def env(name: str) -> str:
    """An environment variable the tap runner sets; the test is skipped without it (and the
    runner fails a run that skipped anything)."""
    value = os.environ.get(name)
    if not value:
        raise unittest.SkipTest(f"{name} is not set: run through test/clients/python_client_suite.ts")
    return value


def server_validate(server_url: str, body: Dict[str, Any]) -> Tuple[int, Any]:
    """POST /api/v1/licenses/validate on the real server, straight (no package code)."""
    req = urllib.request.Request(
        server_url + "/api/v1/licenses/validate",
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def admin(server_url: str, key: str, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
    req = urllib.request.Request(
        server_url + path,
        data=None if body is None else json.dumps(body).encode("utf-8"),
        method=method,
        headers={"content-type": "application/json", "x-api-key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
