"""Against the real aegis-server the tap runner started (test/clients/python_client_suite.ts):
tokens it issued, verified offline here, and the same tokens sent to its /validate: the
codes must be the same."""

from __future__ import annotations

import os
import unittest
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aegis_license import InsecureUrlError, InvalidRequestError, KeySet, load_jwks, validate_online, verify_license_token
from aegis_license.jws import b64url_decode, b64url_encode

from ._support import admin, env, parts, seg, server_validate, sign_hs256

MODULE = "biz4a_payroll_drc"


class AgainstServer(unittest.TestCase):
    def setUp(self) -> None:
        self.url = env("SERVER_URL")
        self.cache = Path(env("AEGIS_TEST_CACHE_DIR"))
        self.keys = load_jwks(self.url, cache_dir=self.cache)

    def same_as_server(self, token: str, expected: str, module: str = MODULE, version: str = "17.0") -> None:
        offline = verify_license_token(token, jwks=self.keys, module_name=module, version=version)
        status, body = server_validate(self.url, {"token": token, "module_name": module, "odoo_version": version})
        self.assertEqual(status, 200, body)
        self.assertEqual((offline.code, body["code"]), (expected, expected), offline.message)
        self.assertEqual(offline.ok, body["valid"])

    def test_valid_token(self) -> None:
        token = env("TOKEN_VALID")
        for version in ("17", "17.0", "17.0.3", "18.0"):
            self.same_as_server(token, "VALID", version=version)
        r = verify_license_token(token, jwks=self.keys, module_name=MODULE, version=17)
        self.assertTrue(r.ok)
        assert r.claims is not None
        self.assertEqual(r.claims["customer"], {"id": "CUST-PY-1", "name": "Acme Corp"})
        self.assertNotIn("exp", r.claims, "a perpetual token has no exp")

    def test_tampered_payload(self) -> None:
        h, p, s = env("TOKEN_VALID").split(".")
        _, payload, _ = parts(env("TOKEN_VALID"))
        for change in ({"module": {"technical_name": MODULE, "allowed_major_versions": ["16", "17", "18"]}}, {"exp": 1}, {"license_id": "x"}):
            self.same_as_server(f"{h}.{seg({**payload, **change})}.{s}", "SIGNATURE_INVALID")

    def test_tampered_signature(self) -> None:
        h, p, s = env("TOKEN_VALID").split(".")
        sig = bytearray(b64url_decode(s))
        sig[10] ^= 0x01
        self.same_as_server(f"{h}.{p}.{b64url_encode(bytes(sig))}", "SIGNATURE_INVALID")

    def test_alg_none_and_hs256_with_the_public_key(self) -> None:
        header, payload, _ = parts(env("TOKEN_VALID"))
        self.same_as_server(f"{seg({**header, 'alg': 'none'})}.{seg(payload)}.", "MALFORMED")
        self.same_as_server(f"{seg({**header, 'alg': 'none'})}.{seg(payload)}.AA", "SIGNATURE_INVALID")
        key = self.keys[header["kid"]]
        for secret in (key.public_bytes(Encoding.Raw, PublicFormat.Raw), key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)):
            self.same_as_server(sign_hs256(secret, {**header, "alg": "HS256"}, payload), "SIGNATURE_INVALID")

    def test_unknown_kid(self) -> None:
        header, payload, s = parts(env("TOKEN_VALID"))
        self.same_as_server(f"{seg({**header, 'kid': 'retired-or-invented'})}.{seg(payload)}.{s}", "UNKNOWN_KEY")

    def test_expired(self) -> None:
        self.same_as_server(env("TOKEN_EXPIRED"), "EXPIRED")

    def test_module_mismatch_and_version_not_allowed(self) -> None:
        self.same_as_server(env("TOKEN_VALID"), "MODULE_MISMATCH", module="other_module")
        self.same_as_server(env("TOKEN_VALID"), "VERSION_NOT_ALLOWED", version="16.0")

    def test_wrong_audience_machine_and_kernel_tokens(self) -> None:
        self.same_as_server(env("TOKEN_KERNEL"), "WRONG_AUDIENCE")
        # The server validates machine tokens too and refuses this one for the module
        # (its module is aegis-agent); a module accepts module license tokens only.
        offline = verify_license_token(env("TOKEN_MACHINE"), jwks=self.keys, module_name=MODULE, version="17.0")
        self.assertEqual((offline.ok, offline.code), (False, "WRONG_AUDIENCE"))
        status, body = server_validate(self.url, {"token": env("TOKEN_MACHINE"), "module_name": MODULE, "odoo_version": "17.0"})
        self.assertEqual((status, body["valid"], body["code"]), (200, False, "MODULE_MISMATCH"))

    def test_malformed_placeholder(self) -> None:
        self.same_as_server("eyJhbGc...", "MALFORMED")

    def test_hostile_versions_refused_as_the_server_refuses_them(self) -> None:
        for version in ("17; DROP", "", "999999999999", "17\n", "17.0.0.0.0"):
            status, body = server_validate(self.url, {"token": env("TOKEN_VALID"), "module_name": MODULE, "odoo_version": version})
            self.assertEqual(status, 400, version)
            with self.assertRaises(InvalidRequestError) as cm:
                verify_license_token(env("TOKEN_VALID"), jwks=self.keys, module_name=MODULE, version=version)
            self.assertEqual(cm.exception.code, body["error"]["code"], version)
            with self.assertRaises(InvalidRequestError):
                validate_online(self.url, env("TOKEN_VALID"), MODULE, version, cache_dir=self.cache)

    def test_plain_http_to_another_host_is_refused(self) -> None:
        with self.assertRaises(InsecureUrlError):
            load_jwks("http://license.example.com", cache_dir=self.cache)

    def test_revoked_via_validate_online(self) -> None:
        token = env("TOKEN_REVOKE")
        first = validate_online(self.url, token, MODULE, "17.0", cache_dir=self.cache)
        self.assertEqual((first.ok, first.code, first.source), (True, "VALID", "server"))
        again = validate_online(self.url, token, MODULE, "17.0", cache_dir=self.cache)
        self.assertEqual((again.code, again.source), ("VALID", "cache"), "a fresh answer is reused")
        status, body = admin(self.url, env("ADMIN_KEY"), "DELETE", f"/api/v1/licenses/{env('LICENSE_REVOKE_ID')}/revoke", {"reason": "refund"})
        self.assertEqual(status, 200, body)
        self.assertTrue(verify_license_token(token, jwks=self.keys, module_name=MODULE, version="17.0").ok, "offline alone cannot know")
        revoked = validate_online(self.url, token, MODULE, "17.0", cache_dir=self.cache, cache_ttl=0)
        self.assertEqual((revoked.ok, revoked.code, revoked.source), (False, "REVOKED", "server"))
        # Asked for another version, the recorded revocation answers without the server.
        other = validate_online(self.url, token, MODULE, "18", cache_dir=self.cache)
        self.assertEqual((other.ok, other.code), (False, "REVOKED"))

    def test_valid_online(self) -> None:
        r = validate_online(self.url, env("TOKEN_VALID"), MODULE, "17.0", cache_dir=self.cache, cache_ttl=0)
        self.assertEqual((r.ok, r.code, r.source), (True, "VALID", "server"))

    def test_jwks_cache_written_private(self) -> None:
        path = self.cache / "jwks.json"
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertIsInstance(self.keys, KeySet)


if __name__ == "__main__":
    unittest.main()
