"""`fusion plan` and `fusion profile` end to end, on small ONNX files."""
import json
import xml.etree.ElementTree as ET

import pytest

import fusion
from fusion.cli import main
from fusion.plan.synthetic import bert_like, resnet_like


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_CACHE", str(tmp_path / "cache"))
    paths = {"bert": str(tmp_path / "bert.onnx"), "resnet": str(tmp_path / "resnet.onnx")}
    fusion.save(bert_like(1), paths["bert"])
    fusion.save(resnet_like(), paths["resnet"])
    return paths


def test_plan_text(models, capsys):
    assert main(["plan", models["resnet"], "--no-rewrite"]) == 0
    out = capsys.readouterr().out
    assert "25 -> 11 blocks" in out
    assert "Conv+Add+Relu" in out
    assert "refused edges: 14 (two-anchors 14)" in out


def test_plan_json_contract(models, capsys):
    assert main(["plan", models["bert"], "--json", "--no-rewrite", "--target", "opencl"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert {"nodes", "blocks", "refused", "blocks_detail"} <= set(j)
    assert j["target"] == "opencl" and j["nodes"] == 60 and len(j["blocks_detail"]) == j["blocks"]
    assert all(r["reason"] and r["code"] for r in j["refused"])
    assert j["intermediate_bytes"]["after"] < j["intermediate_bytes"]["before"]


def test_plan_svg_and_html(models, tmp_path, capsys):
    svg, page = tmp_path / "p.svg", tmp_path / "p.html"
    assert main(["plan", models["bert"], "--no-rewrite", "--svg", str(svg), "--html", str(page)]) == 0
    root = ET.fromstring(svg.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}g")) == 60                       # one box per node
    dashed = [ln for ln in root.iter(f"{ns}line") if ln.get("stroke-dasharray")]
    assert dashed and all(ln.find(f"{ns}title").text for ln in dashed)   # refused edges carry their reason
    text = page.read_text()
    assert "<svg" in text and "Refused edges" in text and "two-anchors" in text


def test_plan_limits_from_flags(models, capsys):
    assert main(["plan", models["bert"], "--json", "--no-rewrite", "--max-block-ops", "2"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert max(len(b["ops"]) for b in j["blocks_detail"]) <= 2
    assert any(r["code"] == "max-ops" for r in j["refused"])


def test_profile_prefill_and_show(models, tmp_path, capsys):
    db = str(tmp_path / "db.json")
    assert main(["profile", "prefill", models["bert"], models["resnet"], "--no-rewrite", "--profile-db", db]) == 0
    out = capsys.readouterr().out
    assert "bert.onnx: 60 nodes" in out and "cost model" in out
    n = len(json.load(open(db))["entries"])
    assert n > 0
    assert main(["profile", "show", "--profile-db", db, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["entries"] == n and s["by_source"] == {"cost model": n}
    # Planning the same model again reuses every entry.
    assert main(["plan", models["bert"], "--no-rewrite", "--profile-db", db, "--json"]) == 0
    assert len(json.load(open(db))["entries"]) == n


def test_user_errors_are_one_line(models, capsys):
    assert main(["plan", models["bert"], "--target", "nonesuch"]) == 2
    assert "unknown target" in capsys.readouterr().err
    assert main(["plan"]) == 2
    assert main(["plan", "--table"]) == 0
    assert "O2M (profile)" in capsys.readouterr().out


def test_evidence_row_parts():
    from fusion.plan.evidence import markdown, ort_optimized_nodes
    n = ort_optimized_nodes(resnet_like())
    assert n is not None and 0 < n < 25            # onnxruntime fuses Conv+Relu etc.
    row = {"model": "m", "imported": 25, "nodes": 25, "blocks": 11, "fusion_rate": 2.27, "dnnfusion_fused": 9,
           "ort_nodes": n, "inter_before": 2**20, "inter_after": 2**19, "plan_s": 0.01}
    assert "| m | 25 (25) | 11 | 2.27 | 9 |" in markdown([row, {"model": "x", "error": "no zoo"}])
