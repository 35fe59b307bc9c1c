"""`fusion rewrite` and `fusion rules` from the command line."""
import json

import pytest

import fusion
from fusion.cli import main
from fusion.plan.synthetic import bert_like


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "bert.onnx"
    fusion.save(bert_like(layers=1), str(p))
    return str(p)


def test_rewrite_json_and_output(bert, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert main(["rewrite", bert, "-o", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["nodes_after"] < d["nodes_before"] and d["flops_after"] <= d["flops_before"]
    assert d["rules_fired"]["gelu-erf-div"] == 1
    g = fusion.load(str(out))
    assert len(g.nodes) == d["nodes_after"]


def test_rewrite_check_and_dump(bert, tmp_path, capsys):
    dump = tmp_path / "dump"
    assert main(["rewrite", bert, "--check", "--dump-after-each", str(dump)]) == 0
    text = capsys.readouterr().out
    assert "all passes match onnxruntime" in text and "nodes" in text and "GFLOP" in text
    files = sorted(p.name for p in dump.iterdir())
    assert files[0] == "00_original.onnx" and any("algebra" in f and f.endswith(".txt") for f in files)


def test_rules_listing(capsys):
    assert main(["rules", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["count"] >= 150 and d["by_proof"].get("failed", 0) == 0
    assert {"associative", "distributive", "commutative"} <= set(d["by_family"])
    r = next(r for r in d["rules"] if r["name"] == "mul-add-factor")
    assert r["family"] == "distributive" and r["proof"] == "sympy" and not r["exact"]
    assert main(["rules", "--family", "reduce"]) == 0
    assert "ReduceProd(Exp(A)" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["rewrite", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fusion: error:") and len(err.strip().splitlines()) == 1
    assert main(["rules", "--family", "nope"]) == 2
