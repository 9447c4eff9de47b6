"""Which characters a name may hold, and what a header keeps of text never checked."""

import pytest

from interchange_common.text import has_unsafe, is_unsafe, without_unsafe

ZWJ, ZWNJ = "\u200d", "\u200c"


@pytest.mark.parametrize(
    "text",
    [
        f"Ada{ZWJ}👩{ZWJ}💻 Lovelace",  # an emoji sequence
        f"مهرداد{ZWNJ}زاده",  # Persian needs the non-joiner
        "Zoë Ñúñez-Łukasiewicz",
        "山田\u3000太郎",  # the ideographic space between family and given name
        "Jean\u00a0Dupont",
        "❤\ufe0f",  # a variation selector
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # a flag made of tag characters
        "\u05e9\u05dc\u05d5\u05dd\u200e Ada",  # a bidi mark reorders no letters
        "\U000f0000",  # private use
        "\U0001fa77",  # an emoji newer than Python's Unicode database (15.0)
    ],
)
def test_what_names_need_is_safe(text):
    assert not has_unsafe(text)
    assert without_unsafe(text) == text


@pytest.mark.parametrize(
    "character",
    [
        "\n",
        "\r",
        "\t",
        "\x00",
        "\x1b",  # starts a terminal escape sequence
        "\x7f",
        "\x85",  # NEXT LINE, a C1 control
        "\u2028",
        "\u2029",
        "\u202a",
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u2066",
        "\u2069",
        "\ud800",
        "\ufdd0",
        "\uffff",
        "\U0010fffe",
    ],
)
def test_line_breaks_controls_bidi_overrides_and_noncharacters_are_unsafe(character):
    assert is_unsafe(character)
    assert has_unsafe(f"Ada{character}Lovelace")


def test_a_header_keeps_the_text_around_unsafe_characters_as_one_line():
    assert without_unsafe("  Mallory\r\n\tBcc: victim@example.com ") == "Mallory Bcc: victim@example.com"
    assert without_unsafe("Ada\u202eecalevol\u202c") == "Ada ecalevol"
    assert without_unsafe("\x00\n") == ""
