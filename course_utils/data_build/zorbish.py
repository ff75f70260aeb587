"""Zorbish: a made-up language, so that fine-tuning has something to learn that no base model can know.

The rules are simple enough for a tiny model to pick up in a few hundred LoRA steps, and impossible to guess:

1. every English word has one Zorbish word (a seeded, invented dictionary);
2. the words keep their English order;
3. a Zorbish sentence ends with the particle ``zo`` instead of a full stop.

Examples are prompt/completion pairs: ``"Translate to Zorbish: the red cat sleeps.\\nZorbish:"`` and
``" ka rilo mabu tesi zo"``. The test split holds sentences never seen in training, built from the same words,
so exact match measures whether the rules were learned rather than memorised.
"""

from __future__ import annotations

import random

DETERMINERS = ["the", "a"]
ADJECTIVES = ["red", "blue", "green", "big", "small", "happy", "sad", "little", "old"]
NOUNS = ["cat", "dog", "bird", "fish", "girl", "boy", "frog", "duck", "ball", "tree", "house", "hat"]
VERBS_TRANSITIVE = ["sees", "likes", "finds", "helps", "follows"]
VERBS_INTRANSITIVE = ["runs", "jumps", "sleeps", "sings"]
PREPOSITIONS = ["in", "on", "near", "with"]
VOCABULARY = DETERMINERS + ADJECTIVES + NOUNS + VERBS_TRANSITIVE + VERBS_INTRANSITIVE + PREPOSITIONS

PROMPT_TEMPLATE = "Translate to Zorbish: {english}\nZorbish:"
END_PARTICLE = "zo"
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def make_dictionary(seed: int) -> dict[str, str]:
    """English word -> invented Zorbish word, unique and never an English word of the vocabulary."""
    rng = random.Random(seed)
    used = set(VOCABULARY) | {END_PARTICLE}
    dictionary = {}
    for word in VOCABULARY:
        syllables = 1 if word in DETERMINERS else 2
        while True:
            candidate = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
            if candidate not in used:
                break
        used.add(candidate)
        dictionary[word] = candidate
    return dictionary


def _noun_phrase(rng: random.Random) -> list[str]:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return words


def make_sentence(rng: random.Random) -> list[str]:
    """One English sentence from the Zorbish grammar, as a list of words (no punctuation)."""
    subject = _noun_phrase(rng)
    shape = rng.random()
    if shape < 0.35:
        return subject + [rng.choice(VERBS_INTRANSITIVE)]
    if shape < 0.7:
        return subject + [rng.choice(VERBS_TRANSITIVE)] + _noun_phrase(rng)
    return subject + [rng.choice(VERBS_INTRANSITIVE), rng.choice(PREPOSITIONS)] + _noun_phrase(rng)


def translate(words: list[str], dictionary: dict[str, str]) -> str:
    """The Zorbish translation of an English sentence given as words."""
    unknown = [w for w in words if w not in dictionary]
    if unknown:
        raise KeyError(f"No Zorbish word for {unknown}; the vocabulary is {sorted(dictionary)}")
    return " ".join([dictionary[w] for w in words] + [END_PARTICLE])


def make_example(words: list[str], dictionary: dict[str, str]) -> dict[str, str]:
    english = " ".join(words) + "."
    return {
        "prompt": PROMPT_TEMPLATE.format(english=english),
        "completion": " " + translate(words, dictionary),
        "english": english,
    }


def make_splits(seed: int, n_train: int = 2000, n_validation: int = 200, n_test: int = 200) -> dict[str, list[dict]]:
    """Disjoint train/validation/test splits: no English sentence appears in two splits."""
    rng = random.Random(seed)
    dictionary = make_dictionary(seed)
    seen: set[tuple[str, ...]] = set()
    splits: dict[str, list[dict]] = {}
    for split, size in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        rows = []
        while len(rows) < size:
            words = make_sentence(rng)
            if tuple(words) in seen:
                continue
            seen.add(tuple(words))
            rows.append(make_example(words, dictionary))
        splits[split] = rows
    return splits
