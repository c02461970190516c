"""Make WordNet 3.0 readable by nltk offline, from the Debian packages wordnet-base + wordnet-sense-index.

Why: nltk's METEOR needs WordNet, and `nltk.download("wordnet")` cannot reach the internet on our machines.
Debian ships the WordNet 3.0 database files in /usr/share/wordnet. nltk's WordNetCorpusReader reads the
files listed in `WordNetCorpusReader._FILES`; the Debian packages provide all of them except `lexnames`
(the numbered list of the 45 lexicographer files; nltk reads it at start-up to name each synset's lexfile).
Debian's README says lexnames was left out as a "remnant"; we rebuild it from the lexnames(5WN) manual
page that wordnet-base ships (/usr/share/man/man5/lexnames.5WN.gz), or, where manual pages are excluded
from the image, from the same WordNet 3.0 table embedded below. Either way the table is checked against the
lex_filenum field of every synset in data.noun/verb/adj/adv before it is written.

Examples (scripts/setup.sh runs the second):
    apt-get update && apt-get install -y wordnet-base wordnet-sense-index
    python -m medvl.metrics.wordnet_setup [--nltk-data DIR] [--source /usr/share/wordnet] [--force]

The copy goes to DIR/corpora/wordnet, DIR defaulting to the first entry of $NLTK_DATA, else ~/nltk_data
(on nltk's default search path). Idempotent and fast when done: a copy built by this script records the
nltk version and the sizes of its source files in BUILD_INFO.json; when they still match, it exits 0 in about a
second (importing nltk) without loading WordNet (`--verify` loads it anyway). Otherwise, when nltk already finds a
working WordNet (e.g. one downloaded elsewhere), it leaves it alone. The build is written to a temporary
folder and renamed into place, so an interrupted run leaves nothing half-built, and it is verified by
loading it in a fresh interpreter (`synsets('dog')[0]` must be dog.n.01 in lexfile noun.animal).
Exit status: 0 ready, 2 Debian files missing, 3 files inconsistent, 4 built but nltk cannot read it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DEBIAN_DIR = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
APT_HINT = "apt-get update && apt-get install -y wordnet-base wordnet-sense-index"

# WordNet 3.0 lexicographer files, numbered 00..44 (lexnames(5WN)); used only when the manual page is absent.
_WN30_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class SetupError(Exception):
    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)


def default_nltk_dir() -> Path:
    env = os.environ.get("NLTK_DATA", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first) if first else Path.home() / "nltk_data"


def needed_files() -> list[str]:
    """Files nltk's reader opens, minus lexnames (which we write)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    return [f for f in WordNetCorpusReader._FILES if f != "lexnames"]


def lexnames_from_man(path: Path = LEXNAMES_MAN) -> list[str] | None:
    """The 45 lexicographer file names from the lexnames(5WN) manual page, or None if it is absent."""
    try:
        text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    rows = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^(\d\d)\t([a-z]+\.[A-Za-z]+)\s*\t", text, re.M)]
    if [n for n, _ in rows] != list(range(len(rows))) or not rows:
        return None
    return [name for _, name in rows]


def check_lexnames(names: list[str], source: Path) -> None:
    """Every synset's lex_filenum in data.<pos> must name a lexicographer file of that part of speech."""
    for pos in _CATEGORY:
        used = set()
        with open(source / f"data.{pos}", encoding="latin-1") as fp:
            for line in fp:
                if line.startswith("  "):  # licence header
                    continue
                used.add(int(line.split(" ", 2)[1]))
        bad = sorted(n for n in used if n >= len(names) or not names[n].startswith(pos + "."))
        if bad:
            raise SetupError(3, f"lexnames table disagrees with {source / f'data.{pos}'}: lex_filenum {bad}")


def _fingerprint(source: Path) -> dict:
    import nltk

    return {"nltk": nltk.__version__, "source": str(source),
            "sizes": {f: (source / f).stat().st_size if (source / f).is_file() else None for f in needed_files()}}


