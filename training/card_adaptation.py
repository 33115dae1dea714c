"""The model card's section on the per-sample adaptation: the real scan before and after
``cdistream adapt`` (``metrics["adaptation"]``, :mod:`training.adaptation`) and the scan
streamed live through ``serve --adapt`` (``adaptation_live.json`` beside the card,
:mod:`training.adaptation_live`)."""

from __future__ import annotations

__all__ = ["adaptation_section"]

BARS = {"chi2_ratio": 1.5, "iou": 0.85, "phase": 0.25}  # the issue's, against the 3D slices


def _row(name: str, s: dict) -> str:
    cells = [f"{s['chi2']['median']:.4f}"]
    for key in ("chi2_ratio", "iou", "phase", "phase_core"):
        values = []
        for engine in ("ours", "cohere"):
            if engine in s:
                v = s[engine][key] if key == "chi2_ratio" else s[engine][key]["median"]
                values.append(f"{v:.2f}x" if key == "chi2_ratio" else f"{v:.3f}")
        cells.append(" / ".join(values))
    return f"| {name} | " + " | ".join(cells) + " |"


def _met(after: dict) -> str:
    """Each bar, met or not, with the figures against our 3D slices / cohere-core's."""
    said = []
    for key, bar in BARS.items():
        values = [after[e][key] if key == "chi2_ratio" else after[e][key]["median"]
                  for e in ("ours", "cohere") if e in after]
        ok = all(v >= bar for v in values) if key == "iou" else all(v <= bar for v in values)
        shown = " / ".join(f"{v:.2f}x" if key == "chi2_ratio" else f"{v:.3f}" for v in values)
        name = {"chi2_ratio": "chi2 <= 1.5x the slices'", "iou": "support IoU >= 0.85",
                "phase": "phase <= 0.25 rad"}[key]
        said.append(f"{name}: {'met' if ok else 'not met'} ({shown})")
    return "; ".join(said)


def _offline(a: dict) -> list[str]:
    lines = [
        "`python -m training.adaptation` (what `cdistream adapt SCAN --frames even --output M`"
        f" then `cdistream reconstruct SCAN --models M --refine 0` do): tuned on"
        f" {len(a['tuned_on'])} even-numbered frames with signal and judged on"
        f" {len(a['judged_on'])} others (median chi2 {a['verdict']['chi2_serving']:.4f} ->"
        f" {a['verdict']['chi2_candidate']:.4f}, "
        + ("accepted" if a["verdict"]["accepted"] else "refused") + ")"
        + (f" in {a['tune_cpu_seconds']:.0f} s of CPU" if "tune_cpu_seconds" in a else "")
        + f"; scored, networks alone, on the {len(a['frames_scored'])} odd-numbered Bragg"
        " frames it never saw, against the slices of the scan's own 3D reconstruction (ours /"
        " cohere-core's).",
        "",
        "| networks | chi2 | chi2 / slices' | support IoU | phase, whole (rad)"
        " | phase, core (rad) |",
        "|---|---|---|---|---|---|",
        _row("shipped", a["before"]),
    ]
    if a["after"] is not None:
        lines += [_row(f"adapted ({a.get('version', '')})", a["after"]), "",
                  f"Against the bars, on the frames it never saw: {_met(a['after'])}."]
    return lines


