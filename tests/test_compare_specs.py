"""`conspo compare` objective lists and seeds: the comma form of the issue, ';' and spaces, errors."""

from __future__ import annotations

import pytest

from conspo.compare.specs import ABLATIONS, parse_objective_list, parse_seeds, slug
from conspo.objectives import get_objective


def test_issue_example_comma_form_gives_the_five_ablations():
    text = "conspo,conspo:credit=linear,conspo:score=clipped_ratio,conspo:margin=none,conspo:margin=fixed"
    assert parse_objective_list([text]) == list(ABLATIONS)


def test_key_value_segments_without_colon_belong_to_the_previous_objective():
    specs = parse_objective_list(["grpo,conspo:credit=linear,score=clipped_ratio,tau=5,dapo,eps_high=0.3"])
    assert specs == ["grpo", "conspo:credit=linear,score=clipped_ratio,tau=5", "dapo:eps_high=0.3"]
    obj = get_objective(specs[1])
    assert (obj.credit_kind, obj.score_kind, obj.tau) == ("linear", "clipped_ratio", 5.0)
    assert get_objective(specs[2]).eps_high == 0.3


def test_semicolons_spaces_and_whole_specs_agree():
    a = parse_objective_list(["grpo;conspo:margin=none,tau=5"])
    b = parse_objective_list(["grpo", "conspo:margin=none,tau=5"])
    c = parse_objective_list([], whole=["grpo", "conspo:margin=none,tau=5"])
    assert a == b == c == ["grpo", "conspo:margin=none,tau=5"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["tau=5,conspo"], "no objective before it"),
        (["nope"], "nope"),
        (["conspo:tua=5"], "tua"),
        (["conspo:margin=cosine_typo"], "margin"),
        (["grpo,grpo"], "listed twice"),
        ([], "no objective"),
    ],
)
def test_bad_lists_name_the_culprit(items, message):
    with pytest.raises(ValueError, match=message):
        parse_objective_list(items)


def test_seeds_count_list_and_range():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("2-4") == [2, 3, 4]
    for bad in ("0", "x", "1,1", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_slugs_are_distinct_file_names():
    names = [slug(s) for s in ABLATIONS]
    assert len(set(names)) == len(names)
    assert all("/" not in n and ":" not in n and "=" not in n for n in names)
