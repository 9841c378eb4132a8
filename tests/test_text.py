"""The one way examples and durations become text (curation.text)."""

import math

import pytest

from curation.text import duration, first_turn, turns_text
from tests.conftest import chat

TWO_TURNS = [*chat("First question", "First answer", system="Be brief."),
             {"role": "user", "content": "Second question"},
             {"role": "assistant", "content": "Second answer"}]


def test_turns_text_joins_the_turns_of_one_role_in_order():
    assert turns_text(TWO_TURNS) == "First question\nSecond question"
    assert turns_text(TWO_TURNS, "assistant", "\n\n") == "First answer\n\nSecond answer"
    assert turns_text(TWO_TURNS, "tool") == ""


def test_first_turn_is_empty_when_the_role_is_missing():
    assert first_turn(TWO_TURNS, "system") == "Be brief."
    assert first_turn(TWO_TURNS, "user") == "First question"
    assert first_turn(chat("q", "a"), "system") == ""


@pytest.mark.parametrize("seconds, text", [(None, "—"), (math.inf, "—"), (0, "0 s"),
                                           (42.4, "42 s"), (59.6, "1 min 00 s"),
                                           (245, "4 min 05 s"), (3720, "1 h 02 min")])
def test_duration_reads_as_people_say_it(seconds, text):
    assert duration(seconds) == text
