"""`fusion passes`: the pipeline pass by pass, the oracle after every pass, and
the culprit named when a pass (a rewrite rule, the plan, a block's generated
code) is deliberately broken."""
import json
import os

import numpy as np

from fusion.ir.builder import GraphBuilder
from fusion.ops import get_op
from fusion.passes import block_plan, run_blocks_reference, run_pipeline

F = np.float32


def _graph():
    # Two anchors, so two blocks: MatMul -> Relu -> Add, then Softmax -> Exp.
    b = GraphBuilder("g")
    x = b.input("x", "float32", (4, 8))
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(F)
    h = b.relu(b.relu(b.matmul(x, b.const(w))))
    y = b.softmax(b.add(h, x), axis=1)
    b.output(b.exp(y), names=["y"])
    return b.build()


def _names(res):
    return [p.name for p in res.passes]


def test_correct_model_passes_every_pass(tmp_path):
    res = run_pipeline(_graph(), check=True, dump=str(tmp_path), profile_db=False)
    assert res.ok, res.to_json()
    names = _names(res)
    assert names[0] == "import" and names[-2:] == ["plan", "codegen"]
    assert "round1:algebra" in names
    checked = [p for p in res.passes if p.checked]
    assert {"import", "plan", "codegen"} <= {p.name for p in checked}
    assert all(p.ok and p.max_abs_err < 1e-3 for p in checked)
    # relu(relu(x)) -> relu(x) is a real change, so the rewriter's pass shows up checked
    assert any(p.name.endswith(":algebra") and p.checked and p.changes for p in res.passes)
    files = sorted(os.listdir(tmp_path))
    assert files[0] == "00_import.onnx" and any(f.endswith("_plan.json") for f in files)
    assert any(f.endswith("_codegen.c") for f in files)
    plan = json.load(open(tmp_path / next(f for f in files if f.endswith("_plan.json"))))
    assert plan["blocks"] == res.passes[-1].blocks


def test_wrong_import_is_named(tmp_path, monkeypatch):
    import fusion
    path = str(tmp_path / "m.onnx")
    fusion.save(_graph(), path)
    real = fusion.load

    def bad_load(model, shapes=None, check=True):
        g = real(model, shapes=shapes, check=check)
        next(n for n in g.nodes if n.op == "Softmax").attrs["axis"] = 0   # an importer bug
        return g
    monkeypatch.setattr(fusion, "load", bad_load)
    res = run_pipeline(path, check=True, profile_db=False)
    assert res.first_bad == "import"
    assert "original ONNX file" in res.passes[0].detail


def test_wrong_rewrite_rule_is_named():
    from fusion.rewrite.rule import Rule
    from fusion.rewrite.rules import get_rule
    wrong = Rule("wrong-exp", "test", ("Exp", "X"), ("Relu", "X"), exact=True)
    res = run_pipeline(_graph(), check=True, rules=[get_rule("relu-idempotent"), wrong], profile_db=False)
    assert not res.ok
    assert res.first_bad == "round1:algebra"
    assert "wrong-exp" in res.culprit


def test_broken_plan_order_is_named(monkeypatch):
    import fusion.plan as P
    real = P.plan

    def reversed_plan(graph, target="host", **kw):
        p = real(graph, target, **kw)
        p.blocks = p.blocks[::-1]
        return p
    monkeypatch.setattr(P, "plan", reversed_plan)
    res = run_pipeline(_graph(), check=True, profile_db=False)
    assert res.first_bad == "plan"
    assert "reads" in next(p for p in res.passes if p.name == "plan").detail


def test_broken_lowering_is_narrowed_to_its_block(monkeypatch):
    od = get_op("Exp")
    real = od.lower
    monkeypatch.setattr(od, "lower", lambda n, i, read, k: -real(n, i, read, k))
    g = _graph()
    res = run_pipeline(g, check=True, profile_db=False)
    assert res.passes[-1].blocks >= 2
    assert res.first_bad == "codegen", res.to_json()
    # the first block (MatMul ...) compiles right on its own: narrowing skips it
    assert res.culprit.startswith("block ") and "(Exp)" in res.culprit and "MatMul" not in res.culprit
    # every pass before codegen still matches: the interpreter does not use `lower`
    assert all(p.ok for p in res.passes if p.checked and p.name != "codegen")


def test_block_subgraph_runs_alone():
    import fusion
    from fusion.oracle import compare, random_inputs
    g = _graph()
    plan = fusion.plan(g, profile_db=False)
    feeds = random_inputs(g)
    vals = run_blocks_reference(plan, feeds)
    assert compare({"y": vals["y"]}, fusion.run_reference(g, feeds)).ok
    for b in plan.blocks:
        sub, bp = block_plan(g, b)
        sub.verify()
        assert len(bp.blocks) == 1 and len(bp.blocks[0].nodes) == len(b.nodes)
        assert [v.name for v in sub.outputs] == [v.name for v in b.outputs]


def test_cli(tmp_path, capsys):
    import fusion
    from fusion.cli import main
    path = str(tmp_path / "m.onnx")
    fusion.save(_graph(), path)
    assert main(["passes", path, "--check", "--dump", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("import") and "PASS" in out
    assert "every pass matches onnxruntime" in out
    assert main(["passes", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["passes"][-1]["name"] == "codegen"
    assert main(["passes", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    assert main(["passes", path, "--check", "--target", "android-arm64"]) == 2
    err = capsys.readouterr().err
    assert "--target host" in err and "Traceback" not in err
