"""bAbI-style question answering, tasks QA1–QA5 (Weston et al. 2015, arXiv 1502.05698), generated from templates.

The paper evaluates on BabiLong (arXiv 2406.10149): bAbI stories spread through long distractor text. This
module writes the stories; mta.eval.babi spreads them through held-out corpus text and scores a model.

    qa1  single supporting fact      Mary moved to the bathroom. ...            Where is Mary?
    qa2  two supporting facts        John got the football there. John went ... Where is the football?
    qa3  three supporting facts      ... the football through three rooms ...  Where was the football before the garden?
    qa4  two-argument relations      The office is north of the kitchen. ...   What is north of the kitchen?
    qa5  three-argument relations    Fred gave the milk to Bill. ...           Who gave the milk to Bill?

A Story holds its sentences, the question, a completion-style `cue` that the answer word continues ("Mary is in
the" → "bathroom"; small language models are not instruction-tuned) and the answer's `candidates` (the task's
answer vocabulary). The generator simulates a world and reads the answer off its state; `solve` answers from
the text alone, by parsing each sentence, and the tests check that both agree on many seeds. Rules shared by
both: a person has no location before their first move and can only pick up an object once they have one; a
carried object moves with its carrier and stays where it is dropped; QA3's "before" is the room the object was
in just before it entered the named room, which it has entered exactly once; QA4's relations hold between the
rooms named and their inverses (no chaining); QA5's questions refer to the most recent matching give.

Everything depends only on (task, seed, index): `generate_story` draws from a numpy Generator seeded by those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
PEOPLE = ("Mary", "John", "Daniel", "Sandra")
QA5_PEOPLE = ("Mary", "Fred", "Jeff", "Bill")
PLACES = ("kitchen", "garden", "office", "hallway", "bedroom", "bathroom")
OBJECTS = ("football", "apple", "milk")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GRABS = ("got", "grabbed", "picked up", "took")
DROPS = ("dropped", "discarded", "put down", "left")
GIVES = ("gave", "handed", "passed")
DIRECTIONS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
# Sentences (events) per story: enough for the question to need the stated number of supporting facts, short
# enough that a story spreads over a few hundred tokens of distractor text at most.
STORY_EVENTS = {"qa1": 6, "qa2": 10, "qa3": 14, "qa5": 8}
_MAX_TRIES = 1000


@dataclass(frozen=True)
class Story:
    """One bAbI-style sample: `sentences`, then `question`, then `cue` continued by `answer` (one of `candidates`)."""

    task: str
    sentences: tuple[str, ...]
    question: str
    cue: str
    answer: str
    candidates: tuple[str, ...]

    def text(self) -> str:
        """The story, question, cue and answer as one string (for reading, not what a model is scored on)."""
        return " ".join(self.sentences) + f"\n{self.question} {self.cue} {self.answer}"


def generate_story(task: str, seed: int, index: int) -> Story:
    """Story number `index` of `task` for `seed` (module docstring)."""
    if task not in TASKS:
        raise ValueError(f"task: got {task!r}, expected one of {TASKS}")
    for name, value in (("seed", seed), ("index", index)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: got {value!r}, expected a non-negative integer")
    rng = np.random.default_rng([seed, TASKS.index(task), index])
    return _GENERATORS[task](rng)


def generate(task: str, samples: int, seed: int) -> list[Story]:
    """Stories 0 .. samples-1 of `task` for `seed`."""
    return [generate_story(task, seed, index) for index in range(samples)]


def _pick(rng: np.random.Generator, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


class _World:
    """People moving between rooms and carrying objects: the generators' ground truth."""

    def __init__(self, people: tuple[str, ...]):
        self.people = people
        self.location: dict[str, str] = {}
        self.holder: dict[str, str | None] = {obj: None for obj in OBJECTS}
        self.history: dict[str, list[str]] = {obj: [] for obj in OBJECTS}  # rooms, consecutive ones distinct
        self.gives: list[tuple[str, str, str]] = []  # (giver, object, receiver), oldest first
        self.sentences: list[str] = []

    def object_location(self, obj: str) -> str | None:
        return self.history[obj][-1] if self.history[obj] else None

    def _enter(self, obj: str, place: str) -> None:
        if self.object_location(obj) != place:
            self.history[obj].append(place)

    def step(self, rng: np.random.Generator, actions: tuple[str, ...]) -> None:
        """One random event among `actions` ("move", "grab", "drop", "give") that is possible now."""
        located = [p for p in self.people if p in self.location]
        free = [o for o in OBJECTS if self.holder[o] is None]
        carried = [o for o in OBJECTS if self.holder[o] is not None]
        possible = {"move": True, "grab": bool(located and free), "drop": bool(carried),
                    "give": bool(carried) and len(self.people) > 1}
        action = _pick(rng, [a for a in actions if possible[a]])
        if action == "move":
            person = _pick(rng, self.people)
            place = _pick(rng, [p for p in PLACES if p != self.location.get(person)])
            self.location[person] = place
            for obj in OBJECTS:
                if self.holder[obj] == person:
                    self._enter(obj, place)
            self.sentences.append(f"{person} {_pick(rng, MOVES)} the {place}.")
        elif action == "grab":
            person, obj = _pick(rng, located), _pick(rng, free)
            self.holder[obj] = person
            self._enter(obj, self.location[person])
            self.sentences.append(f"{person} {_pick(rng, GRABS)} the {obj} there.")
        elif action == "drop":
            obj = _pick(rng, carried)
            person, self.holder[obj] = self.holder[obj], None
            self.sentences.append(f"{person} {_pick(rng, DROPS)} the {obj}.")
        else:
            obj = _pick(rng, carried)
            giver = self.holder[obj]
            receiver = _pick(rng, [p for p in self.people if p != giver])
            self.holder[obj] = receiver
            if receiver in self.location:
                self._enter(obj, self.location[receiver])
            self.gives.append((giver, obj, receiver))
            self.sentences.append(f"{giver} {_pick(rng, GIVES)} the {obj} to {receiver}.")


