"""Every rewrite rule: its sympy proof holds, and on its own example graph
(random float32 data) it fires and leaves the outputs within the oracle's
float32 tolerance (atol 1e-4, rtol 1e-3, fusion.oracle)."""
from collections import Counter

import pytest

from fusion.rewrite.proof import check_numeric, prove
from fusion.rewrite.rules import all_rules

RULES = all_rules()


def test_rule_count_and_families():
    fam = Counter(r.family for r in RULES)
    assert len(RULES) >= 150
    # DNNFusion's three families are all there, and the exporter-driven ones.
    for f in ("associative", "distributive", "commutative", "power", "division", "reduce", "linear", "recognize"):
        assert fam[f] >= 8, (f, fam[f])
    assert len({r.name for r in RULES}) == len(RULES)


def test_inexact_rules_say_why():
    for r in RULES:
        if not r.exact:
            assert r.note, f"{r.name} is real-arithmetic-only but does not say why"
        if r.proof != "sympy":
            assert r.note, f"{r.name} is numeric-only but does not say why"


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_numeric(rule):
    res = check_numeric(rule)
    assert res.ok, f"{rule.name}: fired {res.fired}x: {res.detail}"


@pytest.mark.parametrize("rule", [r for r in RULES if r.proof == "sympy"],
                         ids=[r.name for r in RULES if r.proof == "sympy"])
def test_rule_proof(rule):
    res = prove(rule)
    assert res.status == "proved", f"{rule.name}: {res.status}: {res.detail}"


def test_a_wrong_rule_fails_its_proof_and_check():
    from fusion.rewrite.rule import Rule
    bad = Rule("bad-add-as-sub", "test", ("Add", "A", "B"), ("Sub", "A", "B"))
    assert prove(bad).status == "failed"
    assert not check_numeric(bad).ok
    bad2 = Rule("bad-exp-log", "test", ("Log", ("Exp", "A")), ("Exp", "A"))
    assert prove(bad2).status == "failed"
