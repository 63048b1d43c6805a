"""Verification keys: a server's JWKS (``/.well-known/jwks.json``), fetched and cached on
disk so verification works offline, or keys given directly."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._files import PathLike, atomic_write, read_private
from ._http import Unreachable, base_url, request_json
from .errors import JwksError, JwksUnavailableError
from .jws import b64url_decode

JWKS_PATH = "/.well-known/jwks.json"

#: How long a cached key set is used without asking the server (its Cache-Control max-age).
DEFAULT_JWKS_MAX_AGE = 300.0

KeyLike = Union[Ed25519PublicKey, bytes]


def _usable_key(jwk: Any) -> Optional[Ed25519PublicKey]:
    """The Ed25519 public key of one JWK, or None when it is not a usable signing key."""
    if not isinstance(jwk, dict):
        return None
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", "EdDSA") != "EdDSA":
        return None
    x = jwk.get("x")
    if not isinstance(x, str):
        return None
    try:
        raw = b64url_decode(x)
    except ValueError:
        return None
    if len(raw) != 32:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


class KeySet(Mapping[str, Ed25519PublicKey]):
    """Ed25519 verification keys by kid. Never empty."""

    def __init__(self, keys: Mapping[str, KeyLike]) -> None:
        parsed: Dict[str, Ed25519PublicKey] = {}
        for kid, key in keys.items():
            if not isinstance(kid, str) or kid == "":
                raise JwksError("a key id must be a non-empty string")
            if isinstance(key, Ed25519PublicKey):
                parsed[kid] = key
            elif isinstance(key, (bytes, bytearray)) and len(key) == 32:
                parsed[kid] = Ed25519PublicKey.from_public_bytes(bytes(key))
            else:
                raise JwksError(f"key {kid} is not an Ed25519 public key (an Ed25519PublicKey or its 32 raw bytes)")
        if not parsed:
            raise JwksError("no verification key")
        self._keys = parsed

    @classmethod
    def from_jwks(cls, document: Any) -> "KeySet":
        """The Ed25519 (OKP) signing keys of a JWKS; refuses one that has none, a private
        key, or two keys under one kid."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksError('not a JWKS (an object with a "keys" array)')
        keys: Dict[str, KeyLike] = {}
        for jwk in document["keys"]:
            if isinstance(jwk, dict) and "d" in jwk:
                raise JwksError("the JWKS carries private key material")
            key = _usable_key(jwk)
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            if key is None or not isinstance(kid, str) or kid == "":
                continue
            if kid in keys:
                raise JwksError(f"the JWKS has two keys with kid {kid}")
            keys[kid] = key
        if not keys:
            raise JwksError("the JWKS has no usable Ed25519 (OKP, crv Ed25519, use sig) key")
        return cls(keys)

    def __getitem__(self, kid: str) -> Ed25519PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def default_cache_dir(server_url: str) -> Path:
    """``$XDG_CACHE_HOME/aegis_license/<hash of the server URL>`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(server_url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return Path(root) / "aegis_license" / digest


def _read_cache(path: Path) -> Optional[tuple[float, KeySet]]:
    raw = read_private(path)
    if raw is None:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
        fetched_at = float(doc["fetched_at"])
        jwks = doc["jwks"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise JwksError(f"the cached key set {path} is unreadable") from err
    return fetched_at, KeySet.from_jwks(jwks)


def load_jwks(
    server_url: str,
    *,
    cache_dir: Optional[PathLike] = None,
    max_age: float = DEFAULT_JWKS_MAX_AGE,
    timeout: float = 10.0,
    allow_insecure_http: bool = False,
) -> KeySet:
    """The server's key set. A cached set younger than ``max_age`` seconds is used as is;
    otherwise the server is asked and its answer cached (``jwks.json`` in ``cache_dir``,
    0600, replaced atomically). When the server cannot be reached the cached set is used
    whatever its age; without one, JwksUnavailableError. An answer without a usable
    Ed25519 key is refused (JwksError) and never replaces the cache."""
    base = base_url(server_url, allow_insecure_http=allow_insecure_http)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir(base)) / "jwks.json"
    cached = _read_cache(path)
    if cached is not None and 0 <= time.time() - cached[0] < max_age:
        return cached[1]
    try:
        status, body = request_json("GET", base + JWKS_PATH, None, timeout)
    except Unreachable as err:
        if cached is not None:
            return cached[1]
        raise JwksUnavailableError(f"{base}{JWKS_PATH} is unreachable ({err}) and no key set is cached") from err
    if status != 200:
        raise JwksError(f"{base}{JWKS_PATH} answered {status}")
    keys = KeySet.from_jwks(body)
    atomic_write(path, json.dumps({"fetched_at": time.time(), "jwks": body}).encode("utf-8"))
    return keys
