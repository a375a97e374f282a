"""bAbI-style QA1–QA5 (mta.data.babi): the generator is seeded, its answers agree with a rule-based solver that
reads only the text, and the solver itself answers hand-checked stories right."""

import pytest

from mta.data.babi import DIRECTIONS, OBJECTS, PEOPLE, PLACES, QA5_PEOPLE, TASKS, generate, generate_story, solve

NAMES = set(PLACES + PEOPLE + QA5_PEOPLE + OBJECTS) | set(DIRECTIONS)

HAND_CHECKED = [
    (["Mary moved to the bathroom.", "John went to the hallway.", "Mary went back to the kitchen."],
     {"Where is Mary?": "kitchen", "Where is John?": "hallway"}),
    (["John travelled to the hallway.", "John got the football there.", "John moved to the garden.",
      "Sandra went to the office.", "John dropped the football.", "John went to the kitchen."],
     {"Where is the football?": "garden", "Where is John?": "kitchen"}),
    (["Mary moved to the kitchen.", "Mary took the apple there.", "Mary went to the office.",
      "Daniel went to the garden.", "Mary went to the garden.", "Mary discarded the apple.",
      "Mary went to the office."],
     {"Where was the apple before the garden?": "office", "Where was the apple before the office?": "kitchen",
      "Where is the apple?": "garden"}),
    (["The office is north of the kitchen.", "The kitchen is north of the garden."],
     {"What is north of the kitchen?": "office", "What is the kitchen north of?": "garden",
      "What is south of the office?": "kitchen", "What is the garden south of?": "kitchen"}),
    (["Fred went to the kitchen.", "Fred picked up the milk there.", "Fred gave the milk to Bill.",
      "Bill handed the milk to Jeff.", "Jeff passed the milk to Bill."],
     {"Who gave the milk to Bill?": "Jeff", "Who did Bill give the milk to?": "Jeff",
      "What did Fred give to Bill?": "milk", "Who did Fred give the milk to?": "Bill"}),
]


@pytest.mark.parametrize("sentences, questions", HAND_CHECKED)
def test_solver_answers_hand_checked_stories(sentences, questions):
    for question, answer in questions.items():
        assert solve(sentences, question) == answer


def test_solver_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError, match="not a bAbI template"):
        solve(["Mary flew to the moon."], "Where is Mary?")
    with pytest.raises(ValueError, match="not a bAbI template"):
        solve(["Mary moved to the office."], "Why is Mary?")
    with pytest.raises(ValueError, match="0 answers"):
        solve(["Mary moved to the office."], "Where is John?")
    with pytest.raises(ValueError, match="2 answers"):  # the apple entered the office twice: "before" is ambiguous
        solve(["Mary moved to the kitchen.", "Mary got the apple there.", "Mary went to the office.",
               "Mary went to the garden.", "Mary went to the office."], "Where was the apple before the office?")


@pytest.mark.parametrize("task", TASKS)
def test_generator_answers_agree_with_the_solver(task):
    stories = generate(task, 400, seed=3)
    for story in stories:
        assert story.task == task and story.answer in story.candidates
        assert solve(story.sentences, story.question) == story.answer, story.text()
    assert len({story.answer for story in stories}) >= 3  # answers vary
    forms = {tuple(w for w in story.question.rstrip("?").split() if w not in NAMES) for story in stories}
    assert len(forms) == {"qa4": 2, "qa5": 3}.get(task, 1)  # every form of question is asked


def test_candidates_are_the_answer_vocabulary():
    assert generate_story("qa1", 0, 0).candidates == PLACES
    qa5 = generate("qa5", 50, seed=0)
    assert {s.candidates for s in qa5} == {QA5_PEOPLE, ("football", "apple", "milk")}


@pytest.mark.parametrize("task", TASKS)
def test_generator_is_deterministic_by_seed(task):
    stories = generate(task, 30, seed=0)
    assert stories == generate(task, 30, seed=0)
    assert stories != generate(task, 30, seed=1)
    assert generate_story(task, 0, 7) == stories[7]  # story i does not depend on how many are drawn


def test_bad_arguments_name_them():
    with pytest.raises(ValueError, match="^task"):
        generate_story("qa6", 0, 0)
    with pytest.raises(ValueError, match="^seed"):
        generate_story("qa1", -1, 0)
    with pytest.raises(ValueError, match="^index"):
        generate_story("qa1", 0, -2)
