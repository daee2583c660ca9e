"""Acronyms: spelled letter by letter ("API" -> "A P I") or said as a word ("NASA").

A run of 2-5 capitals (optionally a plural or possessive "s") is an acronym unless it is
a common English word written in capitals ("STOP", "NOT", "OK"), a Roman numeral ("World
War II") or one of the acronyms people say as words. Common words come from
pyspellchecker's English frequency list (words seen at least MIN_WORD_COUNT times in its
corpus: "ram", "pin", "rest" pass; "api", "cpu", "ibm" do not). Longer capital runs are
left as written: they are shouted words far more often than acronyms.
"""

from __future__ import annotations

import bisect
import re
from functools import cache

from sesame_server.spoken.text import Builder

MIN_WORD_COUNT = 1000
_CAPITALS = re.compile(r"(?<![\w.'’-])(?P<letters>[A-Z]{2,5})(?P<tail>s|'s|’s)?(?![\w'’]|\.\w)")
_ROMAN = re.compile(r"X{0,3}(?:IX|IV|V?I{0,3})")

# Said as words although no dictionary has them (or has them as another word).
SAID_AS_WORDS = frozenset("""
ASCII AWOL BIOS CAPTCHA COVID CRUD DOS FIFA GIF GUI IKEA JPEG JSON LAN LASER NASA NASDAQ NATO
OPEC PIN POSIX RADAR RAM ROM SARS SCUBA SIM SWAT TOML UNESCO UNICEF WAN WASM YAML
""".split())
# Spelled although the dictionary has a word of the same letters.
SPELLED = frozenset("AI AKA CD ID IO LA LED PR UK US TV".split())
SAID_AS = {"TODO": "to do"}


@cache
def _common_words() -> frozenset[str]:
    """Lower-case English words of 2-5 letters frequent enough to be meant as words."""
    from spellchecker import SpellChecker  # 0.1 s, only once an acronym candidate is seen

    counts = SpellChecker(language="en", distance=1).word_frequency.dictionary
    return frozenset(word for word, count in counts.items() if 2 <= len(word) <= 5 and count >= MIN_WORD_COUNT)


def spelled(letters: str, *, shouting: bool = False) -> bool:
    """Whether a run of capitals is read letter by letter (`shouting`: its neighbours are
    capitalised words, where "US" is the word)."""
    if letters in SPELLED:
        return not shouting
    if letters in SAID_AS_WORDS or _ROMAN.fullmatch(letters):
        return False
    return letters.lower() not in _common_words()


def keep(builder: Builder, start: int, end: int) -> None:
    """source[start:end] as written, but for the acronyms in it, which are spelled."""
    found = builder.memo.get("acronyms")
    if found is None:
        found = builder.memo["acronyms"] = _acronyms(builder.source)
    if not found:
        builder.keep(start, end)
        return
    at = start
    for index in range(bisect.bisect_left(found, (start,)), len(found)):
        first, last, spoken = found[index]
        if last > end:
            break
        builder.keep(at, first)
        builder.say(spoken, first, last)
        at = last
    builder.keep(at, end)


def _acronyms(source: str) -> tuple[tuple[int, int, str], ...]:
    """Every acronym of a text and how it is said, found once per text (a reply is kept in
    hundreds of runs: one scan of the whole text costs less than one per run)."""
    found = []
    for match in _CAPITALS.finditer(source):
        letters = match.group("letters")
        if letters in SAID_AS:
            spoken = SAID_AS[letters]
        elif spelled(letters, shouting=letters in SPELLED and _shouting(source, match.start(), match.end())):
            spoken = " ".join(letters)
        else:
            continue
        found.append((match.start(), match.end(), spoken + ("'s" if match.group("tail") else "")))
    return tuple(found)


def _shouting(source: str, start: int, end: int) -> bool:
    """Whether the word before or after is a capitalised common word ("HELP US NOW")."""
    neighbours = source[max(0, start - 24):start].split()[-1:] + source[end:end + 24].split()[:1]
    words = (word.strip(".,;:!?\"'()") for word in neighbours)
    return any(len(word) > 1 and word.isupper() and word.lower() in _common_words() for word in words)
