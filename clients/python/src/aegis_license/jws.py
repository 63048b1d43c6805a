"""Compact JWS: decoding exactly as the server does, and Ed25519 signature checks."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: The longest token the server looks at (its /validate body allows no longer one).
MAX_TOKEN_LENGTH = 16 * 1024

#: The only signature algorithm accepted.
ALG = "EdDSA"

#: Header parameters that would let a token choose its own key or processing rules.
REFUSED_HEADER_PARAMETERS = ("crit", "jku", "jwk", "x5u")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


def b64url_decode(segment: str) -> bytes:
    """Decodes unpadded base64url; raises ValueError on any other character."""
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError("not base64url") from err


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _refuse_constant(name: str) -> Any:
    # JSON has no NaN or Infinity; the server's parser refuses them, so this one does.
    raise ValueError(f"{name} is not JSON")


def parse_json_object(data: bytes) -> Optional[Dict[str, Any]]:
    """The JSON object ``data`` holds (UTF-8), or None for anything else."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class DecodedToken:
    """A compact JWS split and decoded, not yet verified."""

    header: Dict[str, Any]
    payload: Dict[str, Any]
    signing_input: bytes
    signature_segment: str


def decode_compact(token: object) -> Optional[DecodedToken]:
    """Splits a compact JWS and decodes header and payload; None if it is not one."""
    if not isinstance(token, str) or len(token) == 0 or len(token) > MAX_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 3 or len(parts[2]) == 0:
        return None
    try:
        header = parse_json_object(b64url_decode(parts[0]))
        payload = parse_json_object(b64url_decode(parts[1]))
    except ValueError:
        return None
    if header is None or payload is None:
        return None
    return DecodedToken(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), parts[2])


def signature_verifies(key: Ed25519PublicKey, decoded: DecodedToken) -> bool:
    """True when the token's signature is ``key``'s Ed25519 signature of its signing input."""
    try:
        signature = b64url_decode(decoded.signature_segment)
    except ValueError:
        return False
    if len(signature) != 64:
        return False
    try:
        key.verify(signature, decoded.signing_input)
    except InvalidSignature:
        return False
    return True
