"""The look-alike table behind user name keys (see pychat.text.name_key).

Each entry maps a representative to characters that can be mistaken for
it. The table is applied after NFKC and case folding, so it needs only one
case of each letter: a letter stands for its whole case pair, and the pair
is mapped when either case looks like the representative in either case
(Cyrillic ``В`` looks like ``B``, so ``в`` maps to ``b``). Where the two
cases resemble different Latin letters the capital wins, because capitals
are exact copies (Greek ``Η``/``η`` maps to ``h``, not ``n``).

Scope, written from the shapes of the characters (no external data):

- Latin look-alikes in Cyrillic, Greek, Coptic, Armenian, Cherokee and
  Lisu (whose letters are Latin capitals), and Latin's own small capitals
  and variants (dotless i, script g, Latin alpha, kra, the click letters
  ``ǀ`` and ``ǁ``, which pass for ``l`` and ``ll``, ...);
- ``i``, ``l`` and ``1`` are one class, and ``o`` and ``0`` another: ``I``
  and ``l`` are identical in many fonts and names ignore case, so ``i``
  must join the class too. The price: ``bill`` and ``biil`` share a key;
- a few Cyrillic letters that copy digits (``з``/3, ``б``/6);
- Japanese pairs that are the same shape (katakana ``カ`` and the
  ideograph ``力``, ``ロ``/``口``, ``ー``/``一``, hiragana and katakana
  ``へ``/``ヘ``, ...), since Japanese names mix these scripts. Hangul jamo
  are left alone: the key decomposes syllables into jamo, so mapping one
  (``ㅁ``/``口``) would rewrite every syllable that holds it.

Multi-letter look-alikes (``rn``/``m``, ``vv``/``w``, ``cl``/``d``) are left
out: in the fixed-width fonts of terminals they differ in width.

Accounts store name keys, so changing this table changes keys: a stored
key must then be recomputed from its stored name.
"""

from __future__ import annotations

import unicodedata
from typing import Final

