"""The batch review page: self-contained, escaped, images linked only when they exist."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import unquote

from segment.report.html import render_index, shown_columns, summary_columns, write_index


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


ROWS = [
    {"case_id": "a b#1", "status": "ok", "error": "", "seconds": 3.2, "flags": "brain volume 300 mL outside [800, 2100]",
     "dice_GM": 0.91, "hd95_GM": 2.0, "iou_GM": 0.83, "brain_volume_ml": 300.0},
    {"case_id": "<script>x</script>", "status": "failed", "error": "t1.nii.gz: truncated & <corrupt>",
     "seconds": 0.1, "flags": "failed"},
    {"case_id": "c", "status": "ok", "error": "", "seconds": 2.0, "flags": "", "dice_GM": 0.4, "hd95_GM": None,
     "iou_GM": float("nan"), "brain_volume_ml": 1200.0},
]


def test_write_index_links_existing_images_relatively(tmp_path):
    (tmp_path / "a b#1").mkdir()
    (tmp_path / "a b#1" / "overlay.png").write_bytes(b"\x89PNG")
    (tmp_path / "report.csv").write_text("case_id\n")
    path = write_index(ROWS, tmp_path / "index.html", title="t", links={"report.csv": "report.csv", "run.log": "run.log"})
    page = path.read_text()
    p = _parse(page)
    imgs = [a["src"] for t, a in p.tags if t == "img" and a.get("src")]
    assert imgs == ["a%20b%231/overlay.png"]
    for src in imgs:
        assert (tmp_path / unquote(src)).is_file()
    hrefs = [a["href"] for t, a in p.tags if t == "a"]
    assert "report.csv" in hrefs and "run.log" not in hrefs  # links only to files that exist
    for h in hrefs:
        assert (tmp_path / unquote(h)).is_file()
    assert "none" in page  # case c has no overlay


def test_page_is_self_contained_and_escaped():
    page = render_index(ROWS, title="<t>")
    p = _parse(page)
    assert not any(a.get("src") or a.get("href") for t, a in p.tags if t in ("script", "link"))
    assert "http://" not in page and "https://" not in page
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "truncated &amp; &lt;corrupt&gt;" in page
    assert sum(1 for t, _ in p.tags if t == "script") == 1  # our one inline script
    rows = [a for t, a in p.tags if t == "tr" and "data-case" in a]
    assert [r["data-case"] for r in rows] == ["a b#1", "<script>x</script>", "c"]
    assert [r["data-flagged"] for r in rows] == ["1", "1", "0"]
    assert rows[1].get("class") == "failed"


def test_cells_carry_sort_keys_and_missing_values_are_empty():
    page = render_index(ROWS)
    p = _parse(page)
    keys = [a.get("data-v") for t, a in p.tags if t == "td" and "data-v" in a]
    assert "0.91" in keys and "0.4" in keys
    assert "nan" not in keys and "None" not in keys  # NaN and None sort last, shown empty
    assert "0.910" in page and "0.400" in page


def test_summary_and_column_split():
    main, rest = shown_columns(["dice_GM", "iou_GM", "hd95_GM", "brain_volume_ml", "fraction_GM"])
    assert main == ["dice_GM", "brain_volume_ml"] and rest == ["iou_GM", "hd95_GM", "fraction_GM"]
    summary = [{"metric": "dice_GM", "n": 2, "mean": 0.655, "std": 0.36, "median": 0.655, "iqr": 0.255,
                "min": 0.4, "max": 0.91}, {"metric": "iou_GM", "n": 1, "mean": 0.83}]
    page = render_index(ROWS, summary=summary)
    assert 'id="summary"' in page and "0.655" in page
    assert 'id="allcols"' in page  # hidden columns can be shown


def test_empty_report():
    page = render_index([])
    assert "no cases" in page and "0 ok" in page


def test_tissue_volumes_shown_by_default_in_order():
    cols = ["dice_CSF", "hd95_CSF", "dice_GM", "volume_ml_WT", "dice_WT", "brain_volume_ml", "volume_ml_WM",
            "fraction_WM", "volume_ml_GM", "volume_ml_CSF", "tumor_volume_ml"]
    main, rest = shown_columns(cols)
    assert main == ["dice_CSF", "dice_GM", "dice_WT", "brain_volume_ml", "volume_ml_CSF", "volume_ml_GM",
                    "volume_ml_WM", "tumor_volume_ml"]
    assert "volume_ml_WT" in rest and "hd95_CSF" in rest  # a truth's region volume is a metric, not shown first
    assert summary_columns(cols) == ["dice_CSF", "hd95_CSF", "dice_GM", "dice_WT", "brain_volume_ml",
                                     "volume_ml_CSF", "volume_ml_GM", "volume_ml_WM", "tumor_volume_ml"]
    row = {"case_id": "m", "status": "ok", "error": "", "seconds": 1.0, "flags": "", "dice_GM": 0.9,
           "volume_ml_GM": 612.5, "volume_ml_WM": 480.0, "hd95_GM": 2.0}
    page = render_index([row])
    p = _parse(page)
    heads = [(a.get("class") or "") for t, a in p.tags if t == "th"]
    texts = [t.strip() for t in p.text if t.strip()]
    assert "volume mL GM" in texts and "612" in " ".join(texts)
    # the volume headers are not hidden (class x is "all metric columns" only)
    i = texts.index("volume mL GM")
    assert i > 0 and heads.count("x") == 1  # only hd95_GM is hidden


def test_flags_and_warnings_are_shown():
    row = {"case_id": "w", "status": "ok", "error": "", "seconds": 1.0,
           "flags": "partial-volume model fell back to the plain mixture (pure means drifted 2.1 SD > 2)",
           "warnings": "partial-volume model fell back to the plain mixture (pure means drifted 2.1 SD > 2) | "
                       "t2: rigid registration rejected; kept the physical-coordinate alignment",
           "dice_GM": 0.9}
    page = render_index([row, {**row, "case_id": "v", "flags": "", "warnings": ""}])
    p = _parse(page)
    flags = [a for t, a in p.tags if t == "span" and a.get("class") == "flag"]
    warns = [a for t, a in p.tags if t == "span" and a.get("class") == "warn"]
    assert len(flags) == 1 and len(warns) == 1  # the warning that is also a flag is shown once
    assert "rigid registration rejected" in page
    assert "1 with warnings" in page
    assert "warnings</th>" not in page.replace("flags, warnings / error</th>", "")  # not a metric column
