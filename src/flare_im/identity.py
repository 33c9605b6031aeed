r"""What a user or group id is, and which characters human-readable text (display names, group names) may hold.

**Ids.** Every id a client or a business backend sends (username, user id, group id, the user ids inside a
conversation id) is normalised before anything else looks at it: Unicode NFKC, then case folding (``str.casefold``),
and the result must be 1-64 characters of ``a-z 0-9 _ . @ -``. So ``Alice``, ``ALICE`` and ``\uff21lice``
(full-width A) all name the user ``alice``; ``é`` is refused rather than guessed at. Ids are stored in this normal
form, so two accounts can never differ only by case or by a compatibility form.

**Text.** Display names, avatars and group names may not contain Unicode control characters: categories Cc
(C0/C1 controls, NUL, newline, tab), Cf (format: bidi embeddings/overrides U+202A-U+202E and isolates
U+2066-U+2069, zero-width space, BOM, soft hyphen, tag characters), Co (private use), Cs (surrogates) and Cn
(unassigned). Two format characters are allowed because real names and emoji need them: U+200C ZERO WIDTH
NON-JOINER (Persian, Indic scripts) and U+200D ZERO WIDTH JOINER (emoji sequences such as 👩‍💻).
"""

from __future__ import annotations

import re
import unicodedata

from flare_im.protocol.errors import invalid

NORMAL_ID = re.compile(r"[a-z0-9_.@-]{1,64}")
ID_RULE = "1-64 characters of a-z 0-9 _ . @ - (after NFKC and case folding: 'Alice' is 'alice')"
_MAX_RAW_ID = 256  # longer input is refused before normalising (NFKC may expand a string up to 18 times)
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})

# The Cc, Cf and Co code points (Unicode 14, minus U+200C/U+200D), as inclusive ranges: what the schema
# migration flags in stored names, the same on SQLite and PostgreSQL (tests/unit/test_identity.py checks it
# against ``unicodedata``). Cs cannot be stored and Cn changes with each Unicode version, so it is not listed.
CONTROL_RANGES: tuple[tuple[int, int], ...] = (
    (0x0, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200B),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xE000, 0xF8FF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
)


def normalize_id(value: str) -> str | None:
    """The normal form of an id (NFKC, case-folded), or None when that is not a valid id."""
    if len(value) > _MAX_RAW_ID:
        return None
    # NFKC is the identity on ASCII, and casefold is lower there.
    normal = value.lower() if value.isascii() else unicodedata.normalize("NFKC", value).casefold()
    return normal if NORMAL_ID.fullmatch(normal) else None


def check_id(value: str, what: str) -> str:
    """The normal form of ``value``; FlareError 422 naming ``what`` when it is not a valid id."""
    normal = normalize_id(value)
    if normal is None:
        raise invalid(f"{what} must be {ID_RULE}")
    return normal


def is_normal_id(value: str) -> bool:
    return NORMAL_ID.fullmatch(value) is not None


def control_char(text: str) -> str | None:
    """The first character of ``text`` that human-readable text may not hold (see the module docstring)."""
    for ch in text:
        if (ch < " " or ch > "~") and unicodedata.category(ch)[0] == "C" and ch not in _ALLOWED_FORMAT:
            return ch
    return None


def check_text(value: str, what: str) -> str:
    """``value`` unchanged; FlareError 422 naming ``what`` and the character if it holds a control character."""
    ch = control_char(value)
    if ch is not None:
        raise invalid(f"{what} must not contain control characters (found U+{ord(ch):04X})")
    return value


def stored_control_char(text: str) -> bool:
    """Whether stored ``text`` holds a character of ``CONTROL_RANGES`` (what the migration flags)."""
    return _STORED_CONTROL.search(text) is not None


def _char_class(escape: str) -> str:
    parts = []
    for lo, hi in CONTROL_RANGES:
        lo = max(lo, 1) if escape == "pg" else lo  # PostgreSQL text cannot hold NUL
        if escape == "pg":
            parts.append(_pg(lo) if lo == hi else f"{_pg(lo)}-{_pg(hi)}")
        else:
            parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "[" + "".join(parts) + "]"


def _pg(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def postgres_control_class() -> str:
    """``CONTROL_RANGES`` as a PostgreSQL regular-expression bracket expression (for the migration's SQL)."""
    return _char_class("pg")


_STORED_CONTROL = re.compile(_char_class("py"))