# Representative -> look-alikes, as code points so no font decides what
# the source says. Comments give the characters by name.
LOOKALIKES: Final[dict[str, str]] = {
    # Cyrillic a, Greek alpha, Latin alpha, small capital A, Lisu A, Cherokee GO
    "a": "\u0430\u03b1\u0251\u1d00\ua4ee\u13aa",
    # Cyrillic ve, Greek beta, small capital B, Latin beta, Lisu BA, Cherokee YV
    "b": "\u0432\u03b2\u0299\ua7b5\ua4d0\u13f4",
    # Cyrillic es, small capital C, Coptic sima, Lisu CA, Cherokee TLI
    "c": "\u0441\u1d04\u2ca5\ua4da\u13df",
    # Cyrillic komi de, small capital D, Lisu DA, Cherokee A
    "d": "\u0501\u1d05\ua4d3\u13a0",
    # Cyrillic ie, Greek epsilon, Latin open e, small capital E, Lisu E, Cherokee GV
    "e": "\u0435\u03b5\u025b\u1d07\ua4f0\u13ac",
    # Greek digamma, Lisu TSA
    "f": "\u03dd\ua4dd",
    # Latin script g, small capital G, Armenian co, Lisu GA, Cherokee NAH
    "g": "\u0261\u0262\u0581\ua4d6\u13c0",
    # Cyrillic en, Cyrillic shha, Greek eta, small capital H, Armenian ho, Lisu XA, Cherokee MI
    "h": "\u043d\u04bb\u03b7\u029c\u0570\ua4e7\u13bb",
    # Cyrillic je, Greek yot, Latin dotless j, small capital J, Lisu JA, Cherokee GU
    "j": "\u0458\u03f3\u0237\u1d0a\ua4d9\u13ab",
    # Cyrillic ka, Greek kappa, Latin kra, small capital K, Lisu KA, Cherokee TSO
    "k": "\u043a\u03ba\u0138\u1d0b\ua4d7\u13e6",
    # i and 1; Latin dotless i, Latin iota, small capitals I and L, dental click;
    # Cyrillic i and palochka, Greek iota, Coptic iauda, Armenian liwn;
    # Lisu I and LA; Cherokee V and TLE
    "l": "i1\u0131\u0269\u026a\u029f\u01c0\u0456\u04cf\u03b9\u2c93\u056c"
         "\ua4f2\ua4e1\u13a5\u13de",
    # Latin lateral click (two bars)
    "ll": "\u01c1",
    # Cyrillic em, Greek mu, small capital M, Lisu MA, Cherokee LU
    "m": "\u043c\u03bc\u1d0d\ua4df\u13b7",
    # Cyrillic pe, Greek nu, small capital N, Armenian vo, Lisu NA
    "n": "\u043f\u03bd\u0274\u0578\ua4e0",
    # 0; Cyrillic o, Greek omicron, small capital O, Armenian oh, Coptic o, Lisu O
    "o": "0\u043e\u03bf\u1d0f\u0585\u2c9f\ua4f3",
    # Cyrillic er, Greek rho, small capital P, Coptic ro, Lisu PA, Cherokee TLV
    "p": "\u0440\u03c1\u1d18\u2ca3\ua4d1\u13e2",
    # Cyrillic qa, Armenian za
    "q": "\u051b\u0566",
    # Cyrillic ghe, small capital R, Lisu ZHA, Cherokee E and SV
    "r": "\u0433\u0280\ua4e3\u13a1\u13d2",
    # Cyrillic dze, small capital S, Lisu SA, Cherokee DU
    "s": "\u0455\ua731\ua4e2\u13da",
    # Cyrillic te, Greek tau, small capital T, Lisu TA, Cherokee I
    "t": "\u0442\u03c4\u1d1b\ua4d4\u13a2",
    # Armenian seh, small capital U, Lisu U
    "u": "\u057d\u1d1c\ua4f4",
    # Cyrillic izhitsa, small capital V, Lisu HA, Cherokee DO
    "v": "\u0475\u1d20\ua4e6\u13d9",
    # Cyrillic we, Greek omega, small capital W, Lisu WA, Cherokee LA
    "w": "\u051d\u03c9\u1d21\ua4ea\u13b3",
    # Cyrillic ha, Greek chi, Latin chi, Lisu SHA
    "x": "\u0445\u03c7\uab53\ua4eb",
    # Cyrillic u and straight u, Greek upsilon, small capital Y, Lisu YA, Cherokee GI
    "y": "\u0443\u04af\u03c5\u028f\ua4ec\u13a9",
    # Greek zeta, small capital Z, Lisu DZA, Cherokee NO
    "z": "\u03b6\u1d22\ua4dc\u13c3",
    # Cyrillic ze
    "3": "\u0437",
    # Cyrillic be
    "6": "\u0431",
    # Lisu tone mya ti (a dot on the baseline)
    ".": "\ua4f8",
    # Japanese: hiragana he; ideographs power, work, mouth, two, eight,
    # divination, evening, one
    "\u30d8": "\u3078",
    "\u30ab": "\u529b",
    "\u30a8": "\u5de5",
    "\u30ed": "\u53e3",
    "\u30cb": "\u4e8c",
    "\u30cf": "\u516b",
    "\u30c8": "\u535c",
    "\u30bf": "\u5915",
    "\u30fc": "\u4e00",
}


def _folded(ch: str) -> str:
    """CH the way name_key sees it: NFKC, case folded, decomposed."""
    nfkc = unicodedata.normalize("NFKC", ch)
    return unicodedata.normalize("NFD", unicodedata.normalize("NFKC", nfkc.casefold()))


def skeleton_table() -> dict[int, str]:
    """A str.translate table: each look-alike (as name_key sees it) -> its representative."""
    table: dict[int, str] = {}
    for representative, lookalikes in LOOKALIKES.items():
        for ch in lookalikes:
            for form in {ch, _folded(ch)}:
                if len(form) == 1 and form != representative:
                    table[ord(form)] = representative
    return table
