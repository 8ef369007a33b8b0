"""Quality-control overlay figures: label maps over orthogonal slices of the image.

Matplotlib is used through its object API with the Agg canvas only (:class:`matplotlib.figure.Figure`
+ :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`): no pyplot, no global state, safe in
worker processes and threads.

Orientation. Arrays are in RAS order (axis 0 increases towards the patient's Right, axis 1 towards
Anterior, axis 2 towards Superior). Panels follow the radiological convention used by clinical
viewers: axial viewed from the feet with anterior up and the patient's right on the left of the
screen; coronal viewed from the front with superior up and the patient's right on the left;
sagittal with superior up and anterior on the left. Each panel is labelled with orientation letters
and drawn in millimetres, so anisotropic voxels keep their true aspect.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["overlay_figure", "default_label_colors", "choose_slices", "DEFAULT_COLORS", "TUMOR_NAMES"]

#: Default colours by (case-insensitive) label name: tissue readable on a grey image, tumor as in
#: BraTS figures (necrosis red, edema yellow-green, enhancing cyan).
DEFAULT_COLORS: dict[str, str] = {
    "csf": "#2f8cff",  # blue
    "gm": "#3ddc68",  # green
    "wm": "#f4f4f4",  # near white: keeps yellow-green free for edema
    "tumor": "#ff3b3b",  # red (tumor voxels in a tissue map)
    "ncr": "#ff2020",  # red
    "net": "#ff2020",
    "ncr/net": "#ff2020",
    "ed": "#c6f01e",  # yellow-green
    "edema": "#c6f01e",
    "et": "#18e4ff",  # cyan
    "enhancing": "#18e4ff",
}
#: Label names treated as tumor classes when choosing slices.
TUMOR_NAMES = frozenset({"tumor", "ncr", "net", "ncr/net", "ed", "edema", "et", "enhancing", "wt", "tc"})
_FALLBACK = ("#e377c2", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#d62728", "#1f77b4")

_FILL_ALPHA = 0.45
_BG = "black"
_FG = "white"


def default_label_colors(label_names: Mapping[int, str]) -> dict[int, str]:
    """Colour for each label: by name from :data:`DEFAULT_COLORS`, else from a fixed cycle."""
    out: dict[int, str] = {}
    k = 0
    for value, name in sorted(label_names.items()):
        color = DEFAULT_COLORS.get(str(name).strip().lower())
        if color is None:
            color = _FALLBACK[k % len(_FALLBACK)]
            k += 1
        out[int(value)] = color
    return out


def _com(mask: np.ndarray) -> tuple[int, int, int] | None:
    """Rounded centre of mass of a 3-D boolean mask, from its axis projections (fast)."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        w = np.count_nonzero(mask, axis=other).astype(np.float64)
        total = w.sum()
        if total == 0:
            return None
        out.append(int(round(float((w * np.arange(w.size)).sum() / total))))
    return tuple(out)  # type: ignore[return-value]


def _label_counts(lab: np.ndarray, values: Sequence[int]) -> list[int]:
    if lab.dtype.kind in "ub" and lab.size:
        counts = np.bincount(lab.ravel(), minlength=max(values) + 1)
        return [int(counts[v]) if v >= 0 else 0 for v in values]
    return [int(np.count_nonzero(lab == v)) for v in values]


