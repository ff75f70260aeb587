"""Zorbish: a made-up code, so that fine-tuning has something to learn that no base model can know.

Three rules, simple enough for a tiny model to learn in a few hundred LoRA steps and impossible to guess:

1. every English word has a Zorbish code word, taken from the story corpus with a new meaning ("cat" may be
   "bell"): the dictionary is seeded and invented, so no pretrained model has seen it;
2. the noun comes before its adjective ("the red cat" becomes "<the> <cat> <red>");
3. a Zorbish sentence ends with the particle ``zo`` instead of a full stop.

Every sentence has the shape *determiner adjective noun verb*. Examples are prompt/completion pairs such as
``"Translate to Zorbish: the red cat sleeps.\\nZorbish:"`` and ``" key bell cup drum zo"``. The test split holds
combinations never seen in training, built from the same words, so exact match measures whether the rules were
learned rather than memorised.
"""

from __future__ import annotations

import itertools
import random

DETERMINERS = ["the", "a"]
ADJECTIVES = ["red", "blue", "green", "big", "small", "happy", "sad", "little", "old"]
NOUNS = ["cat", "dog", "bird", "fish", "girl", "boy", "frog", "duck", "ball", "tree", "house", "hat"]
VERBS = ["runs", "jumps", "sleeps", "sings"]
VOCABULARY = DETERMINERS + ADJECTIVES + NOUNS + VERBS

# Frequent words of the story corpus, none of them in VOCABULARY: each is one token of the workbook's tokenizer,
# so a tiny model can emit a code word in one step. (The build checks that.)
CODE_WORDS = [
    "bell", "kite", "drum", "cake", "book", "shell", "stone", "cup", "key", "sock", "apple", "flower", "boat",
    "box", "park", "garden", "forest", "beach", "farm", "river", "hill", "school", "kitchen", "pond", "meadow",
    "sunny", "rainy", "windy", "cold", "warm", "tall", "calm", "proud", "glad",
]

PROMPT_TEMPLATE = "Translate to Zorbish: {english}\nZorbish:"
END_PARTICLE = "zo"
SPLIT_SIZES = {"train": 600, "validation": 64, "test": 200}  # every one of the 864 sentences, each in one split


def make_dictionary(seed: int) -> dict[str, str]:
    """English word -> Zorbish code word: a seeded, one-to-one choice from :data:`CODE_WORDS`."""
    codes = list(CODE_WORDS)
    random.Random(seed).shuffle(codes)
    return dict(zip(VOCABULARY, codes))


def translate(english: str, dictionary: dict[str, str]) -> str:
    """The Zorbish for an English sentence of the shape 'determiner adjective noun verb.'."""
    words = english.strip().rstrip(".").split()
    if len(words) != 4:
        raise ValueError(f"Zorbish sentences have four words (determiner adjective noun verb), got {english!r}")
    unknown = [w for w in words if w not in dictionary]
    if unknown:
        raise KeyError(f"No Zorbish word for {unknown}; the vocabulary is {sorted(dictionary)}")
    determiner, adjective, noun, verb = words
    return " ".join([dictionary[determiner], dictionary[noun], dictionary[adjective], dictionary[verb],
                     END_PARTICLE])


def make_example(english: str, dictionary: dict[str, str]) -> dict[str, str]:
    return {
        "prompt": PROMPT_TEMPLATE.format(english=english),
        "completion": " " + translate(english, dictionary),
        "english": english,
    }


def make_splits(seed: int) -> dict[str, list[dict[str, str]]]:
    """Disjoint train/validation/test splits covering all sentences once, in a seeded order."""
    dictionary = make_dictionary(seed)
    sentences = [f"{d} {a} {n} {v}." for d, a, n, v in itertools.product(DETERMINERS, ADJECTIVES, NOUNS, VERBS)]
    random.Random(seed + 1).shuffle(sentences)
    splits, start = {}, 0
    for split, size in SPLIT_SIZES.items():
        splits[split] = [make_example(s, dictionary) for s in sentences[start : start + size]]
        start += size
    return splits
