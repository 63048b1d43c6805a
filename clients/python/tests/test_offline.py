"""Offline verification against keys made here (real Ed25519, no server): the checks the
server cannot be made to exercise (an instance fingerprint in a module token, time
edges), hostile inputs, the key set rules and the cache files."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
import unittest
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import aegis_license
from aegis_license import InsecureCacheError, InvalidRequestError, JwksError, KeySet, verify_license_token
from aegis_license._files import atomic_write, read_private
from aegis_license.jws import b64url_encode

from ._support import jwk_of, module_claims, raw_public, seg, sign_ed25519, sign_hs256

HEADER = {"alg": "EdDSA", "typ": "JWT", "kid": "k1"}
HOSTILE_VERSIONS = ["17; DROP", "", "999999999999", "17\n", " 17", "17.", "1.2.3.4.5", "\u0661\u0667", "1_7", "-17", "17.0a", True, 17.5]


class OfflineVerification(unittest.TestCase):
    def setUp(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.keys = KeySet({"k1": raw_public(self.key)})
        self.now = int(time.time())

    def verify(self, token: str, **kw: object) -> aegis_license.Result:
        return verify_license_token(token, jwks=self.keys, **kw)  # type: ignore[arg-type]

    def test_valid_token_and_version_forms(self) -> None:
        token = sign_ed25519(self.key, HEADER, module_claims(self.now))
        for version in (17, "17", "17.0", "17.0.3", "017", 18):
            r = self.verify(token, module_name="biz4a_payroll_drc", version=version)
            self.assertEqual((r.ok, r.code), (True, "VALID"), version)
        r = self.verify(token, module_name="biz4a_payroll_drc", version="16.0")
        self.assertEqual(r.code, "VERSION_NOT_ALLOWED")
        self.assertEqual(self.verify(token, module_name="other_module").code, "MODULE_MISMATCH")

    def test_no_allowed_versions_means_any(self) -> None:
        claims = module_claims(self.now, module={"technical_name": "m", "allowed_major_versions": []})
        self.assertTrue(self.verify(sign_ed25519(self.key, HEADER, claims), version="9").ok)

    def test_hostile_versions_and_module_names_are_refused_like_the_server(self) -> None:
        token = sign_ed25519(self.key, HEADER, module_claims(self.now))
        for version in HOSTILE_VERSIONS:
            with self.assertRaises(InvalidRequestError, msg=repr(version)) as cm:
                self.verify(token, version=version)
            self.assertEqual((cm.exception.code, cm.exception.field), ("VALIDATION_FAILED", "odoo_version"))
        for name in ("Biz", "", "a b", "mod\n", "x" * 129, "1mod", "m\u00e9"):
            with self.assertRaises(InvalidRequestError) as cm:
                self.verify(token, module_name=name)
            self.assertEqual(cm.exception.field, "module_name")

    def test_alg_none_hs256_and_crit_are_refused(self) -> None:
        claims = module_claims(self.now)
        none = f"{seg({'alg': 'none', 'kid': 'k1'})}.{seg(claims)}.x"
        self.assertEqual(self.verify(none).code, "SIGNATURE_INVALID")
        # HMAC keyed with the public key: the classic confusion of a verifier that lets the token pick the algorithm.
        hs = sign_hs256(raw_public(self.key), {"alg": "HS256", "kid": "k1"}, claims)
        self.assertEqual(self.verify(hs).code, "SIGNATURE_INVALID")
        for extra in ({"crit": ["exp"]}, {"jku": "https://evil/jwks"}, {"jwk": jwk_of(self.key, "k1")}, {"x5u": "https://evil"}):
            t = sign_ed25519(self.key, {**HEADER, **extra}, claims)
            self.assertEqual(self.verify(t).code, "SIGNATURE_INVALID", extra)

    def test_malformed_tokens(self) -> None:
        good = sign_ed25519(self.key, HEADER, module_claims(self.now))
        h, p, s = good.split(".")
        nan_payload = b64url_encode(b'{"iat": NaN}')
        not_utf8 = b64url_encode(b"\xff\xfe")
        for bad in ("", "eyJhbGc...", f"{h}.{p}", f"{h}.{p}.", f"{h}.{p}.{s}.x", f"{h}!.{p}.{s}", f"{h}.{b64url_encode(b'[1]')}.{s}",
                    f"{h}.{b64url_encode(b'not json')}.{s}", f"{h}.{nan_payload}.{s}", f"{h}.{not_utf8}.{s}", "a" * 20000):
            self.assertEqual(self.verify(bad).code, "MALFORMED", bad[:40])
        self.assertEqual(self.verify(f"{h}.{p}.{s[:-4]}").code, "SIGNATURE_INVALID")

    def test_unknown_kid_and_key_of_another_signer(self) -> None:
        claims = module_claims(self.now)
        self.assertEqual(self.verify(sign_ed25519(self.key, {**HEADER, "kid": "k2"}, claims)).code, "UNKNOWN_KEY")
        self.assertEqual(self.verify(sign_ed25519(self.key, {"alg": "EdDSA"}, claims)).code, "UNKNOWN_KEY")
        other = Ed25519PrivateKey.generate()
        self.assertEqual(self.verify(sign_ed25519(other, HEADER, claims)).code, "SIGNATURE_INVALID")

    def test_time_claims_with_leeway(self) -> None:
        exp = self.now - 30
        token = sign_ed25519(self.key, HEADER, module_claims(self.now - 100, exp=exp))
        self.assertTrue(self.verify(token, clock_skew=60).ok, "30 s past exp is within 60 s of skew")
        self.assertEqual(self.verify(token, clock_skew=0).code, "EXPIRED")
        self.assertEqual(self.verify(token, now=exp + 61).code, "EXPIRED")
        null_exp = sign_ed25519(self.key, HEADER, module_claims(self.now, exp=None))
        self.assertEqual(self.verify(null_exp).code, "EXPIRED", "exp present but not a number")
        future = sign_ed25519(self.key, HEADER, module_claims(self.now + 3600))
        self.assertEqual(self.verify(future).code, "NOT_YET_VALID")
        bool_iat = sign_ed25519(self.key, HEADER, module_claims(True))  # type: ignore[arg-type]
        self.assertEqual(self.verify(bool_iat).code, "MALFORMED")

    def test_grace_claim_answers_valid_in_grace_until_its_end(self) -> None:
        exp = self.now - 600
        token = sign_ed25519(self.key, HEADER, module_claims(self.now - 3600, exp=exp, grace_seconds=3600))
        r = self.verify(token, clock_skew=0)
        self.assertTrue(r.ok, "within exp + grace_seconds the token is still good")
        self.assertEqual(r.code, "VALID_IN_GRACE")
        self.assertEqual(r.grace_ends_at, float(exp + 3600))
        self.assertEqual(self.verify(token, now=exp + 3600, clock_skew=0).code, "EXPIRED", "at the grace end: EXPIRED")
        self.assertEqual(self.verify(token, now=exp - 10, clock_skew=0).code, "VALID", "before exp: VALID")
        no_grace = sign_ed25519(self.key, HEADER, module_claims(self.now - 3600, exp=exp))
        self.assertEqual(self.verify(no_grace, clock_skew=0).code, "EXPIRED", "no grace claim, no grace")
        forged = sign_ed25519(Ed25519PrivateKey.generate(), HEADER, module_claims(self.now - 3600, exp=exp, grace_seconds=10**9))
        self.assertEqual(self.verify(forged, clock_skew=0).code, "SIGNATURE_INVALID", "a grace claim added by another signer is refused")

    def test_audience_and_claims(self) -> None:
        for aud in ("aegis-license", ["aegis-module-license"], None):
            t = sign_ed25519(self.key, HEADER, module_claims(self.now, aud=aud))
            self.assertEqual(self.verify(t).code, "WRONG_AUDIENCE", aud)
        self.assertEqual(self.verify(sign_ed25519(self.key, HEADER, module_claims(self.now, module={}))).code, "MALFORMED")
        self.assertEqual(self.verify(sign_ed25519(self.key, HEADER, module_claims(self.now, license_id=7))).code, "MALFORMED")

    def test_fingerprint_binding(self) -> None:
        bound = sign_ed25519(self.key, HEADER, module_claims(self.now, hwid="hw-A"))
        self.assertTrue(self.verify(bound, fingerprint="hw-A").ok)
        self.assertEqual(self.verify(bound, fingerprint="hw-B").code, "HWID_MISMATCH")
        self.assertEqual(self.verify(bound).code, "HWID_MISMATCH", "a bound token needs the fingerprint")
        unbound = sign_ed25519(self.key, HEADER, module_claims(self.now))
        self.assertEqual(self.verify(unbound, fingerprint="hw-A").code, "HWID_MISMATCH", "as the server: no binding to check")

    def test_revoked_list(self) -> None:
        token = sign_ed25519(self.key, HEADER, module_claims(self.now))
        self.assertEqual(self.verify(token, revoked={"lic-1"}).code, "REVOKED")

    def test_every_code_answered_is_the_servers(self) -> None:
        with open(Path(aegis_license.__file__).parent / "codes.json", encoding="utf-8") as f:
            server_codes = json.load(f)["validation_codes"]
        self.assertEqual(list(aegis_license.VALIDATION_CODES), server_codes)


class KeySets(unittest.TestCase):
    def test_refuses_jwks_without_usable_ed25519_keys(self) -> None:
        key = Ed25519PrivateKey.generate()
        for doc in ({}, {"keys": []}, {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "kid": "r"}]},
                    {"keys": [{"kty": "OKP", "crv": "X25519", "x": jwk_of(key, "a")["x"], "kid": "a"}]},
                    {"keys": [{**jwk_of(key, "a"), "use": "enc"}]}, {"keys": [{**jwk_of(key, "a"), "alg": "HS256"}]},
                    {"keys": [{**jwk_of(key, "a"), "x": "AAAA"}]}, {"keys": [{**jwk_of(key, "a"), "kid": ""}]}, []):
            with self.assertRaises(JwksError, msg=json.dumps(doc)):
                KeySet.from_jwks(doc)
        with self.assertRaises(JwksError):
            KeySet.from_jwks({"keys": [jwk_of(key, "a"), jwk_of(Ed25519PrivateKey.generate(), "a")]})
        with self.assertRaises(JwksError):
            KeySet.from_jwks({"keys": [{**jwk_of(key, "a"), "d": "secret"}]})
        mixed = KeySet.from_jwks({"keys": [{"kty": "RSA", "kid": "r"}, jwk_of(key, "a")]})
        self.assertEqual(list(mixed), ["a"])


class CacheFiles(unittest.TestCase):
    def test_atomic_write_is_0600_and_leaves_no_temp_file(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "sub" / "jwks.json"
            atomic_write(path, b"one")
            atomic_write(path, b"two")
            self.assertEqual(read_private(path), b"two")
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(path.parent.stat().st_mode), 0o700)
            self.assertEqual(os.listdir(path.parent), ["jwks.json"])

    def test_cache_others_may_write_is_refused(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "jwks.json"
            atomic_write(path, b"{}")
            os.chmod(path, 0o666)
            with self.assertRaises(InsecureCacheError):
                read_private(path)
            link = Path(d) / "link.json"
            os.chmod(path, 0o600)
            link.symlink_to(path)
            with self.assertRaises(InsecureCacheError):
                read_private(link)


if __name__ == "__main__":
    unittest.main()
