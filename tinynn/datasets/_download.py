"""Download one file from a list of mirrors, verified by SHA-256 before it gets its final name.

The bytes go to a hidden temporary file (``.<name>.<random>.part``) in the target folder, are hashed
as they arrive, and the temp file is renamed to ``<name>`` only when the length and the digest are
right. Any failure (HTTP error, connection error, timeout, short body, wrong digest, Ctrl-C) deletes
the temp file, so a later call never finds a half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

CHUNK_BYTES = 1 << 16
# (connect, read) seconds: a dead host fails fast; a stalled transfer gives up after a minute.
TIMEOUT_S = (10.0, 60.0)


class DownloadError(OSError):
    """No mirror delivered the file; ``attempts`` lists each URL tried and why it failed."""

    def __init__(self, filename: str, attempts: list[tuple[str, str]]) -> None:
        self.filename = filename
        self.attempts = attempts
        tried = "; ".join(f"{url}: {reason}" for url, reason in attempts) or "no mirrors given"
        super().__init__(f"could not download {filename} ({tried})")


class _BadDownloadError(Exception):
    """A response that arrived but is not the file (short, too long, wrong digest)."""


def mirror_url(base: str, filename: str) -> str:
    """``base`` with ``filename`` appended, one slash between them."""
    return base.rstrip("/") + "/" + filename


def download_file(mirrors: Sequence[str], filename: str, target_dir: Path, sha256: str, *,
                  progress: TextIO | None, timeout: tuple[float, float] = TIMEOUT_S) -> Path:
    """Fetch ``filename`` from the first mirror that delivers it intact; return ``target_dir / filename``.

    Tries each base URL in order and moves on after any failure. The progress bar and failures are
    written to ``progress`` (e.g. sys.stderr; None: silent). Raises DownloadError (an OSError) when
    every mirror failed, and ImportError when ``requests`` is not installed.
    """
    import requests  # optional dependency: only downloads need it (pip install tinynn[download])
    import urllib3  # installed with requests; streaming raw bytes raises its errors

    attempts: list[tuple[str, str]] = []
    for base in mirrors:
        url = mirror_url(base, filename)
        try:
            return _fetch(requests, url, filename, target_dir, sha256, timeout, progress)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, _BadDownloadError) as error:
            attempts.append((url, _describe(error)))
            if progress is not None:
                progress.write(f"  failed: {url}: {_describe(error)}\n")
    raise DownloadError(filename, attempts)


def _fetch(requests, url: str, filename: str, target_dir: Path, sha256: str,
           timeout: tuple[float, float], progress: TextIO | None) -> Path:
    # A fresh random name opened with O_EXCL ("x"): never someone else's file, and the usual
    # permissions (mkstemp would make it 0600).
    temp_path = target_dir / f".{filename}.{secrets.token_hex(6)}.part"
    bar = None
    try:
        with open(temp_path, "xb") as out, requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = _content_length(response)
            digest = hashlib.sha256()
            received = 0
            bar = _ProgressBar(filename, url, total, progress)
            # Raw bytes as sent: a server that labels the .gz "Content-Encoding: gzip" must not get it
            # gunzipped on the way (the digest is of the .gz file), and Content-Length counts these bytes.
            for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(received)
            bar.update(received, force=True)
        if total is not None and received != total:
            raise _BadDownloadError(f"connection closed after {received} of {total} bytes")
        if digest.hexdigest() != sha256:
            raise _BadDownloadError(f"SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256}")
        final_path = target_dir / filename
        os.replace(temp_path, final_path)
        return final_path
    finally:  # also on KeyboardInterrupt: never leave the temp file behind
        if bar is not None:
            bar.end_line()
        temp_path.unlink(missing_ok=True)


def _content_length(response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _describe(error: BaseException) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    # requests wraps the cause in layers of repr; "[Errno 111] Connection refused" is the useful part
    text = str(error)
    cause = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return f"{type(error).__name__}: {cause.group(0).strip() if cause else text[:200]}"


class _ProgressBar:
    """``name [#####.....] 52% 5.2/9.9 MB`` on one line, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, filename: str, url: str, total: int | None, stream: TextIO | None) -> None:
        self.filename, self.total, self.stream = filename, total, stream
        self.last_draw = 0.0
        self.drawn = False
        if stream is not None:
            stream.write(f"Downloading {url}\n")

    def update(self, received: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not force and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        megabytes = f"{received / 1e6:.1f}"
        if self.total:
            fraction = min(received / self.total, 1.0)
            filled = int(fraction * self.WIDTH)
            line = (f"{self.filename} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                    f"{fraction:4.0%} {megabytes}/{self.total / 1e6:.1f} MB")
        else:
            line = f"{self.filename} {megabytes} MB"
        self.stream.write("\r" + line)
        self.stream.flush()
        self.drawn = True

    def end_line(self) -> None:
        """Finish the bar's line, so what is printed next starts on its own."""
        if self.stream is not None and self.drawn:
            self.stream.write("\n")
            self.drawn = False
