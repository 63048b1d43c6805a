"""After the tap runner stopped the server: the cached key set verifies offline, online
validation falls back to offline verification, and a revocation seen while the server was
up is never turned back into VALID."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

from aegis_license import InsecureCacheError, JwksUnavailableError, load_jwks, validate_online, verify_license_token

from ._support import env

MODULE = "biz4a_payroll_drc"


class ServerStopped(unittest.TestCase):
    def setUp(self) -> None:
        self.url = env("SERVER_URL")
        self.cache = Path(env("AEGIS_TEST_CACHE_DIR"))

    def test_jwks_cache_used_offline(self) -> None:
        keys = load_jwks(self.url, cache_dir=self.cache, max_age=0)
        self.assertTrue(verify_license_token(env("TOKEN_VALID"), jwks=keys, module_name=MODULE, version="17").ok)

    def test_offline_fallback(self) -> None:
        r = validate_online(self.url, env("TOKEN_VALID"), MODULE, "17.0", cache_dir=self.cache, cache_ttl=0)
        self.assertEqual((r.ok, r.code, r.source), (True, "VALID", "offline"))
        r = validate_online(self.url, env("TOKEN_VALID"), MODULE, "16.0", cache_dir=self.cache, cache_ttl=0)
        self.assertEqual(r.code, "VERSION_NOT_ALLOWED")
        r = validate_online(self.url, env("TOKEN_EXPIRED"), MODULE, "17.0", cache_dir=self.cache, cache_ttl=0)
        self.assertEqual(r.code, "EXPIRED")

    def test_revoked_stays_revoked(self) -> None:
        for version in ("17.0", "18", "17"):
            r = validate_online(self.url, env("TOKEN_REVOKE"), MODULE, version, cache_dir=self.cache, cache_ttl=0)
            self.assertEqual((r.ok, r.code), (False, "REVOKED"), version)

    def test_no_cache_no_server(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(JwksUnavailableError):
                load_jwks(self.url, cache_dir=d)
            with self.assertRaises(JwksUnavailableError):
                validate_online(self.url, env("TOKEN_VALID"), MODULE, "17", cache_dir=d)

    def test_tampered_cache_is_refused(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(self.cache / "jwks.json", Path(d) / "jwks.json")
            os.chmod(Path(d) / "jwks.json", 0o646)
            with self.assertRaises(InsecureCacheError):
                load_jwks(self.url, cache_dir=d)


if __name__ == "__main__":
    unittest.main()
