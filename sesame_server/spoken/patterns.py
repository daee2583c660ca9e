"""What rules.py looks for: one pattern per kind of thing said differently from how it is
written, in the order they are tried, each with the characters a match of it can start with.

`match_at` tries at a position only the kinds that can start with the character there: a
single alternation of all of them, tried whole at every trigger, cost ~10 µs a try, so a
reply made of triggers ("1÷1÷1÷...") cost ~60 times prose. Every pattern fails within a
bounded distance or matches (and the caller moves past the match): email and host labels
are bounded as RFC 5321 and DNS bound them, a file path's segments and their count too, and
a number-led rule starts only where its digits start. Tried at each character of a long run,
an unbounded scan before a required character ("a/a/a/...", "1-1-1-...") was quadratic.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from sesame_server.spoken import numbers

# One-letter units that are rarely anything else after a number; m, s, h are durations (below).
_UNIT_NAMES = "|".join(sorted((re.escape(u) for u in numbers.UNITS if len(u) > 1 or u in "°gl"),
                              key=len, reverse=True))
_MONTHS = "|".join(["January", "February", "March", "April", "May", "June", "July", "August", "September",
                    "October", "November", "December", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep",
                    "Sept", "Oct", "Nov", "Dec"])
_CODES = "|".join(code for code in numbers.CURRENCIES if code.isalpha())
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"

# (kind, the characters a match starts with, the pattern), in the order they are tried.
RULES: tuple[tuple[str, str, str], ...] = (
    ("url", r"[hw]",
     rf"""\b(?:https?://|www\.)[^\s<>()\[\]"']+[^\s<>()\[\]"'.,;:!?]"""),
    ("email", r"[\w.+-]",
     rf"""\b[\w.+-]{{1,64}}+@[\w-]{{1,63}}(?:\.[\w-]{{1,63}})+\b"""),
    ("phone", r"[+(\d]",
     rf"""(?<![\w+])(?:\+\d{{1,3}}[\s.-]?)?\(?\d{{3}}\)?[\s.-]\d{{3}}[\s.-]\d{{4}}\b"""),
    ("domain", r"[a-z0-9-]",
     rf"""\b[a-z0-9-]{{1,63}}(?:\.[a-z0-9-]{{1,63}}){{0,8}}\.(?:com|org|net|io|dev|ai|app|co|uk|de|fr|edu|gov)\b(?:/[^\s<>()\[\]"']*[^\s<>()\[\]"'.,;:!?])?"""),
    ("date", r"[\d]",
     rf"""\b(?P<dy>\d{{4}})-(?P<dm>0[1-9]|1[0-2])-(?P<dd>0[1-9]|[12]\d|3[01])\b"""),
    ("time", r"[\d]",
     rf"""\b(?P<th>[01]?\d|2[0-3]):(?P<tm>[0-5]\d)(?!\d)(?:\s?(?P<tp>[AaPp]\.?[Mm]\.?)(?![A-Za-z]))?"""),
    ("hour", r"[\d]",
     rf"""\b(?P<hh>1[0-2]|0?[1-9])\s?(?P<hp>[AaPp]\.?[Mm]\.?)(?![A-Za-z])"""),
    ("duration", r"[\d]",
     rf"""\b(?P<dn>\d+(?:\.\d+)?)(?:(?P<du>ms|s|m|h)|\s(?P<du2>ms|s|h))\b(?!['’])"""),
    ("magnitude", r"[\d]",
     rf"""\b(?P<mn>\d+(?:\.\d+)?)(?P<mm>[KMB]|bn)\b"""),
    ("version", r"[v\d]",
     rf"""\bv(?P<vn>\d+(?:\.\d+){{1,3}})\b|\b\d+\.\d+\.\d+(?:\.\d+)?\b"""),
    ("curpre", r"[$€£¥]",
     rf"""(?P<cs>[$€£¥])\s?(?P<ca>{_NUMBER})(?:\s?(?P<cmag>thousand|million|billion|trillion|bn|[kKMB])\b)?"""),
    ("curpost", r"[\d]",
     rf"""(?<!\d)(?P<ca2>{_NUMBER}|\d+,\d{{2}}(?!\d))\s?(?:(?P<cc>{_CODES})\b|(?P<cs2>[€£]))"""),
    ("percent", r"[\d−-]",
     rf"""(?P<pn>[-−]?(?<!\d)(?:{_NUMBER}))\s?%"""),
    ("ordinal", r"[\d]",
     rf"""\b(?P<on>\d+)(?:st|nd|rd|th)\b"""),
    ("range", r"[\d]",
     rf"""\b(?P<r1>{_NUMBER})\s?[-–]\s?(?P<r2>{_NUMBER})\b(?!\.\d)"""),
    ("unit", r"[\d−-]",
     rf"""(?P<un>[-−]?(?<!\d)(?:{_NUMBER}))\s?(?P<uu>{_UNIT_NAMES})(?![\w/])"""),
    ("numsign", r"[#]",
     rf"""(?<![\w&])\#(?P<nsn>\d+)\b"""),
    ("mdate", r"[A-Z]",
     rf"""\b(?P<mon>{_MONTHS})\.?\s(?P<md1>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?:\s?[-–]\s?(?P<md2>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?)?\b(?!:)"""),
    ("usdate", r"[\d]",
     rf"""\b(?P<um>0?[1-9]|1[0-2])/(?P<ud>0?[1-9]|[12]\d|3[01])/(?P<uy>\d{{4}})\b"""),
    ("fraction", r"[\d]",
     rf"""(?<![\w/])(?P<fn>\d{{1,2}})/(?P<fd>\d{{1,2}})(?![\w/])"""),
    ("path", r"[\w~./-]",
     rf"""(?<![\w/.])(?:~|\.{{1,2}})?/(?:[\w-]+(?:\.[\w-]+)*/)*[\w-]+(?:\.[\w-]+)*/?|\b[\w-]{{1,100}}+(?:/[\w-]{{1,100}}+){{0,15}}+\.(?:py|js|ts|tsx|json|lock|md|txt|ya?ml|toml|cfg|ini|sh|html|css|csv|log|env|wav|mp3)\b"""),
    ("year", r"[\d]",
     rf"""\b(?:19|20)\d{{2}}\b(?![,.]\d)"""),
    ("number", r"[\d−-]",
     rf"""(?:(?<=\s)|(?<=^)|(?<=\())[-−](?:{_NUMBER})\b|\b(?:{_NUMBER})\b"""),
    ("hashtag", r"[#]",
     rf"""(?<![\w#&])\#(?P<ht>[A-Za-z]\w*)"""),
    ("mention", r"[@]",
     rf"""(?<![\w@])@(?P<mt>[A-Za-z]\w*)"""),
    ("abbr", r"[eivaDMP]",
     rf"""\b(?:e\.g\.|i\.e\.|etc\.|vs\.|approx\.|Dr\.|Mr\.|Mrs\.|Ms\.|Prof\.)(?!\w)"""),
    ("math", r"[+=×÷<>≤≥≈±≠]",
     rf"""(?<=[\d\s])[+=×÷<>≤≥≈±≠](?=\s?[\d-])"""),
    ("emoticon", r"[:;]",
     rf"""(?<![\w:;])[:;]-?[()DPp](?![\w()])"""),
    ("marks", r"[*_~`]",
     rf"""(?<![\w*_~`])[*_~`]{{1,3}}(?=\w)|(?<=[\w.!?:])[*_~`]{{1,3}}(?![\w*_~`])"""),
)
# What can follow the digits a match of a kind starts with (the whole run of them), for the
# kinds that can start with a digit; absent: anything (a year, a number). A digit is where most
# rules can start; this leaves "1" in "1÷2" two to try, not nineteen.
AFTER_DIGITS = {
    "email": r"[\w.+@-]", "phone": r"[\s).-]", "domain": r"[a-z.-]", "date": "-", "time": ":",
    "hour": r"[\sAaPp]", "duration": r"[\s.msh]", "magnitude": r"[.KMBb]", "version": r"\.",
    "curpost": r"[\s,.A-Z€£]", "percent": r"[\s,.%]", "ordinal": "[snrt]", "range": r"[\s,.\-–]",
    "unit": r"[\s,.°A-Za-z]", "usdate": "/", "fraction": "/", "path": r"[\w/.-]",
}
KINDS = tuple(kind for kind, _, _ in RULES)
_STARTS = tuple(re.compile(starts) for _, starts, _ in RULES)
_AFTER = tuple(re.compile(AFTER_DIGITS.get(kind, r"(?s:.)")) for kind in KINDS)
_DIGITS = re.compile(r"\d{1,64}")  # past a longer run no one looks: its kinds all start only where it starts


