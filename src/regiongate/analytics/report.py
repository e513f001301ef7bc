"""The impact report as one self-contained HTML page: no scripts, no fonts, no network —
inline SVG charts (blocked share by territory as bars, requests and affected share over time)
and the tables a reviewer wants, readable offline and printable."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:2rem 0 .6rem}
.sub{color:#5b6577}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d9dee7;border-radius:8px;padding:.7rem 1rem;min-width:10rem}
.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e6e9ef;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f7fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.allow{fill:#7fb77e}.flag{fill:#f0b429}.block{fill:#d64545}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;
vertical-align:-1px}svg text{font-size:11px;fill:#1d2330}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _territory_bars(rows: list[dict[str, Any]], limit: int = 25) -> str:
    rows = rows[:limit]
    if not rows:
        return "<p>No requests.</p>"
    width, bar_h, gap, label_w = 1000, 16, 6, 90
    top = max(r["requests"] for r in rows) or 1
    height = len(rows) * (bar_h + gap) + 10
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="Requests by territory and action">']  # fmt: skip
    for i, r in enumerate(rows):
        y = i * (bar_h + gap) + 5
        parts.append(f'<text x="0" y="{y + 12}">{_e(r["territory"])}</text>')
        x = float(label_w)
        for action in ("allow", "flag", "block"):
            w = (width - label_w - 160) * r[action] / top
            if w > 0:
                parts.append(
                    f'<rect class="{action}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{bar_h}"><title>{_e(r["territory"])}: {r[action]:,} {action}'
                    f"</title></rect>"
                )
                x += w
        blocked = (r["block"] + r["flag"]) / r["requests"] if r["requests"] else 0
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 12}">{r["requests"]:,}'
            f"{f' · {_pct(blocked)} flagged/blocked' if blocked else ''}</text>"
        )
    parts.append("</svg>")
    legend = ('<p class="legend"><span class="allow" style="background:#7fb77e"></span>allow'
              '<span style="background:#f0b429"></span>flag'
              '<span style="background:#d64545"></span>block</p>')  # fmt: skip
    return legend + "".join(parts)


def _time_series(days: list[dict[str, Any]]) -> str:
    if not days:
        return "<p>No dated requests.</p>"
    width, height, pad = 1000, 220, 40
    top = max(d["requests"] for d in days) or 1
    n = len(days)
    step = (width - 2 * pad) / max(n - 1, 1)

    def x(i: int) -> float:
        return pad + i * step

    def y(v: float, scale: float) -> float:
        return height - pad - (height - 2 * pad) * v / scale

    req = " ".join(f"{x(i):.1f},{y(d['requests'], top):.1f}" for i, d in enumerate(days))
    share = " ".join(
        f"{x(i):.1f},{y(d['affected'] / d['requests'] if d['requests'] else 0, 1):.1f}"
        for i, d in enumerate(days)
    )
    ticks = "".join(
        f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle">{_e(d["day"][5:])}</text>'
        for i, d in enumerate(days)
        if n <= 14 or i % max(1, n // 10) == 0
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Requests and affected share per day">'
        f'<polyline fill="none" stroke="#4a6fa5" stroke-width="2" points="{req}"/>'
        f'<polyline fill="none" stroke="#d64545" stroke-width="2" stroke-dasharray="5 3" '
        f'points="{share}"/>'
        f'<text x="{pad}" y="16">requests per day (blue, peak {top:,}) · affected share '
        f"(red, 0-100%)</text>{ticks}</svg>"
    )


def render_html(data: dict[str, Any], *, top_orgs: int = 200) -> str:
    """The report for ``ImpactReport.to_dict()`` output."""
    t = data["totals"]
    lines = data["lines"]
    title = f"Impact of {data['policy']}"
    if data.get("against"):
        title += f" against {data['against']}"
    cards = [
        ("log lines", _n(lines["total"])),
        ("malformed", _n(lines["malformed"])),
    ]
    keep = data.get("filter") or {}
    if keep.get("paths") or keep.get("statuses"):
        what = [", ".join(keep.get("paths") or []), ", ".join(keep.get("statuses") or [])]
        cards.append((f"filtered out (kept: {'; '.join(w for w in what if w)})",
                      _n(lines.get("filtered", 0))))  # fmt: skip
    cards += [
        ("organisations", _n(t["organisations"])),
        ("affected organisations", _n(t["affected_organisations"])),
        ("affected requests", _n(t["affected_requests"])),
    ]
    if data.get("enforce_from"):
        cards.append(("enforcement from", data["enforce_from"][:10]))
    orgs = [o for o in data["orgs"] if o["affected_requests"]][:top_orgs]
    rows = "".join(
        "<tr>"
        f"<td>{_e(o['org'])}</td><td class=n>{o['requests']:,}</td>"
        f"<td class=n>{o['affected_requests']:,}</td><td class=n>{_pct(o['affected_share'])}</td>"
        f"<td>{_e(', '.join(f'{k} {v:,}' for k, v in o['unsupported_territories'].items()))}</td>"
        f"<td class=n>{_pct(o['anonymizer_share'])}</td>"
        f"<td>{_e((o['first_seen'] or '')[:10])} – {_e((o['last_seen'] or '')[:10])}</td>"
        + (f"<td>{_e(', '.join(f'{k} {v:,}' for k, v in o.get('changed', {}).items()))}</td>"
           if data.get("against") else "")
        + "</tr>"
        for o in orgs
    )  # fmt: skip
    changed_head = "<th>changed</th>" if data.get("against") else ""
    phases = "".join(
        f"<tr><td>{_e(ph)}</td>" + "".join(f"<td class=n>{v:,}</td>" for v in acts.values())
        + "</tr>"
        for ph, acts in data["totals"]["by_phase"].items()
    )  # fmt: skip
    malformed = ""
    if data.get("malformed_examples"):
        items = "".join(f"<li>{_e(m)}</li>" for m in data["malformed_examples"])
        malformed = f"<h2>Malformed lines</h2><ul>{items}</ul>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="sub">{_e(", ".join(data.get("files", [])))} · generated {_e(data["generated_at"])}</p>
<div class="cards">{
        "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
    }</div>
<h2>Requests by territory</h2>{_territory_bars(t["by_territory"])}
<h2>Over time</h2>{_time_series(data.get("days", []))}
<h2>By phase</h2><table><tr><th>phase</th><th>allow</th><th>flag</th><th>block</th></tr>
{phases}</table>
<h2>Affected organisations ({len(orgs):,} shown)</h2>
<table><tr><th>organisation</th><th>requests</th><th>affected</th><th>share</th>
<th>unsupported territories</th><th>via anonymizers</th><th>seen</th>{changed_head}</tr>
{rows}</table>
{malformed}
</body></html>
"""
