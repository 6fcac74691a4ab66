"""WordNet offline: Debian's ``wordnet-base`` files read through nltk's WordNet reader.

nltk finds WordNet in an nltk data folder (``corpora/wordnet``) and wants a ``lexnames`` file that Debian's
package lacks. :func:`prepare_wordnet` copies the package's database files into
``<user data folder>/nltk_data/corpora/wordnet`` and writes ``lexnames`` from the table of the package's
``lexnames.5WN`` man page (:data:`LEXNAMES`). Where the internet is reachable, ``nltk.download("wordnet")``
fills an nltk data folder instead; either is found. Book: ``generated_normals.md``, "WordNet".
"""

from __future__ import annotations

import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from nandlib.paths import data_home, writable_folder
from nandlib.tgvig import require

DEBIAN_DIR = Path("/usr/share/wordnet")
# The WordNet 3.0 database files nltk's reader opens.
DATABASE_FILES = tuple(
    f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
# lexnames(5WN): file number and name of the 45 lexicographer files, in the man page's order.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
_SYNTACTIC = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
MISSING = (
    "WordNet is not available: install Debian's wordnet-base (apt-get install wordnet-base), whose files "
    'nandlib copies into {folder}, or, with internet access, run python -c "import nltk; '
    "nltk.download('wordnet')\""
)


def nltk_data_dir() -> Path:
    """The nltk data folder nandlib fills: ``<user data folder>/nltk_data``."""
    return data_home() / "nltk_data"


def lexnames_text() -> str:
    """The ``lexnames`` file: ``<number>\\t<name>\\t<syntactic category>`` per line, as WordNet ships it."""
    return "".join(f"{i:02d}\t{name}\t{_SYNTACTIC[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def prepare_wordnet(source: Path = DEBIAN_DIR, folder: Path | None = None) -> Path:
    """Copy WordNet's database files from ``source`` into an nltk data folder and add ``lexnames``.

    Args:
        source: Folder of the WordNet 3.0 database (Debian: ``/usr/share/wordnet``).
        folder: nltk data folder (default :func:`nltk_data_dir`).

    Returns:
        The ``corpora/wordnet`` folder.

    Raises:
        FileNotFoundError: ``source`` lacks a database file, saying how to get WordNet.
    """
    folder = folder or nltk_data_dir()
    target = folder / "corpora" / "wordnet"
    missing = [name for name in DATABASE_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}. " + MISSING.format(folder=target))
    writable_folder(target, "nltk data folder")
    for name in DATABASE_FILES:
        if not (target / name).is_file():
            shutil.copyfile(source / name, target / name)
    (target / "lexnames").write_text(lexnames_text())
    return target


@lru_cache(maxsize=1)
def load_wordnet():
    """nltk's WordNet reader: an nltk data folder's WordNet, else the Debian files prepared first.

    Raises:
        LookupError: No WordNet anywhere, saying how to get it.
    """
    nltk = require("nltk")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if str(nltk_data_dir()) not in nltk.data.path:  # nltk reads corpora only from its data path
        nltk.data.path.append(str(nltk_data_dir()))
    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            prepare_wordnet()
        except FileNotFoundError as error:
            raise LookupError(str(error)) from error
        root = nltk.data.find("corpora/wordnet")

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            """No mapping to other WordNet versions: it reads ``index.sense``, which wordnet-base lacks,
            and serves only the multilingual (OMW) functions, which nandlib does not use."""
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The multilingual functions are not available")
        return EnglishWordNet(root, None)
