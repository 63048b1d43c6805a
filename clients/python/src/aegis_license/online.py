"""Online validation: the server's verdict (which alone knows about revocation), cached,
with offline verification when the server cannot be reached.

The rule, for one (token, module, version):

1. The token is verified offline first. A token that fails offline fails with that
   code, without asking the server (the server would refuse it too).
2. A cached server answer younger than ``cache_ttl`` is the verdict (``source="cache"``).
3. Otherwise the server is asked; its answer is the verdict (``source="server"``) and is
   cached. A REVOKED answer also records the license as revoked, for any module and version.
4. When the server cannot be reached (connection refused, timeout, 5xx, 429): a license
   recorded as revoked stays REVOKED, and a cached refusal of any age stays that refusal.
   A cached VALID, or no answer at all, gives the offline verdict (``source="offline"``).
   So the cache can turn nothing into VALID that offline verification did not.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from datetime import datetime
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

from . import codes
from ._files import PathLike, atomic_write, ensure_private_dir, read_private
from ._http import Unreachable, base_url, request_json
from .errors import ServerAnswerError
from .jwks import DEFAULT_JWKS_MAX_AGE, KeyLike, KeySet, default_cache_dir, load_jwks
from .verify import Result, Version, check_module_name, check_version, verify_license_token

VALIDATE_PATH = "/api/v1/licenses/validate"

#: Answers kept in the cache; the oldest go first (recorded revocations are all kept).
MAX_CACHED_ANSWERS = 256


def _answer_key(token: str, module_name: str, version: str) -> str:
    return hashlib.sha256(f"{token}\n{module_name}\n{version}".encode("utf-8")).hexdigest()


class _AnswerCache:
    """``answers.json`` in the cache directory, read and rewritten under a lock so two
    processes cannot lose each other's revocations."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "answers.json"
        self.lock_path = directory / "answers.lock"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_private_dir(self.path.parent)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> Dict[str, Any]:
        raw = read_private(self.path)
        empty: Dict[str, Any] = {"answers": {}, "revoked": {}}
        if raw is None:
            return empty
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return empty
        if not isinstance(doc, dict) or not isinstance(doc.get("answers"), dict) or not isinstance(doc.get("revoked"), dict):
            return empty
        return doc

    def load(self) -> Dict[str, Any]:
        with self._locked():
            return self._read()

    def record(self, key: str, result: Result, checked_at: float) -> None:
        with self._locked():
            doc = self._read()
            answers: Dict[str, Any] = doc["answers"]
            answers[key] = {"ok": result.ok, "code": result.code, "message": result.message, "claims": result.claims, "checked_at": checked_at}
            for old in sorted(answers, key=lambda k: float(answers[k].get("checked_at", 0)))[: max(0, len(answers) - MAX_CACHED_ANSWERS)]:
                del answers[old]
            license_id = (result.claims or {}).get("license_id")
            if result.code == codes.REVOKED and isinstance(license_id, str):
                doc["revoked"][license_id] = checked_at
            atomic_write(self.path, json.dumps(doc).encode("utf-8"))


def _cached_result(entry: Any) -> Optional[Result]:
    if not isinstance(entry, dict) or not codes.is_validation_code(entry.get("code")):
        return None
    claims = entry.get("claims")
    code = entry["code"]
    return Result(code in (codes.VALID, codes.VALID_IN_GRACE), code, claims if isinstance(claims, dict) else None, str(entry.get("message", "")), "cache")


def _server_result(status: int, body: Any) -> Result:
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else None
        raise ServerAnswerError(f"{VALIDATE_PATH} answered {status}: {json.dumps(detail) if detail is not None else 'no verdict'}")
    code, valid, message, claims = body.get("code"), body.get("valid"), body.get("message"), body.get("claims")
    if not codes.is_validation_code(code) or not isinstance(valid, bool) or valid != (code in (codes.VALID, codes.VALID_IN_GRACE)):
        raise ServerAnswerError(f"{VALIDATE_PATH} answered no known verdict ({code!r}, valid {valid!r})")
    grace = body.get("grace_ends_at")
    grace_ends_at = _iso_seconds(grace) if isinstance(grace, str) else None
    return Result(valid, str(code), claims if isinstance(claims, dict) else None, str(message or ""), "server", grace_ends_at)


def _iso_seconds(text: str) -> Optional[float]:
    """Seconds since the epoch of the server's ISO 8601 time, or None when it is none."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def validate_online(
    server_url: str,
    token: str,
    module_name: str,
    odoo_version: Version,
    *,
    public_keys: Optional[Mapping[str, KeyLike]] = None,
    jwks: Union[Mapping[str, Any], KeySet, None] = None,
    cache_dir: Optional[PathLike] = None,
    cache_ttl: float = 3600.0,
    jwks_max_age: float = DEFAULT_JWKS_MAX_AGE,
    timeout: float = 10.0,
    fingerprint: Optional[str] = None,
    clock_skew: float = 60,
    allow_insecure_http: bool = False,
) -> Result:
    """Validates ``token`` for ``module_name`` on ``odoo_version`` with the server at
    ``server_url``, by the rule in this module's documentation.

    Keys for the offline check: ``public_keys`` or ``jwks`` when given, else the server's
    key set through :func:`load_jwks` (cached in ``cache_dir``, fetched again once when a
    token names a kid the cached set lacks). ``cache_dir`` (default
    :func:`default_cache_dir`) holds ``jwks.json`` and ``answers.json``, both 0600 and
    replaced atomically. Raises InvalidRequestError for a module name or version the
    server would refuse, ServerAnswerError when the server answers with no verdict, and
    JwksUnavailableError when there is neither a key set nor a server to get one from.
    """
    check_module_name(module_name)
    version = check_version(odoo_version)
    base = base_url(server_url, allow_insecure_http=allow_insecure_http)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(base)
    cache = _AnswerCache(directory)
    doc = cache.load()
    revoked = set(doc["revoked"])

    def offline(keys: Union[Mapping[str, Any], KeySet, None], pk: Optional[Mapping[str, KeyLike]]) -> Result:
        return verify_license_token(
            token, public_keys=pk, jwks=keys, module_name=module_name, version=version,
            fingerprint=fingerprint, revoked=revoked, clock_skew=clock_skew,
        )

    if public_keys is not None or jwks is not None:
        local = offline(jwks, public_keys)
    else:
        def fetched(max_age: float) -> KeySet:
            return load_jwks(base, cache_dir=directory, max_age=max_age, timeout=timeout, allow_insecure_http=allow_insecure_http)

        local = offline(fetched(jwks_max_age), None)
        if local.code == codes.UNKNOWN_KEY:
            # The key may be newer than the cached set: ask the server for it once.
            local = offline(fetched(0), None)
    if not local.ok:
        return local

    key = _answer_key(token, module_name, version)
    cached = _cached_result(doc["answers"].get(key))
    now = time.time()
    entry = doc["answers"].get(key)
    if cached is not None and 0 <= now - float(entry.get("checked_at", 0)) < cache_ttl:
        return cached
    try:
        status, body = request_json("POST", base + VALIDATE_PATH, {"token": token, "module_name": module_name, "odoo_version": version}, timeout)
    except Unreachable:
        if cached is not None and not cached.ok:
            return cached
        return local
    result = _server_result(status, body)
    cache.record(key, result, now)
    return result
