"""Quality-control overlay figures: label maps over orthogonal slices of the image.

Matplotlib is used through its object API with the Agg canvas only (:class:`matplotlib.figure.Figure`
+ :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`): no pyplot, no global state, safe in
worker processes and threads.

Orientation. Arrays are in RAS order (axis 0 increases towards the patient's Right, axis 1 towards
Anterior, axis 2 towards Superior). Panels follow the radiological convention used by clinical
viewers: axial viewed from the feet with anterior up and the patient's right on the left of the
screen; coronal viewed from the front with superior up and the patient's right on the left;
sagittal with superior up and anterior on the left. Each panel is labelled with orientation letters
and drawn in millimetres, so anisotropic voxels keep their true aspect; its slice number is the
input file's voxel index (``file_affine``), the number FSLeyes or ITK-SNAP shows, not the RAS array's.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["overlay_figure", "default_label_colors", "choose_slices", "file_indices", "DEFAULT_COLORS",
           "TUMOR_NAMES"]

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
_LINE = 1.0
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


#: A class counts as shown in a slice when the slice holds at least this fraction of the
#: class's voxels in its best slice along that axis.
_SHOWN = 0.1


def _best_slice(lab: np.ndarray, values: Sequence[int], axis: int, centre: int) -> int:
    """The slice along ``axis`` showing the most of ``values`` (each class counted when the
    slice holds >= 10 % of its peak slice), nearest to ``centre`` among equals."""
    other = tuple(a for a in range(lab.ndim) if a != axis)
    score = np.zeros(lab.shape[axis])
    for v in values:
        per = np.count_nonzero(lab == v, axis=other).astype(np.float64)
        if per.max() > 0:
            score += per >= _SHOWN * per.max()
    if not score.any():
        return centre
    best = np.flatnonzero(score == score.max())
    return int(best[np.argmin(np.abs(best - centre))])


def choose_slices(labels: np.ndarray, label_names: Mapping[int, str] | None = None,
                  image: np.ndarray | None = None,
                  truth: np.ndarray | None = None) -> tuple[int, int, int]:
    """Voxel indices ``(i, j, k)`` (RAS array) of the sagittal, coronal and axial slices to show.

    With a tumor (names in :data:`TUMOR_NAMES`) in ``labels``, else in ``truth``: the slices
    through the whole tumor's centre of mass, each moved to the nearest slice that shows every
    tumor class present (so the axial panel does not miss a small enhancing rim). Without one:
    the centre of mass of the non-zero ``labels`` (else ``truth``, else the non-zero ``image``,
    else the volume's centre) for the coronal and axial slices, and for the sagittal one the
    centre of mass of the hemisphere on the low side of axis 0 (the patient's left in RAS), so
    it does not show the midline.

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
        present = [v for v, n in zip(tumor_values, _label_counts(lab, tumor_values)) if n > 0]
        if present:
            c = _com(np.isin(lab, present))
            return tuple(_best_slice(lab, present, axis, c[axis]) for axis in range(3))  # type: ignore
    for mask in (
        labels > 0,
        None if truth is None else truth > 0,
        None if image is None else np.abs(np.nan_to_num(image)) > 0,
    ):
        if mask is not None:
            c = _com(mask)
            if c is not None:
                half = mask.copy()
                half[c[0]:] = False
                side = _com(half)
                i = side[0] if side is not None else c[0]
                return (i, c[1], c[2])
    return tuple(s // 2 for s in labels.shape)  # type: ignore[return-value]


def file_indices(ijk: Sequence[int], shape: Sequence[int], file_affine: np.ndarray | None):
    """Map RAS-array voxel indices ``(i, j, k)`` to the input file's own voxel indices.

    Returns, for each RAS axis, ``(file axis, index in the file)``: the numbers a viewer such as
    FSLeyes or ITK-SNAP shows for that slice. Without ``file_affine`` the file is the RAS array.
    """
    if file_affine is None:
        return [(a, int(v)) for a, v in enumerate(ijk)]
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(file_affine, dtype=np.float64))
    out = []
    for a, v in enumerate(ijk):
        f = int(np.flatnonzero(ornt[:, 0] == a)[0])
        out.append((f, int(v) if ornt[f, 1] > 0 else int(shape[a]) - 1 - int(v)))
    return out


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


def _atomic_savefig(fig: Figure, path: Path, dpi: int, metadata: Mapping[str, str] | None = None) -> None:
    from .tables import atomic_open

    with atomic_open(path, "wb") as fh:
        FigureCanvasAgg(fig)
        fig.savefig(fh, format="png", dpi=dpi, facecolor=fig.get_facecolor(), metadata=dict(metadata or {}))


def overlay_figure(image: np.ndarray, labels: np.ndarray, out_path: str | os.PathLike, *,
                   spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   truth: np.ndarray | None = None,
                   label_names: Mapping[int, str] | None = None,
                   label_colors: Mapping[int, object] | None = None,
                   title: str = "",
                   slices: Sequence[int] | None = None,
                   file_affine: np.ndarray | None = None,
                   source_name: str = "",
                   dpi: int = 100) -> Path:
    """Write a PNG with axial, coronal and sagittal slices of ``image`` and the labels over it.

    Predicted labels are drawn as semi-transparent colour fill, the ground truth (if given) as
    contour lines of the same colours with a dark outline; the legend names the classes shown
    in the panels only, each with its fill and/or line. The PNG's text chunks ``Legend`` and
    ``Slices`` repeat the legend entries and the slice numbers. Written atomically: the PNG goes
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
        Voxel indices ``(i, j, k)`` (of the RAS arrays) of the sagittal, coronal and axial
        slices. Default :func:`choose_slices` (through the tumor, else the brain's centre with
        the sagittal slice off the midline).
    file_affine : ndarray of shape (4, 4), optional
        Affine of the file the arrays were reoriented from (RAS): the panels are numbered with
        that file's voxel indices (axis x, y or z of the file), as viewers show them.
    source_name : str
        The file's name, for the note on the slice numbers.
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

    fidx = file_indices(ijk, image.shape, file_affine)
    fig = Figure(figsize=(12, 4.8), facecolor=_BG)
    axes = fig.subplots(1, 3)
    # title on top, panel names under the panels, legend and notes at the bottom: nothing overlaps
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9 if title else 0.97, bottom=0.19, wspace=0.04)
    filled: set[int] = set()
    contoured: set[int] = set()
    outline = [patheffects.Stroke(linewidth=_LINE + 1.2, foreground="black"), patheffects.Normal()]
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
            filled.update(int(v) for v in np.unique(lab_idx) if v and lut[v, 3] > 0)
        if truth is not None:
            tr2 = _to_screen(truth[index], flip)
            xs = (np.arange(cols) + 0.5) * pw
            ys = (np.arange(rows) + 0.5) * ph
            for value in np.unique(tr2):
                value = int(value)
                if value == 0 or value not in colors:
                    continue
                region = (tr2 == value).astype(np.float32)
                if region.shape[0] < 2 or region.shape[1] < 2:
                    continue
                cs = ax.contour(xs, ys, region, levels=[0.5], colors=[colors[value]], linewidths=_LINE)
                # a dark outline under each line: a near-white WM contour stays visible on a
                # near-white WM fill, a cyan one on cyan
                cs.set(path_effects=outline)
                contoured.add(value)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_axis_off()
        ras_axis = {"axial": 2, "coronal": 1, "sagittal": 0}[name]
        f_axis, f_index = fidx[ras_axis]
        ax.text(0.5, -0.015, f"{name}  {'xyz'[f_axis]} = {f_index}", color=_FG, fontsize=10,
                ha="center", va="top", transform=ax.transAxes)
        left, right, top, bottom = letters
        style = dict(color=_FG, fontsize=9, fontweight="bold", transform=ax.transAxes)
        ax.text(0.01, 0.5, left, ha="left", va="center", **style)
        ax.text(0.99, 0.5, right, ha="right", va="center", **style)
        ax.text(0.5, 0.99, top, ha="center", va="top", **style)
        ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)

    shown = sorted((filled | contoured) & set(colors))
    entries = [str(label_names.get(v, v)) for v in shown]
    handles: list = []
    for v, text in zip(shown, entries):
        fill = Patch(facecolor=to_rgba(colors[v], 0.8), edgecolor="none")
        line = Line2D([], [], color=colors[v], linewidth=_LINE, path_effects=outline)
        parts = ([fill] if v in filled else []) + ([line] if v in contoured else [])
        handles.append(tuple(parts) if len(parts) > 1 else parts[0])
    if handles:
        fig.legend(handles=handles, labels=entries, loc="lower center", ncol=len(handles), frameon=False,
                   labelcolor=_FG, fontsize=9, bbox_to_anchor=(0.5, 0.035),
                   handler_map={tuple: HandlerTuple(ndivide=None, pad=0.3)}, handlelength=3.0)
    notes = []
    if truth is not None and handles:
        notes.append("fill: prediction, line: ground truth")
    notes.append(f"slice numbers: voxel indices of {source_name or 'the input file'}"
                 if file_affine is not None else "slice numbers: voxel indices of the array")
    fig.text(0.5, 0.008, "; ".join(notes), color="#bbbbbb", fontsize=8, ha="center", va="bottom")
    if title:
        fig.suptitle(title, color=_FG, fontsize=12, y=0.985, va="top")
    metadata = {
        "Title": title or out_path.stem,
        "Legend": ", ".join(entries),
        "Slices": ", ".join(f"{n} {'xyz'[fidx[a][0]]}={fidx[a][1]}"
                            for n, a in (("axial", 2), ("coronal", 1), ("sagittal", 0))),
    }
    _atomic_savefig(fig, out_path, dpi, metadata)
    return out_path
