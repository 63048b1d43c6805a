"""Offline verification of a module license token, with the server's checks in the
server's order, answering the server's codes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Literal, Mapping, Optional, Union

from . import codes
from .errors import InvalidRequestError
from .jwks import KeyLike, KeySet
from .jws import ALG, REFUSED_HEADER_PARAMETERS, decode_compact, signature_verifies

#: Where a verdict came from: this process's offline check, the server, or the server's
#: last answer as cached.
Source = Literal["offline", "server", "cache"]

Version = Union[str, int]


@dataclass(frozen=True)
class Result:
    """A verdict on a token. ``code`` is one of the server's validation codes; ``claims``
    are the token's payload once its signature verified (None before)."""

    ok: bool
    code: str
    claims: Optional[Dict[str, Any]]
    message: str
    source: Source = field(default="offline")
    #: With VALID_IN_GRACE: when the grace ends (seconds since the epoch); after it, EXPIRED.
    grace_ends_at: Optional[float] = field(default=None)


def _fail(code: str, message: str, claims: Optional[Dict[str, Any]] = None) -> Result:
    return Result(False, code, claims, message)


def _is_number(value: object) -> bool:
    # JSON true/false are not numbers (Python's bool is an int).
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_module_name(module_name: object) -> str:
    """``module_name`` as the server accepts it, else InvalidRequestError."""
    if not isinstance(module_name, str) or not codes.MODULE_NAME_PATTERN.fullmatch(module_name):
        raise InvalidRequestError("module_name", f"{module_name!r} is not a technical module name ({codes.MODULE_NAME_PATTERN.pattern})")
    return module_name


def check_version(version: object) -> str:
    """``version`` (``17``, ``"17.0"``, ``"17.0.3"``) as the server accepts ``odoo_version``,
    else InvalidRequestError."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        version = str(version)
    if not isinstance(version, str) or not codes.HOST_VERSION_PATTERN.fullmatch(version):
        raise InvalidRequestError("odoo_version", f"{version!r} is not a version ({codes.HOST_VERSION_PATTERN.pattern})")
    return version


def major_of(version: str) -> str:
    """The major of a checked version: ``"17.0.3"`` and ``"017"`` give ``"17"``."""
    return str(int(version.split(".")[0]))


def verify_license_token(
    token: str,
    *,
    public_keys: Optional[Mapping[str, KeyLike]] = None,
    jwks: Union[Mapping[str, Any], KeySet, None] = None,
    module_name: Optional[str] = None,
    version: Optional[Version] = None,
    fingerprint: Optional[str] = None,
    now: Optional[float] = None,
    revoked: Optional[Collection[str]] = None,
    clock_skew: float = 60,
) -> Result:
    """Verifies a module license token offline.

    Keys: ``public_keys`` (kid to Ed25519PublicKey or its 32 raw bytes) or ``jwks`` (a JWKS
    document or a KeySet), exactly one. ``module_name`` and ``version`` are checked like
    ``/validate``'s ``module_name`` and ``odoo_version`` (a bad one raises
    InvalidRequestError, as the server answers 400). ``fingerprint`` is this instance's
    hardware id: a token bound to one (``hwid``) needs it to match, and giving one for a
    token bound to none is HWID_MISMATCH, as on the server. ``revoked`` holds license ids
    known to be revoked. ``clock_skew`` seconds of leeway apply to ``iat``/``nbf`` and
    ``exp``. Signature, algorithm and key failures, and every claim check, are a Result
    with ``ok`` False, never an exception.
    """
    if (public_keys is None) == (jwks is None):
        raise TypeError("give exactly one of public_keys and jwks")
    if module_name is not None:
        check_module_name(module_name)
    checked_version = None if version is None else check_version(version)
    keys = jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks) if jwks is not None else KeySet(public_keys or {})

    decoded = decode_compact(token)
    if decoded is None:
        return _fail(codes.MALFORMED, "not a compact JWS")
    header = decoded.header
    if header.get("alg") != ALG:
        return _fail(codes.SIGNATURE_INVALID, f"algorithm {header.get('alg')!r} is not accepted")
    if any(p in header for p in REFUSED_HEADER_PARAMETERS):
        return _fail(codes.SIGNATURE_INVALID, "header parameters jku/jwk/x5u/crit are not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        return _fail(codes.UNKNOWN_KEY, "missing or invalid kid" if not isinstance(kid, str) else f"unknown or retired key {kid}")
    if not signature_verifies(keys[kid], decoded):
        return _fail(codes.SIGNATURE_INVALID, "signature does not verify")

    c = decoded.payload
    if c.get("aud") != codes.MODULE_LICENSE_AUDIENCE:
        return _fail(codes.WRONG_AUDIENCE, f"token audience is {c.get('aud')!r}, not {codes.MODULE_LICENSE_AUDIENCE}", c)
    module = c.get("module")
    if not isinstance(c.get("license_id"), str) or not _is_number(c.get("iat")):
        return _fail(codes.MALFORMED, "license claims are incomplete (license_id and iat are required)", c)
    if not isinstance(module, dict) or not isinstance(module.get("technical_name"), str):
        return _fail(codes.MALFORMED, "module license claims name no module", c)

    t = time.time() if now is None else now
    nbf = c.get("nbf")
    if c["iat"] > t + clock_skew or (_is_number(nbf) and nbf > t + clock_skew):
        return _fail(codes.NOT_YET_VALID, "token is not valid yet", c)
    grace_ends_at: Optional[float] = None
    if "exp" in c:
        exp = c["exp"]
        grace = c.get("grace_seconds")
        if _is_number(exp) and exp + clock_skew <= t and _is_number(grace) and grace > 0 and t < exp + grace:
            # Past exp, a token with a grace claim is in grace until exp + grace_seconds.
            grace_ends_at = float(exp + grace)
        elif not _is_number(exp) or exp + clock_skew <= t:
            return _fail(codes.EXPIRED, "license token expired" + (f" at {exp}" if _is_number(exp) else ""), c)
    if revoked is not None and c["license_id"] in revoked:
        return _fail(codes.REVOKED, "the license server answered that this license is revoked", c)

    name: str = module["technical_name"]
    allowed_raw = module.get("allowed_major_versions")
    allowed = [str(v) for v in allowed_raw] if isinstance(allowed_raw, list) else []
    if module_name is not None and module_name != name:
        return _fail(codes.MODULE_MISMATCH, f"license is for module {name}, not {module_name}", c)
    if checked_version is not None and allowed and major_of(checked_version) not in allowed:
        return _fail(codes.VERSION_NOT_ALLOWED, f"version {checked_version} is not allowed (allowed majors: {', '.join(allowed)})", c)
    hwid = c.get("hwid")
    if hwid is not None and fingerprint is None:
        return _fail(codes.HWID_MISMATCH, "the license is bound to an instance fingerprint; none was given", c)
    if fingerprint is not None and fingerprint != hwid:
        return _fail(codes.HWID_MISMATCH, "a module license is bound to no hardware" if hwid is None else "license is bound to other hardware", c)
    if grace_ends_at is not None:
        return Result(True, codes.VALID_IN_GRACE, c, f"license expired; in its grace period until {grace_ends_at:.0f}", "offline", grace_ends_at)
    return Result(True, codes.VALID, c, "license is valid")