def choose_slices(labels: np.ndarray, label_names: Mapping[int, str] | None = None,
                  image: np.ndarray | None = None,
                  truth: np.ndarray | None = None) -> tuple[int, int, int]:
    """Voxel indices ``(i, j, k)`` of the sagittal, coronal and axial slices to show.

    The centre of mass of, in order of preference: the largest tumor class present in ``labels``
    (names in :data:`TUMOR_NAMES`); the same in ``truth``; all non-zero ``labels``; all non-zero
    ``truth``; the non-zero ``image``; else the centre of the volume.

    Parameters
    ----------
    labels : ndarray of shape (X, Y, Z), int
    label_names : dict of int to str, optional
    image, truth : ndarray of shape (X, Y, Z), optional
    """
    names = label_names or {}
    tumor_values = [v for v, n in names.items() if str(n).strip().lower() in TUMOR_NAMES]
    for lab in (labels, truth):
        if lab is None or not tumor_values:
            continue
        n, v = max(zip(_label_counts(lab, tumor_values), tumor_values))
        if n > 0:
            return _com(lab == v)  # type: ignore[return-value]
    for mask in (
        labels > 0,
        None if truth is None else truth > 0,
        None if image is None else np.abs(np.nan_to_num(image)) > 0,
    ):
        if mask is not None:
            c = _com(mask)
            if c is not None:
                return c
    return tuple(s // 2 for s in labels.shape)  # type: ignore[return-value]


def _window(image: np.ndarray) -> tuple[float, float]:
    """Robust display window: 1st and 99th percentiles (of non-zero voxels when background is 0)."""
    step = max(1, round((image.size / 2e6) ** (1 / 3)))  # ~2 M samples are plenty
    sub = image[::step, ::step, ::step]
    vals = sub[np.isfinite(sub)]
    nz = vals[vals != 0]
    if nz.size > 0.01 * vals.size:
        vals = nz
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [1, 99]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _views(shape: Sequence[int], spacing: Sequence[float], ijk: Sequence[int]):
    """For each panel: name, slicer giving a 2-D (horizontal, vertical) array, mm sizes, letters.

    The 2-D arrays are indexed [h, v] in the array's own direction; ``flip_h`` says whether the
    horizontal axis is shown reversed (patient's right on the left of the screen).
    """
    i, j, k = ijk
    sx, sy, sz = spacing
    return [
        # name, index expression, (pixel w, pixel h), flip horizontal, (left, right, top, bottom)
        ("axial", (slice(None), slice(None), k), (sx, sy), True, ("R", "L", "A", "P")),
        ("coronal", (slice(None), j, slice(None)), (sx, sz), True, ("R", "L", "S", "I")),
        ("sagittal", (i, slice(None), slice(None)), (sy, sz), True, ("A", "P", "S", "I")),
    ]


def _to_screen(a2: np.ndarray, flip_h: bool) -> np.ndarray:
    """[h, v] array -> [row, col] array for ``imshow(origin='lower')``."""
    out = a2.T
    return out[:, ::-1] if flip_h else out


def _atomic_savefig(fig: Figure, path: Path, dpi: int) -> None:
    from .tables import atomic_open

    with atomic_open(path, "wb") as fh:
        FigureCanvasAgg(fig)
        fig.savefig(fh, format="png", dpi=dpi, facecolor=fig.get_facecolor())


def overlay_figure(image: np.ndarray, labels: np.ndarray, out_path: str | os.PathLike, *,
                   spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   truth: np.ndarray | None = None,
                   label_names: Mapping[int, str] | None = None,
                   label_colors: Mapping[int, object] | None = None,
                   title: str = "",
                   slices: Sequence[int] | None = None,
                   dpi: int = 100) -> Path:
    """Write a PNG with axial, coronal and sagittal slices of ``image`` and the labels over it.

    Predicted labels are drawn as semi-transparent colour fill, the ground truth (if given) as
    contour lines of the same colours; a legend names the labels. Written atomically: the PNG goes
    to a temporary file in the destination folder, then is renamed over ``out_path``.

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z), float
        Background image in RAS order; shown with a 1st-99th percentile window.
    labels : ndarray of shape (X, Y, Z), int
        Label map on the image's grid (0 = background).
    out_path : str or Path
        Destination ``.png``; the folder is created if needed.
    spacing : sequence of 3 float
        Voxel size in mm, for the true aspect ratio.
    truth : ndarray of shape (X, Y, Z), int, optional
        Ground-truth label map with the same coding as ``labels``, drawn as contours.
    label_names : dict of int to str, optional
        Label value -> name for the legend and default colours (e.g. ``{1: "CSF", 2: "GM",
        3: "WM"}`` or ``{1: "NCR", 2: "ED", 3: "ET"}``). Default: every value found, named by
        its number.
    label_colors : dict of int to colour, optional
        Any matplotlib colour per label; defaults from :func:`default_label_colors`.
    title : str
        Figure title (e.g. the case id).
    slices : sequence of 3 int, optional
        Voxel indices ``(i, j, k)`` of the sagittal, coronal and axial slices. Default
        :func:`choose_slices` (centre of mass of the largest tumor class or of the labels).
    dpi : int
        Resolution of the PNG (the figure is 12 x 4.6 inches).

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ValueError
        If arrays are not 3-D or their shapes differ (the message names the shapes).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> img = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    >>> lab = np.zeros((20, 24, 16), np.uint8); lab[5:10, 6:12, 4:9] = 2
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "overlay.png"
    >>> overlay_figure(img, lab, out, label_names={1: "CSF", 2: "GM", 3: "WM"}).exists()
    True
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (X, Y, Z), got shape {image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"labels shape {labels.shape} differs from image shape {image.shape}")
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != image.shape:
            raise ValueError(f"truth shape {truth.shape} differs from image shape {image.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    out_path = Path(out_path)

    if label_names is None:
        found = np.union1d(np.unique(labels), np.unique(truth) if truth is not None else [])
        label_names = {int(v): str(int(v)) for v in found if v != 0}
    colors = default_label_colors(label_names)
    if label_colors:
        colors.update({int(k): v for k, v in label_colors.items()})

    if slices is None:
        ijk = choose_slices(labels, label_names, image, truth)
    else:
        ijk = tuple(int(s) for s in slices)
        if len(ijk) != 3:
            raise ValueError(f"slices must be 3 voxel indices (i, j, k), got {slices!r}")
    ijk = tuple(int(np.clip(v, 0, n - 1)) for v, n in zip(ijk, image.shape))

    lo, hi = _window(image)
    max_label = int(max(labels.max(initial=0), truth.max(initial=0) if truth is not None else 0, 0))
    max_label = max(max_label, max(label_names, default=0))
    lut = np.zeros((max_label + 1, 4), np.float32)  # transparent for 0 and unnamed labels
    for value, color in colors.items():
        if 0 < value <= max_label:
            r, g, b, _ = to_rgba(color)
            lut[value] = (r, g, b, _FILL_ALPHA)

    fig = Figure(figsize=(12, 4.6), facecolor=_BG)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9 if title else 0.96, bottom=0.14, wspace=0.04)
    present: set[int] = set()
    for ax, (name, index, (pw, ph), flip, letters) in zip(axes, _views(image.shape, spacing, ijk)):
        img2 = _to_screen(np.nan_to_num(image[index].astype(np.float32, copy=False)), flip)
        lab2 = _to_screen(labels[index], flip)
        rows, cols = img2.shape
        extent = (0.0, cols * pw, 0.0, rows * ph)
        ax.imshow(img2, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent,
                  interpolation="nearest")
        lab_idx = np.clip(lab2, 0, max_label).astype(np.intp)
        lab_idx[(lab2 < 0) | (lab2 > max_label)] = 0
        if lab_idx.any():
            ax.imshow(lut[lab_idx], origin="lower", extent=extent, interpolation="nearest")
            present.update(int(v) for v in np.unique(lab_idx) if v)
        if truth is not None:
            tr2 = _to_screen(truth[index], flip)
            xs = (np.arange(cols) + 0.5) * pw
            ys = (np.arange(rows) + 0.5) * ph
            for value in np.unique(tr2):
                value = int(value)
                if value == 0 or value not in colors:
                    continue
                ax.contour(xs, ys, (tr2 == value).astype(np.float32), levels=[0.5],
                           colors=[colors[value]], linewidths=1.1)
                present.add(value)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_axis_off()
        idx = {"axial": ijk[2], "coronal": ijk[1], "sagittal": ijk[0]}[name]
        ax.set_title(f"{name} {idx}", color=_FG, fontsize=10)
        left, right, top, bottom = letters
        style = dict(color=_FG, fontsize=9, fontweight="bold", transform=ax.transAxes)
        ax.text(0.01, 0.5, left, ha="left", va="center", **style)
        ax.text(0.99, 0.5, right, ha="right", va="center", **style)
        ax.text(0.5, 0.99, top, ha="center", va="top", **style)
        ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)

    handles: list = [
        Patch(facecolor=colors[v], edgecolor="none", alpha=0.8, label=str(label_names.get(v, v)))
        for v in sorted(set(label_names) | present)
        if v in colors and v != 0
    ]
    if truth is not None:
        handles.append(Line2D([], [], color=_FG, linewidth=1.1, label="ground truth (contours)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False,
                   labelcolor=_FG, fontsize=9)
    if title:
        fig.suptitle(title, color=_FG, fontsize=12)
    _atomic_savefig(fig, out_path, dpi)
    return out_path
