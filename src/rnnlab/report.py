"""One self-contained ``report.html`` from run folders.

A run folder (see :mod:`rnnlab.runs`) holds ``config.json`` (config, command, versions),
``metrics.json``, ``log.csv`` / ``history.json`` (per-epoch curves) and plots (``*.png``, ``*.gif``).
The report shows, per run: the command and versions, the metrics as a table, the training curves,
and every plot, embedded as base64 so the page is one file that can be mailed or archived.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
from pathlib import Path

from rnnlab.errors import RnnlabError

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{padding:16px 32px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:18px;margin:0 0 8px;color:#1d3557}h3{font-size:14px;margin:14px 0 6px;color:#444}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #dde;padding:4px 8px;text-align:left}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#eef1f6;padding:2px 5px;border-radius:4px;font-size:12px;word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;max-width:100%}
.plots img{max-width:min(100%,900px);border:1px solid #e3e6ea;border-radius:4px}
figcaption{font-size:12px;color:#666}.toc a{margin-right:12px}
"""


# Marks the page with how many of its images decoded, so a browser check (and a reader's
# devtools) can tell a broken figure at a glance.
_IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script>"""


def find_runs(paths: list[Path]) -> list[Path]:
    """Every folder under ``paths`` holding a metrics.json (a run), sorted."""
    runs: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise RnnlabError(f"run folder {p} does not exist")
        if (p / "metrics.json").is_file():
            runs.add(p)
        runs.update(m.parent for m in p.rglob("metrics.json"))
    return sorted(runs)


def _flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and len(obj) > 12:
        return [(prefix, f"[{len(obj)} values]")]
    return [(prefix, obj)]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return html.escape(json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def _metrics_table(metrics: dict) -> str:
    """Nested ``{model: {metric: value}}`` becomes a grid; anything else a key/value list."""
    rowsets = {k: v for k, v in metrics.items() if isinstance(v, dict) and v and all(not isinstance(x, dict) for x in v.values())}
    parts = []
    if len(rowsets) >= 2:
        cols = sorted({c for v in rowsets.values() for c in v})
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            f"<tr><th>{html.escape(str(name))}</th>" + "".join(f"<td class=num>{_fmt(row.get(c, ''))}</td>" for c in cols) + "</tr>"
            for name, row in rowsets.items())
        parts.append(f"<table><tr><th></th>{head}</tr>{body}</table>")
        rest = {k: v for k, v in metrics.items() if k not in rowsets}
    else:
        rest = metrics
    flat = _flatten(rest)
    if flat:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{_fmt(v)}</td></tr>" for k, v in flat) + "</table>")
    return "".join(parts)


def _read_curves(run: Path) -> dict[str, list[float]]:
    hist = run / "history.json"
    if hist.is_file():
        try:
            data = json.loads(hist.read_text())
            return {k: [float("nan") if v is None else float(v) for v in vals] for k, vals in data.items() if isinstance(vals, list)}
        except (ValueError, TypeError):
            pass
    log = run / "log.csv"
    if log.is_file():
        with log.open() as handle:
            rows = list(csv.DictReader(handle))
        curves: dict[str, list[float]] = {}
        for row in rows:
            for k, v in row.items():
                if k != "epoch":
                    try:
                        curves.setdefault(k, []).append(float(v))
                    except (TypeError, ValueError):
                        pass
        return curves
    return {}


def _curve_png(curves: dict[str, list[float]]) -> str | None:
    losses = {k: v for k, v in curves.items() if "loss" in k and v}
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k, v in losses.items():
        ax.plot(range(1, len(v) + 1), v, marker="o" if len(v) < 30 else None, label=k)
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(data_b64: str, mime: str, caption: str) -> str:
    return (f'<figure><img src="data:{mime};base64,{data_b64}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _run_section(run: Path, root: Path, index: int) -> str:
    rel = run.relative_to(root) if run.is_relative_to(root) else run
    parts = [f'<section id="run{index}"><h2>{html.escape(str(rel))}</h2>']
    cfg_path = run / "config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
            if cfg.get("command"):
                parts.append(f"<p>Command: <code>{html.escape(cfg['command'])}</code></p>")
            if cfg.get("versions"):
                parts.append("<p>Versions: " + ", ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in cfg["versions"].items()) + "</p>")
            if cfg.get("config"):
                parts.append("<details><summary>Configuration</summary>" + _metrics_table(cfg["config"]) + "</details>")
        except ValueError:
            parts.append(f"<p>config.json is not valid JSON</p>")
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except ValueError as exc:
        metrics = {"error": f"metrics.json unreadable: {exc}"}
    parts.append("<h3>Metrics</h3>" + (_metrics_table(metrics) if isinstance(metrics, dict) else f"<pre>{_fmt(metrics)}</pre>"))
    figures = []
    curve = _curve_png(_read_curves(run))
    if curve:
        figures.append(_img(curve, "image/png", "training curves (log.csv)"))
    for img in sorted([*run.glob("*.png"), *run.glob("*.gif")]):
        if img.name.startswith("report"):
            continue
        mime = "image/gif" if img.suffix == ".gif" else "image/png"
        figures.append(_img(base64.b64encode(img.read_bytes()).decode(), mime, img.name))
    if figures:
        parts.append("<h3>Plots</h3><div class=plots>" + "".join(figures) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def build_report(paths: list[Path], out: Path, title: str = "rnnlab report") -> Path:
    """Write one self-contained HTML page for every run found under ``paths``."""
    runs = find_runs([Path(p) for p in paths])
    if not runs:
        raise RnnlabError(f"no run folders (with metrics.json) under {[str(p) for p in paths]}")
    root = Path(paths[0]) if len(paths) == 1 else Path(".")
    toc = "".join(f'<a href="#run{i}">{html.escape(str(r.relative_to(root) if r.is_relative_to(root) else r))}</a>'
                  for i, r in enumerate(runs))
    body = "".join(_run_section(r, root, i) for i, r in enumerate(runs))
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{len(runs)} run(s), written {stamp}</p></header>"
            f"<main><nav class=toc>{toc}</nav>{body}</main>{_IMAGE_CHECK}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
