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
"""
from __future__ import annotations

import hashlib
import re
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


def catalog_files(lang: str) -> list[tuple[str, Path]]:
    """``(package, path)`` of every ``.po`` of ``lang`` in the installed catalog packages."""
    if lang not in LANGUAGES:
        raise RnnlabError(f"target language must be one of {sorted(LANGUAGES)}, got {lang!r}")
    files = []
    for package in PACKAGES:
        root = _package_root(package)
        if root is None:
            continue
        for code in LANGUAGES[lang]:
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
    """De-duplicated, masked English -> ``lang`` pairs from every installed catalog.

    Duplicates are found after masking (``Delete %s`` and ``Delete %d`` are one source)."""
    seen: dict[str, Counter] = defaultdict(Counter)
    first: dict[tuple[str, str], int] = {}
    keep: dict[str, Pair] = {}
    for package, path in catalog_files(lang):
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


def split_pairs(pairs: list[Pair], val_fraction: float = 0.05, test_fraction: float = 0.1,
                min_test: int = 500) -> Split:
    """Train / validation / test by a hash of :func:`split_key` (stable across runs and machines).

    The test fraction grows when needed so the test set has at least ``min_test`` pairs.
    """
    if len(pairs) < 3:
        raise RnnlabError(f"need at least 3 pairs to split, got {len(pairs)}")
    test_fraction = max(test_fraction, min(0.5, min_test / len(pairs)))
    parts: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for pair in pairs:
        digest = hashlib.sha1(split_key(pair.source).encode("utf-8")).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        part = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        parts[part].append(pair)
    return Split(parts["train"], parts["val"], parts["test"])


def load_pairs(pair: str | None = None, tsv: str | None = None) -> tuple[str, list[Pair]]:
    """``(name, pairs)`` for ``--pair en-xx`` or ``--tsv PATH``."""
    if tsv:
        return Path(tsv).stem, tsv_pairs(tsv)
    if pair not in PAIRS:
        raise RnnlabError(f"--pair must be one of {list(PAIRS)}, got {pair!r}")
    return pair, catalog_pairs(pair.split("-")[1])
