"""JSON over HTTP with urllib: no redirects followed, bounded answers, and a clear line
between "the server answered" and "the server could not be reached"."""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional, Tuple

from .errors import InsecureUrlError

MAX_ANSWER_BYTES = 1024 * 1024
USER_AGENT = "aegis-license-python/0.1.0"


class Unreachable(Exception):
    """The server did not answer (connection refused, timeout, DNS, 5xx or 429)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could send a key set request, or a token, to another host: refused.
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(server_url: str, *, allow_insecure_http: bool) -> str:
    """``server_url`` without a trailing slash; https, or http to this host's loopback only."""
    parts = urllib.parse.urlsplit(server_url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or host == "":
        raise InsecureUrlError(f"server URL {server_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(host):
        raise InsecureUrlError(
            f"server URL {server_url!r} is plain http to another host: keys and verdicts could be replaced on the way; use https"
        )
    return server_url.rstrip("/")


def request_json(method: str, url: str, body: Optional[Any], timeout: float) -> Tuple[int, Any]:
    """(status, parsed JSON or None); raises Unreachable when no usable answer came back."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    if data is not None:
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as res:
            status = int(res.status)
            raw = res.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as err:
        status = int(err.code)
        if status >= 500 or status == 429:
            raise Unreachable(f"server answered {status}") from err
        raw = err.read(MAX_ANSWER_BYTES + 1)
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as err:
        raise Unreachable(str(err)) from err
    if status >= 500 or status == 429:
        raise Unreachable(f"server answered {status}")
    if len(raw) > MAX_ANSWER_BYTES:
        return status, None
    try:
        return status, json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return status, None
