"""Wording of messages, in one place: counts with their nouns, articles, and suggestions for mistyped names."""
from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 epoch', '2 epochs', '1,797 images', '3 classes': nouns ending in s, x or sh take -es, the rest -s;
    give `many` for any other plural (plural(2, 'batch', 'batches'))."""
    if count == 1:
        return f"1 {noun}"
    if many is None:
        many = noun + ("es" if noun.endswith(("s", "x", "sh")) else "s")
    return f"{count:,} {many}"


def with_article(word: str) -> str:
    """'a float', 'an int'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def did_you_mean(word: str, choices) -> str:
    """"; did you mean 'digits'?" for the choice closest to a mistyped word, or "" where none is close. Ties go
    to the longer shared beginning ('resnet2': resnet20, not resnet32), then to the first choice given."""
    import difflib
    import os

    word, best, key = str(word), None, (0.5, -1)  # below half the characters in common: no suggestion
    for choice in map(str, choices):
        score = (difflib.SequenceMatcher(None, word, choice).ratio(), len(os.path.commonprefix([word, choice])))
        if score > key:
            best, key = choice, score
    return f"; did you mean '{best}'?" if best is not None and best != word else ""