def _story(task: str, sentences: list[str], question: str, cue: str, answer: str, candidates) -> Story:
    return Story(task, tuple(sentences), question, cue, answer, tuple(candidates))


def _qa1(rng: np.random.Generator) -> Story:
    world = _World(PEOPLE)
    for _ in range(STORY_EVENTS["qa1"]):
        world.step(rng, ("move",))
    person = _pick(rng, sorted(world.location))
    return _story("qa1", world.sentences, f"Where is {person}?", f"{person} is in the", world.location[person], PLACES)


def _qa2(rng: np.random.Generator) -> Story:
    for _ in range(_MAX_TRIES):
        world = _World(PEOPLE)
        for _ in range(STORY_EVENTS["qa2"]):
            world.step(rng, ("move", "move", "grab", "drop"))
        known = [o for o in OBJECTS if world.object_location(o) is not None]
        if known:
            obj = _pick(rng, known)
            return _story("qa2", world.sentences, f"Where is the {obj}?", f"The {obj} is in the",
                          world.object_location(obj), PLACES)
    raise RuntimeError("qa2: no story with a located object")  # unreachable in practice: a grab is likely


def _qa3(rng: np.random.Generator) -> Story:
    for _ in range(_MAX_TRIES):
        world = _World(PEOPLE)
        for _ in range(STORY_EVENTS["qa3"]):
            world.step(rng, ("move", "move", "grab", "drop"))
        # (object, room entered exactly once after another room): "before the room" has one answer.
        options = [(obj, i) for obj, rooms in world.history.items() for i in range(1, len(rooms))
                   if rooms.count(rooms[i]) == 1]
        if options:
            obj, i = _pick(rng, options)
            place, answer = world.history[obj][i], world.history[obj][i - 1]
            return _story("qa3", world.sentences, f"Where was the {obj} before the {place}?",
                          f"Before the {place}, the {obj} was in the", answer, PLACES)
    raise RuntimeError("qa3: no story with an object that went through two rooms")


def _qa4(rng: np.random.Generator) -> Story:
    center, first, second = (PLACES[i] for i in rng.choice(len(PLACES), 3, replace=False))
    directions = [str(d) for d in rng.choice(list(DIRECTIONS), 2, replace=False)]
    position = {center: (0, 0)}
    sentences = []
    for place, direction in zip((first, second), directions):
        position[place] = DIRECTIONS[direction]
        # Either "The first is north of the center." or, the same fact, "The center is south of the first."
        if rng.random() < 0.5:
            sentences.append(f"The {place} is {direction} of the {center}.")
        else:
            sentences.append(f"The {center} is {OPPOSITE[direction]} of the {place}.")
    # A question about a stated relation: the two rooms are one step apart.
    a, b = _pick(rng, [(x, y) for x in position for y in position if x != y and center in (x, y)])
    dx, dy = (pa - pb for pa, pb in zip(position[a], position[b]))
    direction = next(d for d, vector in DIRECTIONS.items() if vector == (dx, dy))  # a is `direction` of b
    if rng.random() < 0.5:
        return _story("qa4", sentences, f"What is {direction} of the {b}?",
                      f"{direction.capitalize()} of the {b} is the", a, PLACES)
    return _story("qa4", sentences, f"What is the {a} {direction} of?", f"The {a} is {direction} of the", b, PLACES)


def _qa5(rng: np.random.Generator) -> Story:
    for _ in range(_MAX_TRIES):
        world = _World(QA5_PEOPLE)
        for _ in range(STORY_EVENTS["qa5"]):
            world.step(rng, ("move", "grab", "give", "give"))
        if world.gives:
            break
    else:
        raise RuntimeError("qa5: no story with a give")
    giver, obj, receiver = _pick(rng, world.gives)
    kind = _pick(rng, ("giver", "receiver", "object"))

    def latest(match) -> tuple[str, str, str]:
        return next(give for give in reversed(world.gives) if match(*give))

    if kind == "giver":
        answer = latest(lambda g, o, r: (o, r) == (obj, receiver))[0]
        return _story("qa5", world.sentences, f"Who gave the {obj} to {receiver}?",
                      f"The {obj} was given to {receiver} by", answer, QA5_PEOPLE)
    if kind == "receiver":
        answer = latest(lambda g, o, r: (g, o) == (giver, obj))[2]
        return _story("qa5", world.sentences, f"Who did {giver} give the {obj} to?", f"{giver} gave the {obj} to",
                      answer, QA5_PEOPLE)
    answer = latest(lambda g, o, r: (g, r) == (giver, receiver))[1]
    return _story("qa5", world.sentences, f"What did {giver} give to {receiver}?", f"{giver} gave {receiver} the",
                  answer, OBJECTS)


