"""The evaluation's aggregate and its report: the paper's Table 1 and 2 layout with this run's
row beside the paper's numbers, per-clip metrics, beat-alignment timelines and sample frames,
in Markdown and HTML (the same tables rendered twice).
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on workers
import matplotlib.pyplot as plt
import numpy as np

from dancegen.storage.evaluation import EvaluationRun
from dancegen.tasks.perceptual_metrics import frechet_distance

TABLE1_COLUMNS = ("FVD↓", "LPIPS↓", "PSNR↑", "SSIM↑", "2D-BeatAlign↑", "AV-Align↑")
TABLE1_KEYS = ("fvd", "lpips", "psnr", "ssim", "beat_align", "av_align")
# The paper's Table 1 (test split of AIST++; REFERENCE.md section 1)
PAPER_TABLE1 = [
    ("ground truth", (None, None, None, None, 0.307, 0.448)),
    ("MM-Diffusion", (1338.57, 0.425, 11.04, 0.770, 0.287, 0.370)),
    ("DabFusion", (1440.05, 0.561, 8.525, 0.776, None, None)),
    ("simple audio encoder", (725.10, 0.294, 16.48, 0.812, 0.261, 0.350)),
    ("w/o EDGE data", (212.98, 0.108, 21.14, 0.906, 0.298, 0.407)),
    ("paper (full)", (213.289, 0.102, 21.11, 0.908, 0.303, 0.421)),
]
TABLE2_COLUMNS = TABLE1_COLUMNS[:4]
# The paper's guidance ablation (Table 2)
PAPER_TABLE2 = [
    ("depth + normal + semantic", (257.196, 0.194, 19.95, 0.812)),
    ("pose only", (239.724, 0.156, 20.50, 0.857)),
    ("pose + depth + normal + semantic", (213.289, 0.102, 21.11, 0.908)),
]


def _frame_mean(records: list[dict], metric: str) -> float | None:
    """Mean over all frames of all clips (the paper averages frames of the test set)."""
    curves = [r["per_frame"].get(metric) for r in records]
    if not curves or any(c is None for c in curves):
        return None
    return float(np.mean(np.concatenate([np.asarray(c, np.float64) for c in curves])))


def summarize(evaluation: EvaluationRun, records: list[dict[str, Any]],
              failures: dict[str, str], fvd_frames: int) -> dict[str, Any]:
    """The aggregate over the clips' records (and FVD over their stored features)."""
    # every worker loaded the metric networks on its own: a metric missing on any is missing
    missing = {metric: why for r in records for metric, why in r["missing"].items()}
    summary: dict[str, Any] = {
        "clips": len(records), "frames": sum(r["frames"] for r in records),
        "psnr": _frame_mean(records, "psnr"), "ssim": _frame_mean(records, "ssim"),
        "lpips": _frame_mean(records, "lpips"), "fvd": None,
        "fvd_frames": fvd_frames, "keypoints": records[0]["keypoints"] if records else None,
        "failures": failures, "missing": missing, "snapshot": evaluation.snapshot_id,
        "fvd_network": records[0].get("fvd_network") if records else None,
    }
    for metric in ("beat_align", "av_align"):
        for side in ("generated", "ground_truth"):
            # clips without a music beat have no BeatAlign: the mean is over those that do
            values = [r[metric][side] for r in records if r[metric][side] is not None]
            summary[f"{metric}_{side}"] = float(np.mean(values)) if values else None
    for variant in ("fact", "bailando"):  # both 2D-BeatAlign variants (records since 22)
        for side in ("generated", "ground_truth"):
            values = [v for r in records if (v := r.get("beat_align_variants", {})
                                             .get(variant, {}).get(side)) is not None]
            summary[f"beat_align_{variant}_{side}"] = float(np.mean(values)) if values else None
    for side in ("generated", "ground_truth"):  # share of keypoints the detector found
        values = [r["keypoints_detected"][side] for r in records if "keypoints_detected" in r]
        summary[f"keypoints_detected_{side}"] = float(np.mean(values)) if values else None
    summary["beat_align"] = summary["beat_align_generated"]
    summary["av_align"] = summary["av_align_generated"]
    generated = sum(r["generated_seconds"] for r in records)
    summary["seconds_per_generated_second"] = (
        sum(r["generation_seconds"] for r in records) / generated if generated else None)
    features = [evaluation.features(r["clip"]) for r in records]
    if "FVD" not in missing and all(f is not None for f in features):
        real = np.concatenate([f["real"] for f in features])
        fake = np.concatenate([f["generated"] for f in features])
        if len(real) >= 2 and len(fake) >= 2:
            summary["fvd"] = frechet_distance(real, fake)
        else:
            missing["FVD"] = f"needs at least 2 clips of {fvd_frames} frames per side"
    return summary


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.2f}"


