"""The README's example runs, against the real server, with its placeholders filled in."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import unittest
from pathlib import Path

from ._support import env

README = Path(__file__).resolve().parent.parent / "README.md"


class ReadmeExample(unittest.TestCase):
    def test_example_runs(self) -> None:
        url, token = env("SERVER_URL"), env("TOKEN_VALID")
        blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
        self.assertGreaterEqual(len(blocks), 1)
        code = blocks[0].replace("https://license.example.com", url).replace("eyJhbGc...", token)
        self.assertNotIn("eyJhbGc...", code)
        with tempfile.TemporaryDirectory() as d:
            old = os.environ.get("XDG_CACHE_HOME")
            os.environ["XDG_CACHE_HOME"] = d
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
            finally:
                if old is None:
                    del os.environ["XDG_CACHE_HOME"]
                else:
                    os.environ["XDG_CACHE_HOME"] = old
        self.assertIn("Acme Corp perpetual", out.getvalue())


if __name__ == "__main__":
    unittest.main()
