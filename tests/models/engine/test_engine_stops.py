"""Stop conditions: stop ids, EOS, stop strings split across tokens, and stream-safe text."""
from __future__ import annotations

from models.engine.stops import StopChecker
from models.params import GenerationParams


def _feed(checker: StopChecker, pieces: list[str]) -> tuple[list[str], bool]:
    """Push pieces as successive tokens until a stop string completes; returns the deltas and whether it stopped."""
    deltas = []
    for n, piece in enumerate(pieces, start=1):
        delta, stopped = checker.push_text(piece, n)
        deltas.append(delta)
        if stopped:
            return deltas, True
    return deltas, False


def test_stop_string_split_across_tokens_cuts_output_before_it():
    c = StopChecker(GenerationParams(stop=("\n\nUser:",)), eos_token_ids=[0])
    deltas, stopped = _feed(c, ["Hello", " world", "\n", "\nUs", "er:", " more"])
    assert stopped
    assert "".join(deltas) == "Hello world"
    assert c.text == "Hello world"


def test_stream_never_emits_a_prefix_of_a_stop_string():
    c = StopChecker(GenerationParams(stop=("STOP",)), eos_token_ids=[])
    deltas, _ = _feed(c, ["abc S", "T", "O"])
    assert deltas == ["abc ", "", ""]


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_stop():
    c = StopChecker(GenerationParams(stop=("STOP",)), eos_token_ids=[])
    deltas, stopped = _feed(c, ["abc ST", "ART"])
    assert not stopped
    assert deltas == ["abc ", "START"]


def test_flush_releases_held_back_text_at_the_end():
    c = StopChecker(GenerationParams(stop=("STOP",)), eos_token_ids=[])
    deltas, _ = _feed(c, ["abc ST"])
    assert deltas == ["abc "]
    assert c.flush() == "ST"
    assert c.text == "abc ST"


def test_earliest_of_several_stop_strings_wins():
    c = StopChecker(GenerationParams(stop=("xyz", "b")), eos_token_ids=[])
    deltas, stopped = _feed(c, ["a", "xyzb"])
    assert stopped and "".join(deltas) == "a"


def test_stop_string_inside_one_token_cuts_mid_token():
    c = StopChecker(GenerationParams(stop=("END",)), eos_token_ids=[])
    deltas, stopped = _feed(c, ["one", "twoENDthree"])
    assert stopped and "".join(deltas) == "onetwo"


def test_stop_token_id_and_eos_give_their_reasons():
    c = StopChecker(GenerationParams(stop_token_ids=(5,)), eos_token_ids=[2])
    assert c.check_token(5, 1) == "stop"
    assert c.check_token(2, 1) == "eos"
    assert c.check_token(3, 1) is None


def test_ignore_eos_does_not_stop_on_eos():
    c = StopChecker(GenerationParams(ignore_eos=True), eos_token_ids=[2])
    assert c.check_token(2, 1) is None


def test_nothing_stops_before_min_new_tokens():
    c = StopChecker(GenerationParams(min_new_tokens=3, max_new_tokens=5, stop=("x",), stop_token_ids=(5,)),
                    eos_token_ids=[2])
    assert c.check_token(2, 2) is None and c.check_token(5, 2) is None
    assert c.push_text("x", 2) == ("x", False)
    assert c.check_token(2, 3) == "eos"
    assert c.push_text("yx", 3) == ("y", True)