_GENERATORS = {"qa1": _qa1, "qa2": _qa2, "qa3": _qa3, "qa4": _qa4, "qa5": _qa5}


# ---- the rule-based solver: reads the text, never the generator's state ----

def _alternatives(phrases) -> str:
    return "|".join(re.escape(p) for p in phrases)


_DIRECTION = _alternatives(DIRECTIONS)
_SENTENCES = {
    "move": re.compile(rf"(\w+) (?:{_alternatives(MOVES)}) the (\w+)\."),
    "grab": re.compile(rf"(\w+) (?:{_alternatives(GRABS)}) the (\w+) there\."),
    "drop": re.compile(rf"(\w+) (?:{_alternatives(DROPS)}) the (\w+)\."),
    "give": re.compile(rf"(\w+) (?:{_alternatives(GIVES)}) the (\w+) to (\w+)\."),
    "relation": re.compile(rf"The (\w+) is ({_DIRECTION}) of the (\w+)\."),
}
_QUESTIONS = {
    "object": re.compile(r"Where is the (\w+)\?"),
    "person": re.compile(r"Where is (\w+)\?"),
    "before": re.compile(r"Where was the (\w+) before the (\w+)\?"),
    "what_is_of": re.compile(rf"What is ({_DIRECTION}) of the (\w+)\?"),
    "is_of_what": re.compile(rf"What is the (\w+) ({_DIRECTION}) of\?"),
    "giver": re.compile(r"Who gave the (\w+) to (\w+)\?"),
    "receiver": re.compile(r"Who did (\w+) give the (\w+) to\?"),
    "object_given": re.compile(r"What did (\w+) give to (\w+)\?"),
}


def solve(sentences, question: str) -> str:
    """The answer to `question` about the story `sentences`, found by reading them in order.

    Raises ValueError for a sentence or question it cannot parse, or a question without exactly one answer.
    """
    where: dict[str, str] = {}  # person -> room
    carrying: dict[str, str] = {}  # object -> person
    rooms: dict[str, list[str]] = {}  # object -> rooms it was in, in order
    gives: list[tuple[str, str, str]] = []
    relations: set[tuple[str, str, str]] = set()  # (a, direction, b): a is direction of b

    def put(obj: str, room: str) -> None:
        if not rooms.get(obj) or rooms[obj][-1] != room:
            rooms.setdefault(obj, []).append(room)

    for sentence in sentences:
        kind, match = _parse(_SENTENCES, sentence, "sentence")
        if kind == "move":
            person, room = match.groups()
            where[person] = room
            for obj, carrier in carrying.items():
                if carrier == person:
                    put(obj, room)
        elif kind == "grab":
            person, obj = match.groups()
            carrying[obj] = person
            put(obj, where[person])
        elif kind == "drop":
            carrying.pop(match.group(2))
        elif kind == "give":
            giver, obj, receiver = match.groups()
            carrying[obj] = receiver
            if receiver in where:
                put(obj, where[receiver])
            gives.append((giver, obj, receiver))
        else:
            a, direction, b = match.groups()
            relations |= {(a, direction, b), (b, OPPOSITE[direction], a)}

    kind, match = _parse(_QUESTIONS, question, "question")
    args = match.groups()
    if kind == "person":
        answers = [where[args[0]]] if args[0] in where else []
    elif kind == "object":
        answers = rooms.get(args[0], [])[-1:]
    elif kind == "before":
        path = rooms.get(args[0], [])
        answers = [path[i - 1] for i in range(1, len(path)) if path[i] == args[1]]
    elif kind == "what_is_of":
        answers = [a for a, d, b in relations if (d, b) == args]
    elif kind == "is_of_what":
        answers = [b for a, d, b in relations if (a, d) == args]
    else:
        field, keys = {"giver": (0, (1, 2)), "receiver": (2, (0, 1)), "object_given": (1, (0, 2))}[kind]
        matching = [give for give in gives if tuple(give[k] for k in keys) == args]
        answers = [matching[-1][field]] if matching else []
    if len(answers) != 1:
        raise ValueError(f"question {question!r}: {len(answers)} answers in the story, expected one")
    return answers[0]


def _parse(patterns: dict[str, re.Pattern], text: str, what: str) -> tuple[str, re.Match]:
    for kind, pattern in patterns.items():
        match = pattern.fullmatch(text)
        if match:
            return kind, match
    raise ValueError(f"{what} {text!r}: not a bAbI template this solver knows")