def _paper(values: tuple[float | None, ...]) -> list[str]:
    """The paper's numbers as printed."""
    return ["-" if v is None else str(v) for v in values]


def table1_rows(summary: dict[str, Any], label: str) -> list[list[str]]:
    """Table 1 with the paper's rows, this run's ground truth and this run's model."""
    rows = [[name, *_paper(values)] for name, values in PAPER_TABLE1]
    rows.append([f"{label}: ground truth", "-", "-", "-", "-",
                 _cell(summary["beat_align_ground_truth"]),
                 _cell(summary["av_align_ground_truth"])])
    rows.append([f"**{label}**", *(_cell(summary.get(k)) for k in TABLE1_KEYS)])
    return rows


def table2_rows(summary: dict[str, Any], label: str) -> list[list[str]]:
    """Table 2 (guidance ablation); this run uses all four guidance types."""
    rows = [[name, *_paper(values)] for name, values in PAPER_TABLE2]
    rows.append([f"**{label}** (pose + depth + normal + semantic)",
                 *(_cell(summary.get(k)) for k in TABLE1_KEYS[:4])])
    return rows


BEAT_ALIGN_COLUMNS = ("FACT (the paper cites [6])", "Bailando (EDGE-era papers)")


def beat_align_rows(summary: dict[str, Any], label: str) -> list[list[str]]:
    """2D-BeatAlign in both variants, generated and ground truth."""
    return [[f"{label}: {side.replace('_', ' ')}",
             *(_cell(summary.get(f"beat_align_{variant}_{side}"))
               for variant in ("fact", "bailando"))]
            for side in ("generated", "ground_truth")]


def clip_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["clip"], str(r["frames"]), _cell(r["psnr"]), _cell(r["ssim"]),
             _cell(r.get("lpips")), _cell(r["beat_align"]["generated"]),
             _cell(r["beat_align"]["ground_truth"]), _cell(r["av_align"]["generated"]),
             _cell(r["av_align"]["ground_truth"]),
             f"{r['generation_seconds'] / r['generated_seconds']:.1f}"] for r in records]


CLIP_COLUMNS = ("clip", "frames", "PSNR", "SSIM", "LPIPS", "BeatAlign gen", "BeatAlign GT",
                "AV-Align gen", "AV-Align GT", "s / video s")


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def per_clip_plot(records: list[dict[str, Any]]) -> bytes:
    """Bars of each clip's metrics (generated vs ground truth where both exist)."""
    names = [r["clip"] for r in records]
    panels = [("PSNR (dB)", [r["psnr"] for r in records], None),
              ("SSIM", [r["ssim"] for r in records], None),
              ("2D-BeatAlign", [r["beat_align"]["generated"] for r in records],
               [r["beat_align"]["ground_truth"] for r in records]),
              ("AV-Align", [r["av_align"]["generated"] for r in records],
               [r["av_align"]["ground_truth"] for r in records])]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    x = np.arange(len(names))
    for axis, (title, values, truth) in zip(axes, panels, strict=True):
        finite = [v if v is not None and math.isfinite(v) else np.nan for v in values]
        truth = truth and [np.nan if v is None else v for v in truth]
        axis.bar(x - 0.2 if truth else x, finite, 0.4 if truth else 0.6, label="generated")
        if truth:
            axis.bar(x + 0.2, truth, 0.4, label="ground truth")
            axis.legend(fontsize=7)
        axis.set_title(title)
        axis.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    return _png(figure)


