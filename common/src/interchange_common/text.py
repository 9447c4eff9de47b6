"""Which characters text that people type may hold where other people read it: a
user's name shown by the API, written into mail headers and logs.

    is_unsafe           a character that breaks a line, controls a terminal or a parser,
                        or reorders the text around it on screen
    has_unsafe          text that holds such a character
    without_unsafe      text with each run of them made one space

Everything else is allowed, format characters included: names need U+200C (ZERO
WIDTH NON-JOINER, to spell Persian), U+200D (ZERO WIDTH JOINER, emoji sequences such
as 👩‍💻), variation selectors and emoji tags.
"""

import unicodedata

# Controls (Cc: NUL, TAB, CR, LF, DEL, the C1 controls with NEL) and the line and
# paragraph separators (Zl, Zp): they end a line in a header, a log record or a
# terminal, or drive the terminal. Surrogates (Cs) are halves of a UTF-16 pair, not
# characters: UTF-8 cannot encode one alone.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})

# The bidirectional embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO; LRI,
# RLI, FSI, PDI) reorder the text after them up to the end of the paragraph: the
# "Trojan Source" trick (CVE-2021-42574). In a name they make it display as someone
# else's or reverse the words around it in a mail header or a list. The marks LRM,
# RLM and ALM stay allowed: each is one invisible letter of a direction, reorders
# no letters, and mixed Persian and Latin names need them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Private use characters (Co) are allowed: they are graphic by agreement, and older
# Hong Kong encodings map characters of people's names there. Unassigned code points
# are allowed too: Python's Unicode database lags the standard, and this year's
# emoji are unassigned to it. Noncharacters are not: Unicode keeps them for a
# program's internal use, never for interchange.


def _is_noncharacter(character: str) -> bool:
    code = ord(character)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def is_unsafe(character: str) -> bool:
    """A character that no name may hold (see the module's docstring)."""
    return (
        unicodedata.category(character) in _UNSAFE_CATEGORIES
        or character in BIDI_CONTROLS
        or _is_noncharacter(character)
    )


def has_unsafe(text: str) -> bool:
    return any(is_unsafe(character) for character in text)


def without_unsafe(text: str) -> str:
    """``text`` with each run of unsafe characters and ASCII spaces made one space, and no
    space at either end: what a header may show of text that was never checked."""
    spaced = "".join(" " if is_unsafe(character) else character for character in text)
    return " ".join(part for part in spaced.split(" ") if part)