def alternation(kinds: tuple[str, ...] = KINDS) -> re.Pattern:
    """One pattern of the named kinds, each its own named group, in RULES' order."""
    return re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, _, pattern in RULES if kind in kinds), re.X)


def match_at(source: str, at: int, end: int) -> re.Match | None:
    """The first kind that matches source[at:end] from `at` (as one alternation of all
    would), trying only those that can start with source[at] (and, at a digit, go on with
    what follows the digits)."""
    after = None  # not a digit, or a run of them too long to look past: the character alone decides
    digits = _DIGITS.match(source, at, end)
    if digits is not None and at > 0 and _DIGITS.match(source, at - 1, end):
        return None  # every kind that starts with a digit starts where the digits start (\b, lookbehinds)
    if digits is not None:
        stop = digits.end()
        if stop == end:
            after = ""
        elif _DIGITS.match(source, stop, end) is None:
            after = source[stop]
    pattern = _for(source[at], after)
    return pattern.match(source, at, end) if pattern is not None else None


@lru_cache(maxsize=4096)
def _for(char: str, after: str | None) -> re.Pattern | None:
    """The kinds that can start with `char` and, at a digit, go on with `after` ("": the end)."""
    kinds = tuple(kind for kind, starts, follows in zip(KINDS, _STARTS, _AFTER) if starts.match(char)
                  and (after is None or (follows.match(after) if after else kind not in AFTER_DIGITS)))
    return _compiled(kinds) if kinds else None


@cache
def _compiled(kinds: tuple[str, ...]) -> re.Pattern:
    return alternation(kinds)
