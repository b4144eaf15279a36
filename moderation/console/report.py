"""A backtest report as text, for ``moderation policies backtest``."""

from __future__ import annotations

from typing import Any


def _pct(v: float) -> str:
    return f"{100 * v:5.1f}%"


def format_report(r: dict[str, Any], sweep_points: int = 7) -> str:
    lines = [f"backtest on {r['uploads']} recent uploads against version "
             f"{r['current_version']} ({r['seconds']:.2f} s)",
             f"flag rate: now {_pct(r['flag_rate_now'])}  draft {_pct(r['flag_rate_draft'])}"
             f"   newly flagged {r['newly_flagged_total']}, no longer flagged "
             f"{r['no_longer_flagged_total']}"]
    if r["review_now"] or r["review_draft"]:
        lines.append(f"sent to review: now {r['review_now']}  draft {r['review_draft']}")
    lines.append("")
    lines.append(f"{'policy':<22}{'change':<10}{'threshold':>16}{'matched now':>13}"
                 f"{'draft':>9}")
    for p in r["policies"]:
        th = f"{_num(p['threshold_now'])} -> {_num(p['threshold_draft'])}"
        lines.append(f"{p['policy']:<22}{p['change']:<10}{th:>16}{_pct(p['rate_now']):>13}"
                     f"{_pct(p['rate_draft']):>9}")
        if p["sweep"]:
            step = max(1, len(p["sweep"]) // sweep_points)
            points = "  ".join(f"{t:.2f}:{_pct(v).strip()}" for t, v in p["sweep"][::step])
            lines.append(f"    sweep  {points}")
    for title, key in (("newly flagged", "newly_flagged"),
                       ("no longer flagged", "no_longer_flagged")):
        if r[key]:
            shown = ", ".join(u["upload_id"] for u in r[key][:10])
            more = r[f"{key}_total"] - min(10, len(r[key]))
            lines.append(f"{title}: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