def already_built(nltk_dir: Path, source: Path) -> bool:
    """True when nltk_dir holds a copy this script built from the same, unchanged source for this nltk."""
    final = nltk_dir / "corpora" / "wordnet"
    try:
        info = json.loads((final / "BUILD_INFO.json").read_text())
    except (OSError, ValueError):
        return False
    fp = _fingerprint(source)
    files_ok = all((final / f).is_file() and (final / f).stat().st_size == size
                   for f, size in fp["sizes"].items() if size is not None) and (final / "lexnames").is_file()
    return files_ok and all(info.get(k) == v for k, v in fp.items()) and _on_nltk_path(nltk_dir)


def _on_nltk_path(nltk_dir: Path) -> bool:
    import nltk

    return any(Path(p).resolve() == nltk_dir.resolve() for p in nltk.data.path)


def wordnet_works(nltk_dir: Path | None = None) -> tuple[bool, str]:
    """Whether nltk can load WordNet (in a fresh interpreter, so nothing cached here can lie)."""
    code = ("import nltk,sys\n"
            + (f"nltk.data.path.insert(0, {str(nltk_dir)!r})\n" if nltk_dir else "")
            + "from nltk.corpus import wordnet as wn\n"
              "s = wn.synsets('dog')\n"
              "assert s and s[0].name() == 'dog.n.01' and s[0].lexname() == 'noun.animal', s\n"
              "print(wn.root)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    return False, (proc.stderr.strip().splitlines() or ["unknown error"])[-1]


def build(nltk_dir: Path, source: Path) -> Path:
    files = needed_files()
    missing = [f for f in files if not (source / f).is_file()]
    if missing:
        raise SetupError(2, f"WordNet files missing in {source}: {missing}. Install them: {APT_HINT}")
    names = lexnames_from_man()
    origin = str(LEXNAMES_MAN)
    if names is None:
        names, origin = list(_WN30_LEXNAMES), "table embedded in medvl/metrics/wordnet_setup.py (man page absent)"
    check_lexnames(names, source)

    corpora = nltk_dir / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    final = corpora / "wordnet"
    tmp = corpora / f".wordnet.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in files:
        shutil.copyfile(source / f, tmp / f)
    with open(tmp / "lexnames", "w", encoding="ascii") as fp:
        for i, name in enumerate(names):
            fp.write(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n")
    info = {"built_by": "medvl.metrics.wordnet_setup", "lexnames_from": origin, **_fingerprint(source)}
    (tmp / "BUILD_INFO.json").write_text(json.dumps(info, indent=1))
    if final.exists() or final.is_symlink():
        old = corpora / f".wordnet.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medvl.metrics.wordnet_setup", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nltk-data", type=Path, default=None, help="nltk data dir (default: $NLTK_DATA or ~/nltk_data)")
    ap.add_argument("--source", type=Path, default=DEBIAN_DIR, help="Debian WordNet dir (default %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild even if nltk already finds a working WordNet")
    ap.add_argument("--verify", action="store_true", help="load WordNet through nltk even if the build is up to date")
    args = ap.parse_args(argv)
    nltk_dir = args.nltk_data or default_nltk_dir()

    if not args.force and not args.verify and already_built(nltk_dir, args.source):
        print(f"WordNet already built for nltk at {nltk_dir / 'corpora' / 'wordnet'} (run with --verify to load it)")
        return 0
    if not args.force:
        ok, where = wordnet_works(args.nltk_data)
        if ok:
            print(f"WordNet already readable by nltk at {where}")
            return 0
    try:
        final = build(nltk_dir, args.source)
    except SetupError as e:
        print(f"wordnet_setup: {e}", file=sys.stderr)
        return e.code
    ok, detail = wordnet_works(nltk_dir)
    if not ok:
        print(f"wordnet_setup: built {final} but nltk cannot read it: {detail}", file=sys.stderr)
        return 4
    print(f"WordNet 3.0 for nltk written to {final}")
    if not _on_nltk_path(nltk_dir):
        print(f"NOTE: {nltk_dir} is not on nltk's default search path; export NLTK_DATA={nltk_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
