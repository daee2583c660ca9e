"""Plain text to spoken words: numbers, money, dates, times, units, versions, URLs, e-mail
addresses, hashtags, mentions, common abbreviations, emoji. patterns.py finds them, left to
right; every rewrite is mapped to the source span it replaces (text.Builder)."""

from __future__ import annotations

import re

import emoji

from sesame_server.spoken import acronyms, numbers
from sesame_server.spoken.patterns import match_at
from sesame_server.spoken.text import Builder

_ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus",
                  "approx.": "approximately", "dr.": "Doctor", "mr.": "Mister", "mrs.": "Missus", "ms.": "Miz",
                  "prof.": "Professor"}
_MATH = {"+": "plus", "=": "equals", "×": "times", "÷": "divided by", "<": "is less than", ">": "is greater than",
         "≤": "is at most", "≥": "is at least", "≈": "is about", "±": "plus or minus", "≠": "is not"}
# Runs of characters emoji are made of (pictographs, joiners, variation selectors, skin
# tones, tags): the emoji library's scan, slow over a whole reply, only looks at these.
_EMOJI_RUN = re.compile("(?:[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u21aa\u231a-\u23ff\u24c2"
                        "\u25aa-\u27bf\u2934\u2935\u2b05-\u2b55\u3030\u303d\u3297\u3299\U0001F000-\U0001FAFF]"
                        "[\u200d\ufe0f\u20e3\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F]*)+")
MAX_SPOKEN_PATH = 40  # a URL path longer than this is left out: nobody reads it aloud


def speak(builder: Builder, start: int, end: int, *, describe_emoji: bool = False) -> None:
    """source[start:end], plain text (no markdown), into `builder` as it should be said."""
    at = start
    for run in _EMOJI_RUN.finditer(builder.source, start, end):
        for found in emoji.emoji_list(run.group()):
            first, last = run.start() + found["match_start"], run.start() + found["match_end"]
            _words(builder, at, first)
            if describe_emoji:
                name = emoji.demojize(found["emoji"], delimiters=(" ", " ")).replace("_", " ")
                builder.say(name, first, last)
            else:
                builder.say(" ", first, last)
            at = last
    _words(builder, at, end)


def _words(builder: Builder, start: int, end: int) -> None:
    """source[start:end] with every match of patterns.RULES rewritten. They are tried only
    where a match can start: from the start of each trigger's word up to the trigger (they
    are slow to try at every character of plain prose)."""
    source = builder.source
    at = position = start
    while position < end:
        trigger = _TRIGGER.search(source, position, end)
        if trigger is None:
            break
        first, last = trigger.span()
        word = lead = max(position, first - _LONGEST_LEAD)
        if lead < first:  # else the trigger starts right where the last one ended: no word before it
            word = max(lead, source.rfind(" ", lead, first) + 1, source.rfind("\n", lead, first) + 1,
                       source.rfind("\t", lead, first) + 1)
        position = last
        for candidate in range(word, last):
            if candidate > word and source[candidate].isalpha() and _in_word(source[candidate - 1]):
                continue  # every rule starting with a letter starts at a word boundary
            match = match_at(source, candidate, end)
            if match is None:
                continue
            position = max(match.end(), candidate + 1)
            spoken = _rewrite(match)
            if spoken is not None:
                acronyms.keep(builder, at, candidate)
                builder.say(spoken, candidate, match.end())
                at = match.end()
            break
    acronyms.keep(builder, at, end)


