"""The dataset's figures, and the promotion decision a reviewer signs off on.

`summarise` aggregates the pairs' entries of a manifest (it is stored in the manifest as
`summary`); `format_report` prints it. Aggregates:

- hours: the pairs' lengths (first to last frame with pose), summed;
- missing-frame rate: frames without pose / frames, over all pairs;
- alignment confidence: the cross-correlation check's confidence per pair (min and median);
- Beat Align Score: FACT direction (mean over motion beats of exp(−d²/2σ²), d the distance to
  the nearest music beat) weighted by motion beats; Bailando direction (mean over music beats,
  d to the nearest motion beat) weighted by music beats; σ in seconds;
- beside each Beat Align Score, its chance level: what beats placed at random would score
  (`training.metrics.bas_chance`), without which a fast song's score reads better than it is;
- tempo agreement: pairs whose motion periodicity matches the beat grid (ratio ½, 1 or 2).

The promotion decision is "promote" when every check passes, else "hold" naming what failed.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from training.timeline import FPS

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def summarise(manifest: dict[str, Any]) -> dict[str, Any]:
    pairs = manifest["pairs"]
    frames = sum(int(pair.get("frames") or 0) for pair in pairs)
    missing = sum(int(pair.get("missing_frames") or 0) for pair in pairs)
    windows = {
        key: sum(pair["windows"][key] for pair in pairs) for key in ("total", "kept", "dropped")
    }
    confidences = [
        pair["refine"]["confidence"]
        for pair in pairs
        if pair.get("refine", {}).get("status") == "measured"
    ]
    metrics = [pair["metrics"] for pair in pairs if "metrics" in pair]
    summary: dict[str, Any] = {
        "pairs": len(pairs),
        "pairs_with_windows": sum(1 for pair in pairs if pair["windows"]["kept"] > 0),
        "sources": len({pair["source"] for pair in pairs}),
        "hours": round(frames / FPS / 3600, 6),
        "frames": frames,
        "missing_frames": missing,
        "missing_rate": round(missing / frames, 6) if frames else None,
        "windows": windows,
        "windows_by_split": {
            name: split["windows"] for name, split in sorted(manifest["splits"].items())
        },
        "alignment_confidence": {
            "measured_pairs": len(confidences),
            "min": min(confidences) if confidences else None,
            "median": round(statistics.median(confidences), 6) if confidences else None,
        },
        "bas_sigma_s": manifest["config"]["bas_sigma_s"],
        "bas_fact": _weighted(metrics, "bas_fact", "motion_beats"),
        "bas_fact_chance": _weighted(metrics, "bas_fact_chance", "motion_beats"),
        "bas_bailando": _weighted(metrics, "bas_bailando", "music_beats"),
        "bas_bailando_chance": _weighted(metrics, "bas_bailando_chance", "music_beats"),
        "tempo_agreement": {
            "pairs": sum(1 for m in metrics if m["tempo"]["motion_bpm"] is not None),
            "agreeing": sum(1 for m in metrics if m["tempo"]["agrees"]),
        },
    }
    summary["promotion"] = _promotion(summary, manifest["config"])
    return summary


def _weighted(metrics: list[dict[str, Any]], key: str, weight: str) -> float | None:
    pairs = [(m[key], m[weight]) for m in metrics if m[key] is not None and m[weight] > 0]
    total = sum(count for _, count in pairs)
    if not total:
        return None
    return round(sum(value * count for value, count in pairs) / total, 6)


def _promotion(summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    missing_rate = summary["missing_rate"]
    bas = summary["bas_fact"]
    checks = [
        {
            "check": "windows kept",
            "value": summary["windows"]["kept"],
            "rule": f">= {config['promote_min_windows']}",
            "passed": summary["windows"]["kept"] >= config["promote_min_windows"],
        },
        {
            "check": "missing-frame rate",
            "value": missing_rate,
            "rule": f"<= {config['promote_max_missing_rate']}",
            "passed": missing_rate is not None
            and missing_rate <= config["promote_max_missing_rate"],
        },
        {
            "check": "Beat Align Score (FACT)",
            "value": bas,
            "rule": f">= {config['promote_min_bas']}",
            "passed": config["promote_min_bas"] <= 0
            or (bas is not None and bas >= config["promote_min_bas"]),
        },
    ]
    failed = [check["check"] for check in checks if not check["passed"]]
    return {"decision": "hold" if failed else "promote", "failed": failed, "checks": checks}


def format_report(manifest: dict[str, Any]) -> str:
    summary = manifest["summary"]
    lines = [f"MotionMix training dataset {manifest['dataset_id']}", ""]
    width = max([len(_display_id(pair["pair_id"])) for pair in manifest["pairs"]] + [20])
    lines.append(
        f"{'pair':<{width}} {'split':<5} {'sec':>8} {'miss%':>6} {'kept':>5} {'drop':>5} "
        f"{'conf':>5} {'BAS-F':>6} {'BAS-B':>6} {'tempo a/m BPM':>16}"
    )
    for pair in manifest["pairs"]:
        metrics = pair.get("metrics")
        frames = pair.get("frames") or 0
        miss = 100 * pair.get("missing_frames", 0) / frames if frames else 0.0
        conf = pair.get("refine", {}).get("confidence")
        tempo = metrics["tempo"] if metrics else {}
        lines.append(
            f"{_display_id(pair['pair_id']):<{width}} {pair['split']:<5} "
            f"{frames / FPS:8.1f} {miss:6.1f} "
            f"{pair['windows']['kept']:5d} {pair['windows']['dropped']:5d} {_num(conf, 2):>5} "
            f"{_num(metrics and metrics['bas_fact'], 3):>6} "
            f"{_num(metrics and metrics['bas_bailando'], 3):>6} "
            f"{_num(tempo.get('audio_bpm'), 1):>7}/{_num(tempo.get('motion_bpm'), 1):<7}"
            f"{'✓' if tempo.get('agrees') else ' '}"
        )
    conf = summary["alignment_confidence"]
    lines += [
        "",
        f"pairs {summary['pairs']} ({summary['pairs_with_windows']} with windows) from "
        f"{summary['sources']} sources, {summary['hours'] * 60:.2f} min of paired pose",
        f"windows {summary['windows']['total']}: kept {summary['windows']['kept']} "
        f"(train {summary['windows_by_split'].get('train', 0)}, "
        f"val {summary['windows_by_split'].get('val', 0)}), "
        f"dropped {summary['windows']['dropped']}",
        f"missing-frame rate {_pct(summary['missing_rate'])}",
        f"alignment confidence: {conf['measured_pairs']} pairs measured, "
        f"min {_num(conf['min'], 3)}, median {_num(conf['median'], 3)}",
        f"Beat Align Score (σ = {summary['bas_sigma_s']} s): FACT (over motion beats) "
        f"{_num(summary['bas_fact'], 4)} (chance {_num(summary.get('bas_fact_chance'), 4)}), "
        f"Bailando (over music beats) {_num(summary['bas_bailando'], 4)} "
        f"(chance {_num(summary.get('bas_bailando_chance'), 4)})",
        f"tempo agreement: {summary['tempo_agreement']['agreeing']} of "
        f"{summary['tempo_agreement']['pairs']} pairs (ratio 1/2, 1 or 2)",
        "",
    ]
    lines += _decision_block(manifest)
    return "\n".join(lines) + "\n"


def _display_id(pair_id: str) -> str:
    """The pair's id with each UUID cut to its first 8 characters, for the table only
    (a bundle's pairs are `session-<uuid>/take000/<device uuid>`)."""
    return _UUID.sub(lambda match: match.group(0)[:8], pair_id)


def _decision_block(manifest: dict[str, Any]) -> list[str]:
    promotion = manifest["summary"]["promotion"]
    lines = [
        "== promotion decision ==",
        f"decision:   {promotion['decision'].upper()}"
        + (f" (failed: {', '.join(promotion['failed'])})" if promotion["failed"] else ""),
        f"run id:     {manifest['run_id']}",
        f"dataset id: {manifest['dataset_id']}",
    ]
    for check in promotion["checks"]:
        mark = "pass" if check["passed"] else "FAIL"
        lines.append(
            f"  [{mark}] {check['check']}: {_num(check['value'], 4)} (rule {check['rule']})"
        )
    lines.append("reproduce:  " + " ".join(manifest["reproduce"]))
    return lines


def _num(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"
