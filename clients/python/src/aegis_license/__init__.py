"""Aegis module licenses for Python products (Odoo modules): offline verification of the
license token against the server's Ed25519 keys, and online validation with the server,
cached and falling back to offline verification when the server cannot be reached."""

from __future__ import annotations

from .codes import MODULE_LICENSE_AUDIENCE, REQUEST_REFUSED, VALIDATION_CODES
from .errors import (
    AegisLicenseError,
    InsecureCacheError,
    InsecureUrlError,
    InvalidRequestError,
    JwksError,
    JwksUnavailableError,
    ServerAnswerError,
)
from .jwks import KeySet, default_cache_dir, load_jwks
from .online import validate_online
from .verify import Result, verify_license_token

__version__ = "0.1.0"

__all__ = [
    "AegisLicenseError",
    "InsecureCacheError",
    "InsecureUrlError",
    "InvalidRequestError",
    "JwksError",
    "JwksUnavailableError",
    "KeySet",
    "MODULE_LICENSE_AUDIENCE",
    "REQUEST_REFUSED",
    "Result",
    "ServerAnswerError",
    "VALIDATION_CODES",
    "__version__",
    "default_cache_dir",
    "load_jwks",
    "validate_online",
    "verify_license_token",
]
