"""The server's result codes and request rules, read from ``codes.json``.

``codes.json`` is generated from the server's protocol definitions (never edited by
hand), so every code this package answers is one ``POST /api/v1/licenses/validate``
answers too. Each name used in this package goes through :func:`_code`, which fails at
import time if the server no longer defines it.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any, Final, FrozenSet, Pattern


def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("codes.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise RuntimeError("aegis_license/codes.json is not an object")
    return doc


_DOC: Final = _load()

#: Every validation code the server defines, in its order.
VALIDATION_CODES: Final[tuple[str, ...]] = tuple(str(c) for c in _DOC["validation_codes"])
_CODE_SET: Final[FrozenSet[str]] = frozenset(VALIDATION_CODES)

#: The error code of a request refused before its token is looked at (HTTP 400 on the server).
REQUEST_REFUSED: Final[str] = str(_DOC["request_refused_code"])

#: The audience of a module license token.
MODULE_LICENSE_AUDIENCE: Final[str] = str(_DOC["module_license_audience"])


def _pattern(source: str) -> Pattern[str]:
    # The server's patterns are anchored JavaScript regular expressions over ASCII
    # classes; matched with fullmatch, a trailing newline cannot slip past "$".
    return re.compile(source, re.ASCII)


#: An Odoo technical module name, as the server accepts it for ``module_name``.
MODULE_NAME_PATTERN: Final[Pattern[str]] = _pattern(str(_DOC["module_name_pattern"]))

#: A host product version, as the server accepts it for ``odoo_version``.
HOST_VERSION_PATTERN: Final[Pattern[str]] = _pattern(str(_DOC["host_version_pattern"]))


def _code(name: str) -> str:
    if name not in _CODE_SET:
        raise RuntimeError(f"validation code {name} is not defined by the server (codes.json)")
    return name


def is_validation_code(value: object) -> bool:
    """True when ``value`` is one of the server's validation codes."""
    return isinstance(value, str) and value in _CODE_SET


VALID: Final = _code("VALID")
EXPIRED: Final = _code("EXPIRED")
REVOKED: Final = _code("REVOKED")
SIGNATURE_INVALID: Final = _code("SIGNATURE_INVALID")
MALFORMED: Final = _code("MALFORMED")
UNKNOWN_KEY: Final = _code("UNKNOWN_KEY")
HWID_MISMATCH: Final = _code("HWID_MISMATCH")
NOT_YET_VALID: Final = _code("NOT_YET_VALID")
WRONG_AUDIENCE: Final = _code("WRONG_AUDIENCE")
MODULE_MISMATCH: Final = _code("MODULE_MISMATCH")
VERSION_NOT_ALLOWED: Final = _code("VERSION_NOT_ALLOWED")
VALID_IN_GRACE: Final = _code("VALID_IN_GRACE")
HEARTBEAT_DEAD: Final = _code("HEARTBEAT_DEAD")
