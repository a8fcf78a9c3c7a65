import pytest

from learner.vw_model import ExplorationSpec, VWPolicyModel, example_lines


def test_example_lines_format_shared_actions_and_label() -> None:
    lines = example_lines(
        {"step": {"kind": "control", "type": "tool selection", "log_in": 0.5, "zero": 0}},
        [{"model": {"id": "a:b", "self_hosted": True}}, {"model": {"id": "c", "off": False}}],
        label=(1, -0.75, 0.25),
    )
    assert lines == [
        "shared |s kind=control type=tool_selection log_in:0.5",
        "|m id=a_b self_hosted",
        "0:-0.75:0.25 |m id=c",
    ]


def test_unknown_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature namespace 'weird'"):
        example_lines({"weird": {"a": 1}}, [])


def test_learn_rejects_impossible_probability() -> None:
    model = VWPolicyModel.create(ExplorationSpec())
    with pytest.raises(ValueError, match="probability"):
        model.learn({"step": {"k": "x"}}, [{"model": {"id": "a"}}], 0, 0.0, 0.0)