# Every match of patterns.RULES holds one of these in its first word.
_TRIGGER = re.compile(r"[\d$€£¥@#/~*_`:;+(=×÷<>≤≥≈±≠%]|https?:|www\.|\.[a-z]{2,4}\b"
                      r"|\b(?:e\.g|i\.e|etc|vs|approx|Dr|Mr|Mrs|Ms|Prof)\.|\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                      r"|[^\x00-\x7f]")
_LONGEST_LEAD = 64  # how far before its trigger a match may start ("jane.doe@", "(555)")


def _in_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _rewrite(m: re.Match) -> str | None:
    """The spoken form of a match; None (the text stays as written) if a rule cannot say it."""
    kind = m.lastgroup if m.lastgroup in _KINDS else next(k for k in m.re.groupindex
                                                          if k in _KINDS and m.group(k) is not None)
    try:
        return _KINDS[kind](m)
    except (ArithmeticError, ValueError, KeyError, IndexError):
        return None


def _url(m: re.Match) -> str:
    url = re.sub(r"^(?:https?://)?(?:www\.)?", "", m.group("url"))
    host, _, path = url.partition("/")
    words = " dot ".join(host.split(":")[0].split("."))
    path = re.split(r"[?#]", path)[0].strip("/")
    if path and len(path) <= MAX_SPOKEN_PATH:
        words += " slash " + " slash ".join(re.sub(r"[-_.]+", " ", part) for part in path.split("/") if part)
    return words


def _phone(m: re.Match) -> str:
    """Digit by digit, in the groups written: 'plus one, five five five, one two three, ...'."""
    groups = re.findall(r"\+?\d+", m.group("phone"))
    said = [("plus " if group.startswith("+") else "") + " ".join(numbers.num2words(int(d)) for d in group.lstrip("+"))
            for group in groups]
    return ", ".join(said)


def _domain(m: re.Match) -> str:
    host, _, path = m.group("domain").partition("/")
    words = " dot ".join(host.split("."))
    if path and len(path) <= MAX_SPOKEN_PATH:
        words += " slash " + " slash ".join(re.sub(r"[-_.]+", " ", part) for part in path.split("/") if part)
    return words


_DURATIONS = {"ms": "ms", "s": "s", "m": "min", "h": "h"}


def _email(m: re.Match) -> str:
    user, _, domain = m.group("email").partition("@")
    return " dot ".join(user.split(".")) + " at " + " dot ".join(domain.split("."))


def _version(m: re.Match) -> str:
    number = m.group("vn") or m.group("version")
    words = " point ".join(numbers.cardinal(part) for part in number.split("."))
    return ("version " if m.group("vn") else "") + words


def _time(m: re.Match) -> str:
    return numbers.clock(m.group("th"), m.group("tm"), m.group("tp"))


def _path(m: re.Match) -> str:
    path = m.group("path")
    words = " slash ".join(part.replace(".", " dot ") for part in path.strip("/").split("/") if part)
    return ("slash " if path.startswith("/") else "") + words.replace("~", "home")


def _decimal_comma(amount: str) -> str:
    """'3,50' (an amount written the European way, before €/£ or a code) -> '3.50'."""
    return amount.replace(",", ".") if re.fullmatch(r"\d+,\d{2}", amount) else amount


def _camel(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|_", " ", name).strip()


_KINDS = {
    "url": _url,
    "email": _email,
    "phone": _phone,
    "domain": _domain,
    "hour": lambda m: numbers.clock(m.group("hh"), "00", m.group("hp")),
    "duration": lambda m: numbers.unit(m.group("dn"), _DURATIONS[m.group("du") or m.group("du2")]),
    "magnitude": lambda m: f"{numbers.cardinal(m.group('mn'))} {numbers.MAGNITUDES[m.group('mm')]}",
    "date": lambda m: numbers.date(m.group("dy"), m.group("dm"), m.group("dd")),
    "time": _time,
    "version": _version,
    "curpre": lambda m: numbers.currency(m.group("cs"), m.group("ca"), m.group("cmag")),
    "curpost": lambda m: numbers.currency(m.group("cc") or m.group("cs2"), _decimal_comma(m.group("ca2"))),
    "percent": lambda m: numbers.cardinal(m.group("pn")) + " percent",
    "ordinal": lambda m: numbers.ordinal(m.group("on")),
    "range": lambda m: f"{numbers.cardinal(m.group('r1'))} to {numbers.cardinal(m.group('r2'))}",
    "unit": lambda m: numbers.unit(m.group("un"), m.group("uu")),
    "mdate": lambda m: numbers.month_day(m.group("mon"), m.group("md1"), m.group("md2")),
    "usdate": lambda m: numbers.date(m.group("uy"), m.group("um"), m.group("ud")),
    "fraction": lambda m: numbers.fraction(m.group("fn"), m.group("fd")),
    "numsign": lambda m: "number " + numbers.cardinal(m.group("nsn")),
    "path": _path,
    "year": lambda m: numbers.year(m.group("year")),
    "number": lambda m: numbers.cardinal(m.group("number")),
    "hashtag": lambda m: "hashtag " + _camel(m.group("ht")),
    "mention": lambda m: "at " + _camel(m.group("mt")),
    "abbr": lambda m: _ABBREVIATIONS[m.group("abbr").lower()],
    "math": lambda m: _MATH[m.group("math")],
    "emoticon": lambda m: "",  # :) ;-) as the emoji they stand for: not said
    "marks": lambda m: "",  # emphasis marks markdown could not pair (text streamed in pieces)
}
