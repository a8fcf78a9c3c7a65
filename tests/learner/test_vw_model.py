import pytest

from learner.vw_model import (
    ExplorationSpec,
    LabeledExample,
    VWPolicyModel,
    _cached_text,
    example_lines,
    example_text,
    namespace_text,
)


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


def test_only_namespaces_that_repeat_are_cached() -> None:
    _cached_text.cache_clear()
    categorical = {"model": {"id": "gpt", "tier": "premium", "self_hosted": False}}
    numeric = {"cost": {"log_cost": 0.123}}
    assert namespace_text(categorical) == "|m id=gpt tier=premium"
    assert namespace_text(categorical) == "|m id=gpt tier=premium"
    for n in range(1, 50):  # a fresh cost every decision: none of it may stay in the cache
        assert namespace_text({"cost": {"log_cost": n / 7}}) == f"|p log_cost:{n / 7:.6g}"
    assert namespace_text(numeric) == "|p log_cost:0.123"
    info = _cached_text.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)


def test_unknown_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature namespace 'weird'"):
        example_lines({"weird": {"a": 1}}, [])


def test_learn_rejects_impossible_probability() -> None:
    model = VWPolicyModel.create(ExplorationSpec())
    with pytest.raises(ValueError, match="probability"):
        model.learn({"step": {"k": "x"}}, [{"model": {"id": "a"}}], 0, 0.0, 0.0)


def test_learn_many_gives_the_model_bytes_of_one_learn_per_example() -> None:
    shared = {"step": {"kind": "control", "log_in": 0.4}, "task": {"domain": "eng"}}
    actions = [{"model": {"id": "a", "self_hosted": True}}, {"model": {"id": "b"}, "cost": {}}]
    examples = [
        LabeledExample(shared, actions, index % 2, -0.1 * index, 0.5 + index / 100)
        for index in range(30)
    ]
    one_by_one = VWPolicyModel.create(ExplorationSpec(), seed=3)
    for example in examples:
        one_by_one.learn(*example)
    batched = VWPolicyModel.create(ExplorationSpec(), seed=3)
    batched.learn_many(examples)
    assert batched.to_bytes() == one_by_one.to_bytes()
    assert batched.predict(shared, actions) != VWPolicyModel.create(ExplorationSpec()).predict(
        shared, actions
    )


def test_example_text_rejects_impossible_probability() -> None:
    with pytest.raises(ValueError, match=r"probability must be in \(0, 1\], got 1.5"):
        example_text(LabeledExample({"step": {"k": "x"}}, [{"model": {"id": "a"}}], 0, 0.0, 1.5))


def test_example_text_is_the_labelled_example_lines() -> None:
    shared = {"step": {"kind": "control", "log_in": 0.4, "n": 3, "inf": float("inf")}}
    actions = [{"model": {"id": "a"}, "cost": {"log_cost": -0.5}}, {"model": {"id": "b"}}]
    text = example_text(LabeledExample(shared, actions, 1, -0.25, 0.5))
    assert text == "\n".join(example_lines(shared, actions, (1, -0.25, 0.5)))
    assert text.splitlines()[0] == "shared |s kind=control log_in:0.4 n:3"


@pytest.mark.parametrize("chosen", [2, -1])
def test_example_text_rejects_a_chosen_index_out_of_range(chosen: int) -> None:
    with pytest.raises(ValueError, match=f"chosen index {chosen} is out of range for 1 actions"):
        example_text(LabeledExample({"step": {"k": "x"}}, [{"model": {"id": "a"}}], chosen, 0, 1))
