"""Render a page in headless Chromium: did it load, did its images decode, any console errors?

Used by the report's browser test and by ``make demo`` (a screenshot next to report.html).
Needs Debian's ``chromium`` (installed by ``make install`` when missing).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rnnlab.errors import RnnlabError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(args: list[str], timeout: int = 90) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise RnnlabError("headless Chromium not found: install Debian's 'chromium' (make install does it as root)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
                              capture_output=True, text=True, timeout=timeout)


def check_page(page: str | Path, screenshot: str | Path | None = None, width: int = 1400, height: int = 2400) -> dict:
    """``{"images": "k/n", "console_errors": [...], "screenshot": path}`` for a local HTML file."""
    page = Path(page).resolve()
    if not page.is_file():
        raise RnnlabError(f"page {page} does not exist")
    url = page.as_uri()
    dom = _run(["--dump-dom", url])
    match = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom.stdout)
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and re.search(r"Uncaught|Error|error|Failed", line)]
    result = {"loaded": match is not None, "images": f"{match.group(1)}/{match.group(2)}" if match else None,
              "console_errors": errors}
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        _run([f"--screenshot={screenshot}", f"--window-size={width},{height}", url])
        result["screenshot"] = str(screenshot) if screenshot.is_file() else None
    return result
