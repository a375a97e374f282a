"""Turning the sources' markup into plain text: the Brown corpus's word/tag tokens and GCIDE's dictd entries."""

from __future__ import annotations

import re

_BLANK_RUN = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """Unix newlines, no byte-order mark, no trailing spaces on lines, no blank lines at either end."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


# Brown corpus, form C: sentences of "word/tag" tokens, one sentence per line, ``/`` and ''/'' for quotes.
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''", "'"}
_NO_SPACE_AFTER = {"(", "``", "`"}
_QUOTES = {"``": '"', "''": '"', "`": "'"}


def brown_sentence(line: str) -> str:
    """One tagged Brown sentence as plain text: tags dropped, punctuation attached, `` and '' as double quotes.

    >>> brown_sentence("``/`` No/at ,/, sir/nn ''/'' ./.")
    '"No, sir".'
    """
    out, glue = [], True
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token else token
        if word == ";" and out and out[-1] == ";":  # the corpus doubles a ';' where it split a sentence
            continue
        if out and not glue and word not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(_QUOTES.get(word, word))
        glue = word in _NO_SPACE_AFTER
    return "".join(out)


def brown_document(tagged: str) -> str:
    """A whole Brown file as plain text, one sentence per line (a sentence the corpus cut at ';' goes on)."""
    text = ""
    for sentence in filter(None, map(brown_sentence, tagged.split("\n"))):
        text += (" " if text.endswith(";") else "\n" if text else "") + sentence
    return text


# GCIDE as Debian's dict-gcide ships it (dictd format, converted from the GCIDE XML):
#   Affect \Af*fect"\ ([a^]f*f[e^]kt"), n. [L. affectus.] See {Fact}.
#      [1913 Webster]
# The \...\ syllabified headword, the respelled pronunciation and the [1913 Webster]-style source notes go;
# cross-reference braces go; accent escapes become letters.
# A note is always last on its line; what follows it there is a stray piece of the next headword.
_SOURCE_NOTE = re.compile(r"\[[^\[\]\n]*(?:Webster|WordNet|PJC|Century Dict)[^\[\]\n]*\].*|^\s*\[[A-Z]{2,3}\]\s*$",
                          re.MULTILINE)
_SYLLABLES = re.compile(r"\s*\\[^\\\n]+\\")
_ESCAPE = r"\[[^\[\]\s]{1,5}\]"
# "(?; 277)": a pronunciation whose Greek letters were lost, and a reference to the printed guide's section.
_PRONUNCIATION = re.compile(
    rf" ?\((?=[^()\n]{{1,40}}\))(?:[^()\n]*?(?:{_ESCAPE}|\*)[^()\n]*|[\s,;or\d]*\?[?\s,;or\d]*)\)"
)
_SYLLABIFIED = re.compile(r"[\w\"`'-]*\*[\w\"`'*-]*")  # Un*wor"thi*ly, a derived form in the text
_SYLLABLE_MARKS = re.compile(r"[*\"`]")
_ACCENTED = re.compile(r"\[([=\-~.'\"`^,*]?)([A-Za-z]{1,5})(\^?)\]")
_NAMED = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "imac": "ī", "aum": "ä", "asl": "a", "add": "a", "udd": "u", "th": "th",
    "ng": "ng", "eth": "ð", "thorn": "þ", "yogh": "ȝ", "deg": "°", "sect": "§", "root": "√", "alpha": "α",
    "beta": "β", "gamma": "γ", "Delta": "Δ", "theta": "θ", "iota": "ι", "pi": "π", "rho": "ρ", "tau": "τ",
    "phi": "φ",
}
_SPACES = re.compile(r"[ \t]+")


def _letter(match: re.Match) -> str:
    mark_before, letters, mark_after = match.groups()
    if mark_before or mark_after:
        return letters
    return _NAMED.get(letters, match.group(0))  # [R.], [He], [Obs] ... are words, not escapes


def gcide_entry(entry: str) -> str:
    """One dictd GCIDE entry as plain text (see the example above this function)."""
    text = _SOURCE_NOTE.sub("", entry)
    text = _SYLLABLES.sub("", text)
    text = _PRONUNCIATION.sub("", text)
    text = _ACCENTED.sub(_letter, text)
    text = _SYLLABIFIED.sub(lambda m: _SYLLABLE_MARKS.sub("", m.group(0)), text)
    text = text.replace("{", "").replace("}", "")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")
