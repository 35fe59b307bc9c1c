"""Draw a Plan: the graph in layers, each block in its own colour, refused
edges red and dashed (hover for the reason). Pure Python SVG, no graphviz.

Layout: a node's layer is its longest distance from the graph inputs; within
a layer nodes are ordered by the mean position of their producers (one
barycentric sweep), which keeps chains straight and branches side by side.
"""
from __future__ import annotations

import colorsys
import html

from fusion.plan.types import Plan

NODE_W, NODE_H, GAP_X, GAP_Y = 120, 26, 24, 34


def _colour(k: int) -> str:
    h = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(h, 0.78, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def layout(plan: Plan) -> dict[int, tuple[float, float]]:
    g = plan.graph
    index = {id(n): i for i, n in enumerate(g.nodes)}
    preds: list[list[int]] = []
    layer: list[int] = []
    for n in g.nodes:
        ps = sorted({index[id(v.producer)] for v in n.all_inputs()
                     if v.producer is not None and id(v.producer) in index})
        preds.append(ps)
        layer.append(1 + max((layer[p] for p in ps), default=-1))
    rows: dict[int, list[int]] = {}
    for i, L in enumerate(layer):
        rows.setdefault(L, []).append(i)
    x: dict[int, float] = {}
    for L in sorted(rows):
        row = rows[L]
        bary = {i: (sum(x[p] for p in preds[i]) / len(preds[i])) if preds[i] else float(i) for i in row}
        row.sort(key=lambda i: bary[i])
        # Keep order, spread to at least one slot apart, centred on the barycentres.
        slot = 0.0
        for k, i in enumerate(row):
            want = bary[i] if preds[i] else float(k)
            slot = max(want, slot if k == 0 else slot + 1.0)
            x[i] = slot
    lo = min(x.values(), default=0.0)
    return {i: ((x[i] - lo) * (NODE_W + GAP_X) + 10, layer[i] * (NODE_H + GAP_Y) + 10) for i in x}


def to_svg(plan: Plan) -> str:
    g = plan.graph
    pos = layout(plan)
    index = {id(n): i for i, n in enumerate(g.nodes)}
    block_of = {id(n): b for b in plan.blocks for n in b.nodes}
    width = max((p[0] for p in pos.values()), default=0) + NODE_W + 20
    height = max((p[1] for p in pos.values()), default=0) + NODE_H + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="sans-serif" font-size="11">',
           '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>']
    for d in plan.decisions:
        i, j = index.get(id(d.producer)), index.get(id(d.consumer))
        if i is None or j is None:
            continue
        (x1, y1), (x2, y2) = pos[i], pos[j]
        a = (x1 + NODE_W / 2, y1 + NODE_H)
        b = (x2 + NODE_W / 2, y2)
        if d.fused:
            style = 'stroke="#333" stroke-width="2.5"'
        elif d.code == "other-block":
            style = 'stroke="#999" stroke-width="1"'
        else:
            style = 'stroke="#d11" stroke-width="1.5" stroke-dasharray="5,3"'
        out.append(f'<line x1="{a[0]:.0f}" y1="{a[1]:.0f}" x2="{b[0]:.0f}" y2="{b[1]:.0f}" {style} '
                   f'marker-end="url(#arr)"><title>{html.escape(d.reason)}</title></line>')
    for i, n in enumerate(g.nodes):
        x, y = pos[i]
        b = block_of.get(id(n))
        fill = "#ddd" if b is None or b.opaque else _colour(b.id)
        stroke = "#000" if b is not None and b.anchor is n else "#555"
        sw = 2 if b is not None and b.anchor is n else 1
        tip = f"{n.name} ({n.op})" + (f" in {b.name}, class {b.mapping.short}" if b is not None else "")
        label = n.op if len(n.op) <= 16 else n.op[:15] + "."
        out.append(f'<g><title>{html.escape(tip)}</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="4" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{sw}"/>'
                   f'<text x="{x + 4:.0f}" y="{y + 17:.0f}">{html.escape(label)}'
                   f'<tspan fill="#555"> b{b.id if b is not None else "?"}</tspan></text></g>')
    out.append("</svg>")
    return "\n".join(out)


def to_html(plan: Plan, title: str = "fusion plan") -> str:
    j = plan.to_json()
    before, after = plan.intermediate_bytes()
    rows = []
    for b in plan.blocks:
        rows.append(f'<tr><td style="background:{"#ddd" if b.opaque else _colour(b.id)}">b{b.id}</td>'
                    f'<td>{b.mapping.short}</td><td>{html.escape(" ".join(n.op for n in b.nodes))}</td>'
                    f'<td>{html.escape(b.anchor.name) if b.anchor is not None else ""}</td>'
                    f'<td>{len(b.inputs)}/{len(b.outputs)}</td><td>{b.saved_bytes}</td></tr>')
    refused = [f'<tr><td>{html.escape(d.producer.name)} ({d.producer.op})</td>'
               f'<td>{html.escape(d.consumer.name)} ({d.consumer.op})</td><td>{d.code}</td>'
               f'<td>{html.escape(d.reason)}</td></tr>' for d in plan.refused]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;font-size:13px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} .svg{{overflow:auto;border:1px solid #ccc}}</style>
</head><body><h2>{html.escape(title)}</h2>
<p>{j['nodes']} nodes &rarr; {j['blocks']} blocks (fusion rate {j['fusion_rate']}), target {html.escape(plan.target)};
intermediate results {before / 2**20:.2f} MiB &rarr; {after / 2**20:.2f} MiB.
Blocks are coloured; the anchor has a black border; refused edges are red and dashed (hover for the reason).</p>
<div class="svg">{to_svg(plan)}</div>
<h3>Blocks</h3><table><tr><th>block</th><th>class</th><th>ops</th><th>anchor</th><th>in/out</th><th>saved bytes</th></tr>
{''.join(rows)}</table>
<h3>Refused edges ({len(refused)})</h3><table><tr><th>producer</th><th>consumer</th><th>code</th><th>reason</th></tr>
{''.join(refused)}</table></body></html>
"""
