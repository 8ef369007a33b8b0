"""The batch review page: one self-contained HTML file (inline CSS and JS, no network access).

:func:`write_index` renders report rows as a sortable, filterable table with each case's overlay
figure, its quality flags and a summary of the metrics. Images are linked relatively
(``<case>/overlay.png``), so the page works when the output folder is moved or copied as a whole
and opened from disk.

``docs/figures/index_screenshot.png`` shows the page of
``segment batch --input sample_data --out results --config configs/demo.yaml``, rendered with
``chromium --headless --no-sandbox --hide-scrollbars --screenshot=docs/figures/index_screenshot.png
--window-size=1280,1000 file://$PWD/results/index.html``: the page fits 1280 px (Dice and volumes
shown by default, every other column behind "all metric columns"); flags and warnings of each
case stand beside its overlay.
"""
from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .tables import as_number, atomic_write_text

__all__ = ["write_index", "render_index", "shown_columns", "summary_columns"]

#: Shown by default in the cases table: overlap and volumes (tissue classes, brain, tumor).
_MAIN_PREFIXES = ("dice_",)
_QC_MAIN = ("brain_volume_ml", "volume_ml_CSF", "volume_ml_GM", "volume_ml_WM", "tumor_volume_ml")
#: Also shown in the summary table (it has room: no overlay, no flags).
_SUMMARY_PREFIXES = ("hd95_",)
#: Row keys that are text, never metric columns.
_TEXT_KEYS = {"kind", "warnings"}


def _volume_last(columns: Sequence[str]) -> list[str]:
    vols = sorted((c for c in columns if c in _QC_MAIN), key=_QC_MAIN.index)
    return [c for c in columns if c not in vols] + vols