def _live(live: dict) -> list[str]:
    rounds = [r for r in live["rounds"] if r["kind"] == "round"]
    cpu = [r["tune_cpu_seconds"] for r in rounds if "tune_cpu_seconds" in r]
    counts = live["counts"]
    lines = [
        "",
        "Live (`python -m training.adaptation_live`, 2 frames/s): the scan streamed in the"
        " order it was measured into `serve --adapt`, then a simulated crystal's rocking"
        " series (`sim_detector.crystals3d`), then the scan again, through one service:"
        f" {counts['received']} frames received, {counts['reconstructed']} reconstructed,"
        f" {counts['dropped']} dropped; {len(rounds)} rounds,"
        f" {sum('version' in r for r in rounds)} accepted"
        + (f", each {min(cpu):.0f} to {max(cpu):.0f} s of one core" if cpu else "") + ".",
        "",
        "| series | model change | reason | judged: before -> after (frames) |"
        " served after, replaced -> new: all frames (frames) | with signal |",
        "|---|---|---|---|---|---|",
    ]
    for k, s in enumerate(live["series"], 1):
        for c in s["changes"]:
            served = _pair(c.get("served_after"))
            judged = (f"{c['chi2_before']:.4f} -> {c['chi2_after']:.4f} ({c['judged_frames']})"
                      if c["judged_frames"] else "-")
            after = c.get("served_after") or {}
            signal = _pair(after.get("with_signal"), after.get("frames_with_signal"))
            lines.append(f"| {k} ({s['what']}) | {c['previous']} -> {c['version']} |"
                         f" {c['reason']} | {judged} | {served} | {signal} |")
    lines += ["", "| series | served by | shipped -> served, all frames (frames) |"
              " frames with signal |", "|---|---|---|---|"]
    for k, s in enumerate(live["series"], 1):
        for version, v in s["per_version"].items():
            lines.append(f"| {k} ({s['what']}) | {version} | {_pair(v)} |"
                         f" {_pair(v.get('with_signal'), v.get('frames_with_signal'))} |")
    return [*lines, "", "Frames with signal: at least 5% of the series' brightest frame's"
            " counts, the frames the rounds learn from and are judged on."]


def _pair(m: dict | None, frames: int | None = None) -> str:
    """``replaced -> new (frames)`` median chi2, or - when there is nothing to say."""
    if not m:
        return "-"
    count = m.get("frames", frames)
    return f"{m['chi2_replaced_median']:.4f} -> {m['chi2_new_median']:.4f} ({count})"


def adaptation_section(offline: dict | None, live: dict | None) -> list[str]:
    """The card's lines; none when neither was measured."""
    if offline is None and live is None:
        return []
    lines = ["## Adapted to the sample (`cdistream adapt`, `serve --adapt`)", "",
             "The networks tuned on the scan's own frames, with no outside labels"
             " (docs/adaptation.md). The shipped model itself never changes."
             " Every model is judged on frames it was not tuned on.", ""]
    if offline is not None:
        lines += _offline(offline)
    if live is not None:
        lines += _live(live)
    return [*lines, "", *LIMITS, ""]


LIMITS = [
    "Limits, measured by hand on this machine:",
    "",
    "- The bars of chi2 and phase are not met. Weighting the refined labels 1 instead of 10,"
    " with 600 steps instead of 300, fits the odd frames closer (chi2 0.0125: 3.3x our"
    " slices', 1.2x cohere-core's), but draws them less like the slices (IoU 0.830 / 0.867,"
    " phase 0.271 / 0.465 rad). It also generalises worse to frames later in the scan: tuned"
    " on frames 83 to 107 and scored on the falling flank's 108 to 114, its chi2 goes from"
    " 0.0802 to 0.0842, against 0.0698 with the defaults. Without labels (300 steps) it is"
    " 0.1012. The shipped defaults are the ones that improve both the held-out and the later"
    " frames.",
    "- Labels from the scan's even frames alone, phased in 3D, are no help: that cube misfits"
    " its frames as badly as the networks do (chi2 0.032 against 0.004 for the whole scan's),"
    " since every other rocking step is missing.",
    "- Live at 2 frames/s, the scan's frames with signal (83 to 115) pass in 16 s, about as"
    " long as one round. The first pass is served by the shipped model throughout: its learnt"
    " models come too late, and frames without signal always go to the shipped model. The"
    " second pass is served by the model learnt in the first once a probe recognises it.",
    "- The PVA workers (`--workers`) do not load adapted networks: `--adapt --workers` is"
    " refused.",
]