def beat_timeline_plot(record: dict[str, Any]) -> bytes:
    """Music beats vs the motion beats of ground truth and generated video, and AV peaks."""
    fps, timeline = record["fps"], record["timeline"]
    lanes = [("music beats", timeline["music_beats"], "k"),
             ("motion beats (ground truth)", timeline["motion_beats"]["ground_truth"], "C1"),
             ("motion beats (generated)", timeline["motion_beats"]["generated"], "C0")]
    figure, axis = plt.subplots(figsize=(10, 2.4))
    for lane, (label, frames, colour) in enumerate(lanes):
        seconds = np.asarray(frames, np.float64) / fps
        axis.vlines(seconds, lane - 0.4, lane + 0.4, colors=colour, label=label)
    peaks = np.asarray(timeline["audio_peaks"], np.float64)
    axis.plot(peaks, np.full_like(peaks, 3), "kv", markersize=4, label="audio onsets")
    video_peaks = np.asarray(timeline["video_peaks"]["generated"], np.float64)
    axis.plot(video_peaks, np.full_like(video_peaks, 3.6), "C0^", markersize=4,
              label="flow peaks (generated)")
    axis.set_yticks([0, 1, 2, 3.3], ["music", "GT motion", "gen motion", "AV peaks"])
    axis.set_xlim(0, record["frames"] / fps)
    axis.set_xlabel("seconds")
    axis.set_title(f"{record['clip']}: beats")
    return _png(figure)


def _markdown_table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _html_table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    def cell(text: str, tag: str) -> str:
        bold = text.startswith("**")
        text = html.escape(text.strip("*"))
        return f"<{tag}>{'<b>' + text + '</b>' if bold else text}</{tag}>"

    head = "".join(cell(c, "th") for c in columns)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(evaluation: EvaluationRun, summary: dict[str, Any],
                 records: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    """Write report.md, report.html and the plots; returns the Markdown."""
    plots = [evaluation.write_png_bytes("plots/per_clip.png", per_clip_plot(records))]
    plots += [evaluation.write_png_bytes(f"plots/beats_{r['clip']}.png", beat_timeline_plot(r))
              for r in records]
    label = "dancegen (this run)"
    sections = [
        ("Table 1: comparison (the paper's numbers, AIST++ test split)",
         TABLE1_COLUMNS, table1_rows(summary, label)),
        ("Table 2: guidance ablation", TABLE2_COLUMNS, table2_rows(summary, label)),
        ("2D-BeatAlign in both variants (Table 1 shows the configured one; the paper cites "
         "FACT [6] but does not say which variant its numbers are)", BEAT_ALIGN_COLUMNS,
         beat_align_rows(summary, label)),
        ("Per clip", CLIP_COLUMNS, clip_rows(records)),
    ]
    markdown = [f"# {title}", "", *[f"- {note}" for note in notes], ""]
    page = [f"<h1>{html.escape(title)}</h1><ul>",
            *[f"<li>{html.escape(note)}</li>" for note in notes], "</ul>"]
    for heading, columns, rows in sections:
        head = columns if columns[0] == "clip" else ("method", *columns)
        markdown += [f"## {heading}", "", _markdown_table(head, rows), ""]
        page += [f"<h2>{html.escape(heading)}</h2>", _html_table(head, rows)]
    markdown += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    page += ["<h2>Plots</h2>"] + [f'<img src="{p}" alt="{p}"><br>' for p in plots]
    markdown += ["", "## Samples (ground truth above, generated below)", ""]
    page += ["<h2>Samples (ground truth above, generated below)</h2>"]
    for r in records:
        markdown += [f"{r['clip']}: [video]({r['video']})", "", f"![{r['clip']}]({r['sample']})",
                     ""]
        page += [f'<p>{html.escape(r["clip"])}: <a href="{r["video"]}">video</a></p>',
                 f'<img src="{r["sample"]}" alt="{html.escape(r["clip"])}">']
    text = "\n".join(markdown)
    evaluation.write_text("report.md", text)
    style = "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
    evaluation.write_text("report.html", "<!doctype html><meta charset='utf-8'><title>"
                          f"{html.escape(title)}</title><style>{style}</style>"
                          + "\n".join(page))
    return text
