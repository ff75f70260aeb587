"""A seeded generator of short, simple English stories: the workbook's pretraining corpus.

The stories are built from a small grammar (characters, places, things, feelings and a few plot shapes), so a
tiny model trained for a minute on a CPU learns visible grammar: who did what, where, and how they felt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES_GIRL = ["Lily", "Mia", "Sara", "Anna", "Lucy", "Emma", "Zoe", "Ella", "Nora", "Ruby", "Ivy", "Rosa"]
NAMES_BOY = ["Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Finn", "Noah", "Theo", "Omar", "Kai", "Eli"]
ANIMALS = {
    "cat": "Mittens", "dog": "Rex", "bird": "Pip", "rabbit": "Hops", "duck": "Quack", "frog": "Jumpy",
    "fox": "Rusty", "bear": "Bruno", "mouse": "Nibbles", "horse": "Star", "fish": "Bubbles", "owl": "Hoot",
}
ANIMAL_SOUNDS = {
    "cat": "meow", "dog": "woof", "bird": "tweet", "rabbit": "squeak", "duck": "quack", "frog": "ribbit",
    "fox": "yip", "bear": "growl", "mouse": "squeak", "horse": "neigh", "fish": "blub", "owl": "hoo",
}
SIZES = ["little", "big", "small", "tiny", "tall"]
COLORS = ["red", "blue", "green", "yellow", "brown", "white", "black", "pink", "orange", "purple"]
# place -> (where something happens, where someone goes)
PLACES = {
    "park": ("in the park", "to the park"), "garden": ("in the garden", "to the garden"),
    "forest": ("in the forest", "to the forest"), "beach": ("at the beach", "to the beach"),
    "house": ("in the house", "into the house"), "farm": ("on the farm", "to the farm"),
    "river": ("by the river", "to the river"), "hill": ("on the hill", "up the hill"),
    "school": ("at school", "to school"), "kitchen": ("in the kitchen", "into the kitchen"),
    "pond": ("by the pond", "to the pond"), "meadow": ("in the meadow", "to the meadow"),
}
THINGS = ["ball", "kite", "box", "hat", "boat", "cake", "book", "flower", "shell", "stone", "cup", "drum",
          "apple", "key", "bell", "sock"]
GAMES = ["play tag", "jump and run", "sing songs", "build a tower", "draw pictures", "hide and seek",
         "dance", "look for shells", "fly a kite", "read books"]
FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "calm"]
FEELINGS_BAD = ["sad", "scared", "angry", "tired", "worried"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]
TIMES = ["One day", "One morning", "One evening", "Later that day", "The next day", "After lunch"]
OPENINGS = ["Once upon a time", "One day", "Long ago", "Once", "Not long ago"]
HELP_ACTIONS = ["helped", "hugged", "thanked", "followed", "called"]
LOSS_EVENTS = [
    "could not find the {thing}", "dropped the {thing} in the water", "lost the {thing} in the grass",
    "saw that the {thing} was broken", "left the {thing} on the hill",
]
ENDINGS = [
    "From that day on, {a} and {b} were best friends.",
    "They played together until the sun went down.",
    "{a} smiled, and {b} smiled too.",
    "It was the best day ever.",
    "Then they went home and had a big dinner.",
    "That night, {a} slept well and dreamed of the {place}.",
]
MORALS = {
    "lost": "{a} learned that friends help each other.",
    "weather": "{a} learned that a day with a friend is never boring.",
    "animal": "{a} learned to be kind to animals.",
    "sharing": "{a} learned that it is good to share.",
}


@dataclass(frozen=True)
class Character:
    name: str      # what the story calls them after the introduction
    intro: str     # how the story first introduces them
    pronoun: str   # he / she / it
    possessive: str


def _character(rng: random.Random) -> Character:
    roll = rng.random()
    if roll < 0.35:
        name = rng.choice(NAMES_GIRL)
        return Character(name, f"a {rng.choice(SIZES)} girl named {name}", "she", "her")
    if roll < 0.7:
        name = rng.choice(NAMES_BOY)
        return Character(name, f"a {rng.choice(SIZES)} boy named {name}", "he", "his")
    animal = rng.choice(sorted(ANIMALS))
    name = ANIMALS[animal]
    color = rng.choice(COLORS)
    return Character(name, f"{_a(color)} {animal} named {name}", "it", "its")


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: "a red ball", "an orange cat"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _story_lost_thing(rng: random.Random, hero: Character, friend: Character, place: str) -> list[str]:
    thing = rng.choice(THINGS)
    color = rng.choice(COLORS)
    bad, good = rng.choice(FEELINGS_BAD), rng.choice(FEELINGS_GOOD)
    loss = rng.choice(LOSS_EVENTS).format(thing=thing)
    return [
        f"{hero.name} had {_a(color + ' ' + thing)}.",
        f"{_cap(hero.pronoun)} loved the {thing} very much.",
        f"{rng.choice(TIMES)}, {hero.name} went {PLACES[place][1]} and {loss}.",
        f"{hero.name} was {bad}.",
        f"Then {friend.intro} came to help.",
        f"\"Do not be {bad},\" said {friend.name}. \"I will help you.\"",
        f"{friend.name} looked and looked, and at last {friend.pronoun} found the {thing}.",
        f"{hero.name} was {good}. \"Thank you, {friend.name}!\" {hero.pronoun} said.",
    ]


def _story_weather(rng: random.Random, hero: Character, friend: Character, place: str) -> list[str]:
    game = rng.choice(GAMES)
    weather = rng.choice(WEATHER)
    thing = rng.choice(THINGS)
    return [
        f"It was a {weather} day.",
        f"{hero.name} wanted to {game} {PLACES[place][0]}.",
        f"{_cap(hero.pronoun)} asked {friend.intro} to come too.",
        f"\"Yes!\" said {friend.name}. \"Let us {game}.\"",
        f"They took {_a(rng.choice(COLORS) + ' ' + thing)} with them.",
        f"{hero.name} and {friend.name} had a lot of fun {PLACES[place][0]}.",
    ]


def _story_animal(rng: random.Random, hero: Character, friend: Character, place: str) -> list[str]:
    animal = rng.choice(sorted(ANIMALS))
    sound = ANIMAL_SOUNDS[animal]
    size = rng.choice(SIZES)
    feeling = rng.choice(FEELINGS_GOOD)
    return [
        f"{hero.name} went {PLACES[place][1]} with {friend.intro}.",
        f"There they saw a {size} {animal}.",
        f"The {animal} said, \"{_cap(sound)}, {sound}!\"",
        f"{hero.name} gave the {animal} some food.",
        f"The {animal} was {feeling} and followed them home.",
        f"{friend.name} {rng.choice(HELP_ACTIONS)} {hero.name}, and the {animal} stayed with them.",
    ]


def _story_sharing(rng: random.Random, hero: Character, friend: Character, place: str) -> list[str]:
    thing = rng.choice(THINGS)
    return [
        f"{hero.name} had a new {thing}.",
        f"{_cap(hero.possessive)} friend was {friend.intro}.",
        f"{friend.name} wanted to play with the {thing} too.",
        f"At first {hero.name} did not want to share.",
        f"{friend.name} was {rng.choice(FEELINGS_BAD)} and sat down {PLACES[place][0]}.",
        f"Then {hero.name} gave the {thing} to {friend.name}.",
        f"\"We can play together,\" said {hero.name}.",
        f"{friend.name} was {rng.choice(FEELINGS_GOOD)}.",
    ]


PLOTS = {"lost": _story_lost_thing, "weather": _story_weather, "animal": _story_animal, "sharing": _story_sharing}


def make_story(rng: random.Random) -> str:
    """One story of five to ten sentences."""
    hero = _character(rng)
    friend = _character(rng)
    while friend.name == hero.name:
        friend = _character(rng)
    place = rng.choice(sorted(PLACES))
    sentences = [f"{rng.choice(OPENINGS)}, there was {hero.intro}."]
    plot = rng.choice(sorted(PLOTS))
    sentences += PLOTS[plot](rng, hero, friend, place)
    ending = MORALS[plot] if rng.random() < 0.4 else rng.choice(ENDINGS)
    sentences.append(ending.format(a=hero.name, b=friend.name, place=place))
    return " ".join(sentences)


def make_stories(n: int, seed: int) -> list[str]:
    """``n`` stories from a seeded generator (same seed, same stories, on every machine)."""
    rng = random.Random(seed)
    return [make_story(rng) for _ in range(n)]