def shown_columns(columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split metric columns into those shown by default in the cases table (Dice per class
    and region, then the volumes: brain, CSF, GM, WM, tumor) and the rest (HD95, IoU,
    sensitivity, fractions ..., behind "all metric columns"), so the table fits 1280 px."""
    main = _volume_last([c for c in columns if c.startswith(_MAIN_PREFIXES) or c in _QC_MAIN])
    rest = [c for c in columns if c not in main]
    return main, rest


def summary_columns(columns: Sequence[str]) -> list[str]:
    """Columns of the summary table: Dice, HD95, then the volumes."""
    return _volume_last([c for c in columns if c.startswith(_MAIN_PREFIXES + _SUMMARY_PREFIXES) or c in _QC_MAIN])


def _split(text: Any, sep: str = "; ") -> list[str]:
    """Items of a joined text cell: flags are joined by "; ", warnings by " | "."""
    return [f.strip() for f in str(text or "").split(sep) if f.strip()]


def _fmt(col: str, v: Any) -> str:
    f = as_number(v)
    if f is None:
        if v is None or v == "" or isinstance(v, float) or str(v).lower() in ("nan", "inf", "-inf"):
            return ""
        return html.escape(str(v))
    if col.startswith(("dice_", "iou_", "sensitivity_", "specificity_", "lesion_dice_", "fraction_")):
        return f"{f:.3f}"
    if col.startswith(("lesion_tp_", "lesion_fn_", "lesion_fp_")) or col == "n":
        return f"{f:.0f}"
    if abs(f) >= 100:
        return f"{f:.0f}"
    return f"{f:.1f}" if abs(f) >= 1 else f"{f:.3g}"


def _heat(col: str, v: Any) -> str:
    """Inline background for overlap scores: red below 0.5 through yellow to green at 1."""
    f = as_number(v)
    if f is None or not col.startswith(("dice_", "lesion_dice_")):
        return ""
    hue = 120 * min(max((f - 0.5) / 0.5, 0.0), 1.0)
    return f' style="background:hsl({hue:.0f},70%,88%)"'


def _header(col: str) -> str:
    return html.escape(col.replace("_ml_", " mL ").replace("_ml", " mL").replace("_", " "))


_CSS = """
:root{--fg:#1d2230;--muted:#667085;--line:#d9dee7;--bg:#ffffff;--alt:#f6f8fb;--bad:#fde8e8;--flag:#b54708;--flagbg:#fef0c7}
*{box-sizing:border-box}
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:20px 24px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:15px;margin:22px 0 8px}
.meta{color:var(--muted);margin-bottom:12px}
.meta a{color:inherit}
.pill{display:inline-block;border-radius:10px;padding:1px 8px;margin-right:6px;font-weight:600}
.pill.ok{background:#dcfae6;color:#067647}.pill.failed{background:var(--bad);color:#b42318}.pill.flagged{background:var(--flagbg);color:var(--flag)}
.controls{display:flex;gap:12px;align-items:center;margin:10px 0;flex-wrap:wrap}
.controls input[type=search]{padding:4px 8px;border:1px solid var(--line);border-radius:6px;min-width:220px}
.controls select{padding:3px 6px;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:3px 5px;text-align:right;vertical-align:middle;white-space:nowrap}
th{position:sticky;top:0;background:#eef2f7;cursor:pointer;user-select:none;font-weight:600;z-index:1;white-space:normal;min-width:40px;max-width:62px;line-height:1.15;font-size:12px}
th.t{max-width:none}
th.asc::after{content:" \\25B2";font-size:10px}th.desc::after{content:" \\25BC";font-size:10px}
td.t,th.t{text-align:left}
tbody tr:nth-child(even){background:var(--alt)}
tr.failed{background:var(--bad)!important}
td.flags{white-space:normal;min-width:120px;max-width:210px;text-align:left}
.flag{display:inline-block;background:var(--flagbg);color:var(--flag);border-radius:4px;padding:0 5px;margin:1px 2px 1px 0;font-size:11.5px}
.warn{display:block;color:#475467;font-size:11.5px;margin:1px 0}.warn::before{content:"\\26A0  "}
.pill.warned{background:#eef2f7;color:#475467}
.wrap{max-width:100%;overflow-x:auto}
.err{color:#b42318;font-size:12px}
td.img img{height:72px;display:block;background:#000;border-radius:3px}
table.x-hidden .x{display:none}
#summary td:first-child,#summary th:first-child{text-align:left}
#summary th{position:static;cursor:default}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;justify-content:center;z-index:9;cursor:zoom-out}
#lightbox.on{display:flex}#lightbox img{max-width:96vw;max-height:92vh}
#lightbox div{position:absolute;top:10px;left:16px;color:#fff;font-weight:600}
.empty{color:var(--muted);font-style:italic}
"""

_JS = """
(function(){
  var table=document.getElementById('cases'); if(!table) return;
  var tbody=table.tBodies[0];
  var heads=table.tHead.rows[0].cells;
  function key(td){ if(!td) return null; var v=td.getAttribute('data-v');
    if(v!==null && v!==''){ var f=parseFloat(v); return isNaN(f)?v.toLowerCase():f; }
    var t=td.textContent.trim(); return t===''?null:t.toLowerCase(); }
  Array.prototype.forEach.call(heads,function(th,i){
    if(th.classList.contains('nosort')) return;
    th.title='sort';
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      Array.prototype.forEach.call(heads,function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var rows=Array.prototype.slice.call(tbody.rows);
      rows.sort(function(a,b){
        var x=key(a.cells[i]),y=key(b.cells[i]);
        if(x===null&&y===null) return 0; if(x===null) return 1; if(y===null) return -1;
        if(typeof x!==typeof y){x=String(x);y=String(y);}
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){tbody.appendChild(r);});
    });
  });
  var q=document.getElementById('q'), show=document.getElementById('show'), all=document.getElementById('allcols');
  function filter(){
    var s=(q.value||'').toLowerCase(), m=show.value, n=0;
    Array.prototype.forEach.call(tbody.rows,function(r){
      var ok=r.getAttribute('data-case').toLowerCase().indexOf(s)>=0;
      if(m==='failed') ok=ok&&r.classList.contains('failed');
      if(m==='flagged') ok=ok&&r.getAttribute('data-flagged')==='1';
      if(m==='ok') ok=ok&&!r.classList.contains('failed');
      r.style.display=ok?'':'none'; if(ok) n++; });
    document.getElementById('nshown').textContent=n;
  }
  q.addEventListener('input',filter); show.addEventListener('change',filter);
  if(all) all.addEventListener('change',function(){table.classList.toggle('x-hidden',!all.checked);});
  var lb=document.getElementById('lightbox'), lbi=lb.querySelector('img'), lbt=lb.querySelector('div');
  tbody.addEventListener('click',function(e){
    var a=e.target.closest('a.ov'); if(!a) return; e.preventDefault();
    lbi.src=a.getAttribute('href'); lbt.textContent=a.getAttribute('data-case'); lb.classList.add('on');});
  lb.addEventListener('click',function(){lb.classList.remove('on');});
  document.addEventListener('keydown',function(e){ if(e.key==='Escape') lb.classList.remove('on');});
})();
"""


def render_index(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "segment batch",
    summary: Sequence[Mapping[str, Any]] | None = None,
    images: Mapping[str, str] | None = None,
    links: Mapping[str, str] | None = None,
    metric_columns: Sequence[str] | None = None,
) -> str:
    """The review page as an HTML string.

    Parameters
    ----------
    rows : report rows (``case_id``, ``status``, ``error``, ``seconds``, ``flags``, metrics ...)
    summary : rows of :func:`segment.report.tables.summarize`, shown above the table
    images : case_id -> relative URL of its overlay figure (cases without one show none)
    links : label -> relative URL of files shown in the header (report.csv, run.log ...)
    metric_columns : numeric columns to show; default every column after the leading ones
    """
    images = images or {}
    links = links or {}
    lead = {"case_id", "status", "error", "seconds", "flags"}
    if metric_columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                if k not in lead and not str(k).startswith("_") and k not in _TEXT_KEYS:
                    seen.setdefault(str(k), None)
        metric_columns = list(seen)
    main, rest = shown_columns(list(metric_columns))
    n_failed = sum(1 for r in rows if r.get("status") != "ok")
    n_flagged = sum(1 for r in rows if r.get("status") == "ok" and r.get("flags"))
    n_warned = sum(1 for r in rows if _split(r.get("warnings"), " | "))
    esc = html.escape
    out: list[str] = []
    w = out.append
    w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    w('<meta name="viewport" content="width=device-width,initial-scale=1">')
    w(f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>")
    w(f"<h1>{esc(title)}</h1>")
    w('<div class="meta">')
    w(f'<span class="pill ok">{len(rows) - n_failed} ok</span>')
    w(f'<span class="pill failed">{n_failed} failed</span>')
    w(f'<span class="pill flagged">{n_flagged} flagged</span>')
    if n_warned:
        w(f'<span class="pill warned">{n_warned} with warnings</span>')
    w(" ")
    w(f"{len(rows)} cases &middot; written {esc(time.strftime('%Y-%m-%d %H:%M'))}")
    if links:
        w(" &middot; " + " &middot; ".join(f'<a href="{esc(u, quote=True)}">{esc(k)}</a>' for k, u in links.items()))
    w("</div>")

    if summary:
        wanted = summary_columns([str(x.get("metric")) for x in summary])
        shown = sorted((x for x in summary if x.get("metric") in wanted), key=lambda x: wanted.index(x["metric"]))
        if shown:
            w("<h2>Summary over the cases that succeeded</h2>")
            w('<table id="summary"><thead><tr><th class="t nosort"></th>')
            w("".join(f"<th>{_header(str(x['metric']))}</th>" for x in shown))
            w("</tr></thead><tbody>")
            for stat, label in (("n", "n"), ("mean", "mean"), ("std", "std"), ("median", "median"),
                                ("iqr", "IQR"), ("min", "min"), ("max", "max")):
                cells = "".join(f"<td>{_fmt('n' if stat == 'n' else str(x['metric']), x.get(stat))}</td>" for x in shown)
                w(f'<tr><td class="t"><b>{label}</b></td>{cells}</tr>')
            w("</tbody></table>")

    w("<h2>Cases</h2>")
    w('<div class="controls"><input type="search" id="q" placeholder="filter by case id">'
      '<label>show <select id="show"><option value="all">all</option><option value="flagged">flagged</option>'
      '<option value="failed">failed</option><option value="ok">ok</option></select></label>')
    if rest:
        w(f'<label><input type="checkbox" id="allcols"> all {len(main) + len(rest)} metric columns</label>')
    w('<span class="meta" style="margin:0"><span id="nshown">' + str(len(rows)) + "</span> shown; "
      "click a header to sort, an overlay to enlarge</span></div>")
    if not rows:
        w('<p class="empty">no cases</p>')
    w('<div class="wrap"><table id="cases" class="x-hidden"><thead><tr>')
    has_images = bool(images)
    w('<th class="t">case</th><th class="t">status</th><th class="t">flags, warnings / error</th>')
    if has_images:
        w('<th class="t nosort">overlay</th>')
    w("<th>seconds</th>")
    for c in main:
        w(f"<th>{_header(c)}</th>")
    for c in rest:
        w(f'<th class="x">{_header(c)}</th>')
    w("</tr></thead><tbody>")
    for r in rows:
        cid = str(r.get("case_id", ""))
        status = str(r.get("status", ""))
        failed = status != "ok"
        flags = [f for f in _split(r.get("flags")) if f != "failed"]
        warns = [x for x in _split(r.get("warnings"), " | ") if x not in flags]
        flagged = "1" if (flags or failed) else "0"
        cls = ' class="failed"' if failed else ""
        w(f'<tr{cls} data-case="{esc(cid, quote=True)}" data-flagged="{flagged}">')
        w(f'<td class="t"><b>{esc(cid)}</b></td><td class="t">{esc(status)}</td><td class="flags">')
        w("".join(f'<span class="flag">{esc(f)}</span>' for f in flags))
        w("".join(f'<span class="warn">{esc(x)}</span>' for x in warns))
        if r.get("error"):
            w(f'<div class="err">{esc(str(r["error"]))}</div>')
        w("</td>")
        if has_images:
            src = images.get(cid)
            if src:
                u = esc(src, quote=True)
                w(f'<td class="t img"><a class="ov" href="{u}" data-case="{esc(cid, quote=True)}">'
                  f'<img loading="lazy" src="{u}" alt="overlay of {esc(cid, quote=True)}"></a></td>')
            else:
                w('<td class="t img"><span class="empty">none</span></td>')
        secs = as_number(r.get("seconds"))
        w(f'<td data-v="{"" if secs is None else secs}">{_fmt("seconds", secs)}</td>')
        for c in main + rest:
            v = as_number(r.get(c))
            x = ' class="x"' if c in rest else ""
            heat = _heat(c, v) if c not in rest else ""
            w(f'<td{x}{heat} data-v="{"" if v is None else repr(v)}">{_fmt(c, r.get(c))}</td>')
        w("</tr>")
    w("</tbody></table></div>")
    w('<div id="lightbox"><div></div><img alt=""></div>')
    w(f"<script>{_JS}</script></body></html>\n")
    return "\n".join(out)


def write_index(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "segment batch",
    summary: Sequence[Mapping[str, Any]] | None = None,
    links: Mapping[str, str] | None = None,
    image_name: str | None = "overlay.png",
    metric_columns: Sequence[str] | None = None,
) -> Path:
    """Write the review page to ``path`` (atomically) and return ``path``.

    Each case's figure is linked as ``<case_id>/<image_name>`` relative to the page, and only
    when that file exists; ``links`` whose targets do not exist beside the page are left out.
    """
    path = Path(path)
    root = path.parent
    images: dict[str, str] = {}
    if image_name:
        for r in rows:
            cid = str(r.get("case_id", ""))
            if cid and (root / cid / image_name).is_file():
                images[cid] = f"{quote(cid)}/{quote(image_name)}"
    present = {k: u for k, u in (links or {}).items() if (root / u).exists()}
    text = render_index(rows, title=title, summary=summary, images=images, links=present,
                        metric_columns=metric_columns)
    return atomic_write_text(path, text)
