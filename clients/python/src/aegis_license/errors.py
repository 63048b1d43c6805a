"""Errors this package raises, each with a stable ``code``.

A verdict about a token is never an exception: it is a :class:`~aegis_license.Result`.
Exceptions are for what stops a verdict from being reached: a bad argument, no key to
verify with, a key set or cache that cannot be trusted, a server answer that makes no sense.
"""

from __future__ import annotations

from typing import Optional

from .codes import REQUEST_REFUSED


class AegisLicenseError(Exception):
    """Base class: ``code`` is stable, ``str(err)`` says what is wrong."""

    code: str = "AEGIS_LICENSE_ERROR"

    def __init__(self, message: str, *, code: Optional[str] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidRequestError(AegisLicenseError, ValueError):
    """An argument the server would refuse with 400 (same code), naming the field."""

    code = REQUEST_REFUSED

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class JwksError(AegisLicenseError):
    """A key set without a usable Ed25519 key, or one that cannot be read or parsed."""

    code = "JWKS_INVALID"


class JwksUnavailableError(AegisLicenseError):
    """No key set: the server is unreachable and no cached one exists."""

    code = "JWKS_UNAVAILABLE"


class InsecureCacheError(AegisLicenseError):
    """A cache file others could have written (not a regular file, not ours, group/other writable)."""

    code = "CACHE_INSECURE"


class InsecureUrlError(AegisLicenseError):
    """A plain-http server URL for a host other than this one's loopback."""

    code = "INSECURE_URL"


class ServerAnswerError(AegisLicenseError):
    """The server answered, but not with a validation verdict."""

    code = "SERVER_ANSWER_INVALID"
