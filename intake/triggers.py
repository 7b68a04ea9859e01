"""Trigger tokens: validation, a confusable skeleton used as the unique key, and rare-token suggestions.

DreamBooth binds the subject to a rare identifier: a token the text encoder has weak priors for. So a trigger must
not be an everyday English word or a class noun, and must not look like another subject's trigger.
Torch-free; the family tokenizer is read with the `tokenizers` library, without transformers.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import unicodedata
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from wordfreq import zipf_frequency

log = logging.getLogger(__name__)

CLASS_NOUNS = ("person", "man", "woman", "boy", "girl", "dog", "cat")
# Class-noun words for animals: their photos have no human face to find, so intake crops a centred square instead.
PET_WORDS = frozenset({"dog", "cat", "puppy", "kitten", "pet", "horse", "rabbit", "bird", "parrot", "hamster"})
MIN_TRIGGER_CHARS = 3
MAX_TRIGGER_CHARS = 20
# Zipf 3 is one use per million words: above it a word is everyday vocabulary ("kiwi" 3.3, "alice" 4.3) that the
# text encoder already has a strong meaning for; below it sit rare names and strings ("sks" 2.3, "rraj" 0).
COMMON_WORD_ZIPF = 3.0
MAX_CLASS_NOUN_WORDS = 3
MAX_CLASS_NOUN_CHARS = 40
COMPACT_TOKEN_COUNT = 2  # candidates encoded into this many tokens or fewer are all "compact"
POOL_PER_SUGGESTION = 8  # valid candidates gathered per requested suggestion before ranking by token count
# How CLIP splits text before BPE: its special tokens, contractions, letter runs, single digits, other symbols.
CLIP_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_UNKNOWN_TOKEN = "<|endoftext|>"

_TRIGGER_RE = re.compile(r"[a-z0-9]+")
_CLASS_WORD_RE = re.compile(r"[a-z]+")

# Characters from other scripts that pass for Latin letters; for the skeleton and for a precise message.
HOMOGLYPHS = {
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0443": "y", "\u0445": "x",
    "\u0456": "i", "\u0458": "j", "\u0455": "s", "\u04bb": "h", "\u0501": "d", "\u051b": "q", "\u051d": "w",
    "\u043a": "k", "\u0432": "b", "\u043c": "m", "\u043d": "h", "\u0442": "t", "\u044c": "b", "\u0491": "r",
    "\u03bf": "o", "\u03b1": "a", "\u03bd": "v", "\u03b9": "i", "\u03ba": "k", "\u03c1": "p", "\u03c5": "u",
    "\u03c4": "t", "\u03b5": "e", "\u0131": "i", "\u0261": "g", "\u217c": "l", "\u2170": "i",
}
# Applied to lowercase ASCII, pairs first: what a reader cannot tell apart at a glance in a chat font.
_SKELETON_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_SKELETON_CHARS = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "2": "z", "6": "b", "9": "g"})


@dataclass(frozen=True)
class TokenVerdict:
    ok: bool
    code: str  # "ok" or the reason, e.g. "common_word", "taken", "lookalike_chars"
    message: str
    token: str  # the normalised token (or class noun)


def needs_face(class_noun: str) -> bool:
    """False for a pet ("dog", "tabby cat", "bulldog"): its photos are not checked for a human face."""
    words = class_noun.lower().split()
    return not any(word in PET_WORDS or word.endswith(("dog", "cat")) for word in words)


def normalise_trigger(raw: str) -> str:
    return unicodedata.normalize("NFKC", raw or "").strip().lower()


def _latin_base(char: str) -> str:
    """The plain letter behind an accented or look-alike character ('' when there is none)."""
    if char in HOMOGLYPHS:
        return HOMOGLYPHS[char]
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return base if base.isascii() and base.isalnum() else ""


def trigger_skeleton(token: str) -> str:
    """A key under which visually confusable tokens collide ('rnia' and 'mia', 'k1wi' and 'kiwi', Cyrillic 'а'
    and Latin 'a'). Store it with a UNIQUE index."""
    text = normalise_trigger(token)
    text = "".join(ch if ch.isascii() else (_latin_base(ch) or ch) for ch in text)
    text = text.translate(_SKELETON_CHARS)
    for pair, single in _SKELETON_PAIRS:
        text = text.replace(pair, single)
    return text


_CLASS_SKELETONS = {trigger_skeleton(noun): noun for noun in CLASS_NOUNS}


def _reject(code: str, message: str, token: str) -> TokenVerdict:
    return TokenVerdict(False, code, message, token)


def _non_ascii_verdict(token: str) -> TokenVerdict:
    char = next(ch for ch in token if not ch.isascii())
    name = unicodedata.name(char, "an unknown character").lower()
    base = _latin_base(char)
    if char in HOMOGLYPHS:
        script = name.split()[0]
        return _reject(
            "lookalike_chars",
            f"'{char}' is a {script.capitalize()} letter that looks like the Latin '{base}'; "
            "type the token with plain a-z and 0-9 only",
            token,
        )
    if base:
        return _reject("invalid_chars", f"'{char}' has an accent; use plain letters a-z, for example '{base}'", token)
    return _reject("invalid_chars", f"'{char}' is not allowed; use only lowercase letters a-z and digits 0-9", token)


def _common_word(token: str) -> str | None:
    """The everyday English word that the token is, or is once its digits are dropped ('dog1')."""
    for word in dict.fromkeys((token, re.sub(r"[0-9]", "", token))):
        if len(word) >= 2 and zipf_frequency(word, "en") >= COMMON_WORD_ZIPF:
            return word
    return None


def _class_noun_in(token: str) -> str | None:
    letters = re.sub(r"[0-9]", "", token)
    for candidate in (token, letters):
        if candidate in CLASS_NOUNS:
            return candidate
    return _CLASS_SKELETONS.get(trigger_skeleton(token))


def validate_trigger(raw: str, taken_skeletons: Collection[str] = ()) -> TokenVerdict:
    """Check a trigger token; `taken_skeletons` holds `trigger_skeleton` of the triggers already in use."""
    token = normalise_trigger(raw)
    if not token:
        return _reject("empty", "give a trigger token of 3 to 20 lowercase letters or digits, e.g. 'rraj'", token)
    if not token.isascii():
        return _non_ascii_verdict(token)
    if not _TRIGGER_RE.fullmatch(token):
        return _reject("invalid_chars", "use only lowercase letters a-z and digits 0-9, no spaces or symbols", token)
    if len(token) < MIN_TRIGGER_CHARS or len(token) > MAX_TRIGGER_CHARS:
        code = "too_short" if len(token) < MIN_TRIGGER_CHARS else "too_long"
        count = f"{len(token)} character{'s' if len(token) != 1 else ''}"
        return _reject(code, f"'{token}' has {count}; use 3 to 20", token)
    if token.isdigit():
        return _reject("no_letters", f"'{token}' is only digits; include at least one letter", token)
    noun = _class_noun_in(token)
    if noun:
        what = "a class noun" if noun == token else f"too close to the class noun '{noun}'"
        advice = f"the trigger is a rare word that goes before it, like 'rraj {noun}'"
        return _reject("class_noun", f"'{token}' is {what}; {advice}", token)
    word = _common_word(token)
    if word:
        what = "a common English word" if word == token else f"too close to the common word '{word}'"
        return _reject("common_word", f"'{token}' is {what}, which the model already knows; pick a rare one", token)
    if trigger_skeleton(token) in taken_skeletons:
        # The same answer for every taken or reserved trigger: it must not confirm that a private one exists.
        return _reject("taken", f"'{token}' is not available; please pick another rare word", token)
    return TokenVerdict(True, "ok", f"'{token}' is a good trigger", token)


def validate_class_noun(raw: str) -> TokenVerdict:
    """One of CLASS_NOUNS, or short free text: 1 to 3 words of letters ('golden retriever')."""
    noun = " ".join(normalise_trigger(raw).split())
    if not noun:
        return _reject("empty", f"give a class noun, e.g. {', '.join(CLASS_NOUNS)}", noun)
    if noun in CLASS_NOUNS:
        return TokenVerdict(True, "ok", f"class '{noun}'", noun)
    words = noun.split(" ")
    if len(words) > MAX_CLASS_NOUN_WORDS or len(noun) > MAX_CLASS_NOUN_CHARS:
        return _reject("too_long", "describe the class in 1 to 3 words, e.g. 'golden retriever'", noun)
    if not all(_CLASS_WORD_RE.fullmatch(word) for word in words):
        return _reject("invalid_chars", "use only letters a-z for the class noun, e.g. 'person' or 'tabby cat'", noun)
    return TokenVerdict(True, "ok", f"class '{noun}'", noun)


def _hint_letters(hint: str) -> str:
    """The first word of the hint in plain letters: 'José Núñez' gives 'jose'."""
    text = "".join(_latin_base(ch) if not ch.isascii() else ch for ch in normalise_trigger(hint))
    words = re.findall(r"[a-z]+", text)
    return words[0][:8] if words else ""


def _from_hint(base: str) -> Iterator[str]:
    """Rare spellings of the hint: a doubled first or last letter, a rare consonant at either end."""
    if not base:
        return
    yield base[0] + base
    yield base + base[-1]
    for letter in "zxqvk":
        yield base + letter
        yield letter + base
    consonants = re.sub(r"[aeiou]", "", base)
    if len(consonants) >= 2:
        yield consonants + "x"
        yield "z" + consonants
    for digit in "27":
        yield base[0] * 2 + base[1:] + digit


def _generic(seed: str, limit: int = 400) -> Iterator[str]:
    """Pronounceable consonant-vowel-consonant-consonant strings, derived from the seed (deterministic)."""
    consonants, vowels = "bdfghjklmnprstvwxz", "aeiou"
    for counter in range(limit):
        digest = hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        yield (
            consonants[digest[0] % len(consonants)] + vowels[digest[1] % len(vowels)]
            + consonants[digest[2] % len(consonants)] + consonants[digest[3] % len(consonants)]
        )


def _token_count(encode: Callable[[str], list[int]], candidate: str) -> int:
    try:
        return len(encode(candidate))
    except Exception:
        log.debug("tokenizer failed on %r", candidate, exc_info=True)
        return 1_000


def suggest_trigger(
    hint: str,
    taken_skeletons: Collection[str] = (),
    encode: Callable[[str], list[int]] | None = None,
    count: int = 1,
) -> list[str]:
    """Up to `count` valid, mutually distinct triggers derived from `hint` (e.g. the user's name: 'Raj' gives
    'rraj'), falling back to generic rare strings. With `encode` (a tokenizer's encode without special tokens),
    candidates that encode into 1-2 tokens come first. Deterministic."""
    base = _hint_letters(hint)
    pool_size = max(count, 1) * POOL_PER_SUGGESTION
    ranked: list[str] = []
    seen: set[str] = set(taken_skeletons)
    for candidate in itertools.chain(_from_hint(base), _generic(base or "likeness")):
        skeleton = trigger_skeleton(candidate)
        if skeleton not in seen and validate_trigger(candidate, taken_skeletons).ok:
            seen.add(skeleton)
            ranked.append(candidate)
            if len(ranked) >= pool_size:
                break
    if encode is not None:
        counts = {candidate: _token_count(encode, candidate) for candidate in ranked}
        ranked.sort(key=lambda c: max(counts[c], COMPACT_TOKEN_COUNT))  # stable: hint order within a bucket
    return ranked[: max(count, 0)]


def load_family_tokenizer_encode(model_dir: str | Path) -> Callable[[str], list[int]] | None:
    """The CLIP tokenizer's encode (no special tokens) from `<model_dir>/tokenizer`, or None when there is none.
    Uses the `tokenizers` library directly: the bot process never imports transformers or torch."""
    folder = Path(model_dir) / "tokenizer"
    try:
        tokenizer = _load_clip_tokenizer(folder)
        if tokenizer is None:
            return None
        if not tokenizer.encode("a photo", add_special_tokens=False).ids:
            raise ValueError("the tokenizer encodes text into nothing")
    except Exception:
        log.warning("could not load the tokenizer in %s; suggesting triggers without it", folder, exc_info=True)
        return None

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return encode


def _load_clip_tokenizer(folder: Path) -> Tokenizer | None:
    """`tokenizer.json` when the model has one; otherwise CLIP's classic `vocab.json` and `merges.txt`, set up the
    way CLIP tokenizes: NFC, whitespace runs to one space, lower case, the CLIP split, byte-level BPE."""
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not vocab.is_file():
        return None
    if not merges.is_file():
        raise FileNotFoundError(f"{vocab} has no merges.txt beside it")
    model = models.BPE.from_file(str(vocab), str(merges), unk_token=CLIP_UNKNOWN_TOKEN,
                                 continuing_subword_prefix="", end_of_word_suffix="</w>")
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tokenizer
