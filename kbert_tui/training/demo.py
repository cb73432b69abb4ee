"""The built-in demo dataset: generated product-review sentences with negation (no download, no copied text).

The label is the adjective's polarity, flipped when a negation ("not", "far from", …) precedes it.
A third of the sentences are negated and distractor clauses add polarity words that do not decide
the label, so counting words tops out around 70%: beyond that a model has to learn word order.
"""

from __future__ import annotations

import random

LABELS = ("negative", "positive")
NEGATION_RATE = 0.3  # a third of the sentences flip: word counts alone get ~70%, word order the rest

_SUBJECTS = (
    "the battery", "the screen", "this phone", "the service", "the food", "the room", "the delivery",
    "the sound", "the staff", "the camera", "this laptop", "the film", "the soundtrack", "the plot",
    "the menu", "the keyboard", "the app", "the hotel", "the coffee", "the checkout", "the manual",
    "the charger", "the seats", "the update", "the packaging",
)
_VERBS = ("is", "was", "seemed", "felt", "looked", "turned out to be", "has been", "really is")
_POSITIVE = (
    "great", "excellent", "wonderful", "reliable", "fantastic", "pleasant", "impressive", "superb",
    "delightful", "solid", "friendly", "comfortable", "fast", "clean", "helpful",
)
_NEGATIVE = (
    "terrible", "awful", "disappointing", "unreliable", "poor", "broken", "annoying", "mediocre",
    "dreadful", "useless", "rude", "uncomfortable", "slow", "dirty", "confusing",
)
_NEGATIONS = ("not", "never", "hardly", "not at all", "far from", "in no way")
_INTENSIFIERS = ("", "", "", "very", "quite", "truly", "rather", "so")
_OPENERS = (
    "honestly ,", "to be fair ,", "after two weeks ,", "on the first day ,", "as expected ,", "in the end ,",
    "for the price ,", "compared to the old one ,",
)
_DISTRACTORS = (
    "even though the weather was {adj}", "although my neighbour called it {adj}",
    "while the advert promised something {adj}", "despite a {adj} start", "unlike the {adj} reviews online",
)


def _sentence(rng: random.Random) -> tuple[str, str]:
    positive_word = rng.random() < 0.5
    negated = rng.random() < NEGATION_RATE
    adjective = rng.choice(_POSITIVE if positive_word else _NEGATIVE)
    words = []
    if rng.random() < 0.3:
        words.append(rng.choice(_OPENERS))
    words += [rng.choice(_SUBJECTS), rng.choice(_VERBS)]
    if negated:
        words.append(rng.choice(_NEGATIONS))
    intensifier = rng.choice(_INTENSIFIERS)
    if intensifier:
        words.append(intensifier)
    words.append(adjective)
    if rng.random() < 0.35:
        words.append(rng.choice(_DISTRACTORS).format(adj=rng.choice(_POSITIVE + _NEGATIVE)))
    label = LABELS[int(positive_word != negated)]
    return " ".join(words), label


def demo_rows(count: int, seed: int, *, prefix: str = "r") -> list[dict[str, str]]:
    """`count` rows {"id", "text", "label"}, the same for the same seed."""
    rng = random.Random(f"kbert-tui-demo-{seed}")
    rows = []
    for index in range(count):
        text, label = _sentence(rng)
        rows.append({"id": f"{prefix}{index:05d}", "text": text, "label": label})
    return rows


DEMO_SIZES = {"train": 4000, "validation": 400, "test": 200}


def demo_splits(seed: int) -> dict[str, list[dict[str, str]]]:
    """Train, validation and test splits drawn from different streams of the same generator."""
    return {name: demo_rows(size, seed * 3 + i, prefix=name[0]) for i, (name, size) in enumerate(DEMO_SIZES.items())}
