"""WordNet 3.0 for METEOR, offline: nltk's data folder built from the Debian dictionary files.

`.ci/install-wordnet` installs Debian's `wordnet-base` and `wordnet-sense-index` (files in /usr/share/wordnet, or
$WNSEARCHDIR). nltk's reader wants the same files plus `lexnames`, which Debian ships only as the lexnames(5WN)
man page; we generate it from that page (or from the fixed WordNet 3.0 list when the page is absent), copy the
files into `<nltk_data>/corpora/wordnet/` once and put `<nltk_data>` on `nltk.data.path`.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

INSTALL_HINT = "run .ci/install-wordnet (apt-get install wordnet-base wordnet-sense-index)"
DEFAULT_DICT_DIR = Path("/usr/share/wordnet")
LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
# The dictionary files nltk's WordNetCorpusReader opens, besides the generated lexnames.
DICT_FILES = (
    "cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)
# WordNet 3.0's 45 lexicographer files, in file-number order (lexnames(5WN)); fixed since WordNet 2.0.
LEXNAMES_30 = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames(5WN) "Syntactic Category"


class WordNetMissingError(FileNotFoundError):
    """WordNet's dictionary files are not installed (METEOR needs them)."""


def dict_dir() -> Path:
    """Where the WordNet dictionary files are: $WNSEARCHDIR (WordNet's own variable) or /usr/share/wordnet."""
    return Path(os.environ.get("WNSEARCHDIR") or DEFAULT_DICT_DIR)


def parse_lexnames_man_page(text: str) -> list[str]:
    """Lexicographer file names, in order, from the lexnames(5WN) man page source (its `NN<TAB>name` table)."""
    names = []
    for match in re.finditer(r"^(\d\d)\t\s*([a-z]+\.[A-Za-z]+)\s*\t", text, flags=re.MULTILINE):
        if int(match.group(1)) != len(names):
            raise ValueError(f"lexnames man page: file number {match.group(1)} out of order")
        names.append(match.group(2))
    return names


def lexnames_text(man_page: Path = LEXNAMES_MAN_PAGE) -> str:
    """The `lexnames` file: `NN<TAB>name<TAB>category` per line, from the man page when it is installed."""
    names = LEXNAMES_30
    if man_page.is_file():
        parsed = parse_lexnames_man_page(gzip.open(man_page, "rt", encoding="utf-8", errors="replace").read())
        if parsed != list(LEXNAMES_30):
            # Not WordNet 3.0's list: nltk would read lexicographer ids against the wrong names.
            raise WordNetMissingError(f"{man_page} does not list WordNet 3.0's 45 lexicographer files")
        names = parsed
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(names))


def default_nltk_data_dir() -> Path:
    """$MOMU_NLTK_DATA, else `<venv>/nltk_data` (already on nltk's search path), else ~/.cache/momu/nltk_data."""
    if os.environ.get("MOMU_NLTK_DATA"):
        return Path(os.environ["MOMU_NLTK_DATA"])
    venv = Path(sys.prefix) / "nltk_data"
    if os.access(venv if venv.exists() else venv.parent, os.W_OK):
        return venv
    return Path.home() / ".cache" / "momu" / "nltk_data"


def build_nltk_wordnet(nltk_data: Optional[Path] = None, source: Optional[Path] = None) -> Path:
    """Make `<nltk_data>/corpora/wordnet/` from the dictionary files once (idempotent); return `<nltk_data>`.

    Files are copied, not linked: nltk >= 3.9 resolves links and refuses files outside its data folders.
    """
    nltk_data = Path(nltk_data or default_nltk_data_dir())
    source = Path(source or dict_dir())
    target = nltk_data / "corpora" / "wordnet"
    if (target / "lexnames").is_file() and all((target / f).is_file() for f in DICT_FILES):
        return nltk_data
    missing = [f for f in DICT_FILES if not (source / f).is_file()]
    if missing:
        raise WordNetMissingError(
            f"METEOR needs WordNet 3.0; {source} lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: "
            f"{INSTALL_HINT}")
    lexnames = lexnames_text()
    (nltk_data / "corpora" / "omw-1.4").mkdir(parents=True, exist_ok=True)  # nltk 3.7 insists on it, empty is fine
    # Build beside the target and rename: a reader never sees a half-copied folder, two builders never clash.
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the data folder may be shared (a venv)
        for name in DICT_FILES:
            shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "lexnames").is_file():  # lost a race to another builder: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return nltk_data


def wordnet_available() -> bool:
    """True when WordNet 3.0 loads (METEOR can be computed)."""
    try:
        load_wordnet()
    except Exception:  # noqa: BLE001 -- missing files, wrong version: no METEOR, other metrics still run
        return False
    return True


def load_wordnet(nltk_data: Optional[str | Path] = None):
    """An nltk WordNetCorpusReader over WordNet 3.0, its data folder built from the system files on first use.

    Raises WordNetMissingError (naming .ci/install-wordnet) when the files are not installed.
    """
    return _load_reader(str(build_nltk_wordnet(Path(nltk_data) if nltk_data else None)))


@lru_cache(maxsize=None)
def _load_reader(root: str):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)  # nltk.corpus.wordnet finds it too; nltk >= 3.9 only reads from here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")  # no Open Multilingual WordNet
        reader = WordNetCorpusReader(str(Path(root) / "corpora" / "wordnet"), None)
    if reader.get_version() != "3.0":
        raise WordNetMissingError(f"{root}/corpora/wordnet holds WordNet {reader.get_version()}, not 3.0: {INSTALL_HINT}")
    return reader
