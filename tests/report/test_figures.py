"""Tests of segment.report.figures: overlay PNGs."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from segment.report import figures
from segment.report.figures import choose_slices, default_label_colors, overlay_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TISSUE = {1: "CSF", 2: "GM", 3: "WM"}
TUMOR = {1: "NCR", 2: "ED", 3: "ET"}


def _case(shape=(48, 56, 40)):
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [s / 2 for s in shape]
    rr = np.sqrt(((x - c[0]) / (0.4 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2
                 + ((z - c[2]) / (0.4 * shape[2])) ** 2)
    rng = np.random.default_rng(0)
    image = np.where(rr < 1, 300 + 600 * (rr < 0.8), 0).astype(np.float32)
    image += (rng.normal(0, 20, shape) * (rr < 1)).astype(np.float32)
    tissue = np.zeros(shape, np.uint8)
    tissue[rr < 1] = 1
    tissue[rr < 0.9] = 2
    tissue[rr < 0.7] = 3
    return image, tissue


def _check_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    pix = imread(path)
    assert pix.ndim == 3 and pix.shape[0] > 200 and pix.shape[1] > 600
    assert pix[..., :3].std() > 0.02  # not a blank canvas
    return pix


def _only(folder):
    return sorted(p.name for p in folder.iterdir())


def test_overlay_with_truth(tmp_path):
    image, tissue = _case()
    out = overlay_figure(image, tissue, tmp_path / "overlay.png", spacing=(1.0, 1.2, 2.0),
                         truth=np.roll(tissue, 2, axis=0), label_names=TISSUE, title="case 1")
    assert out == tmp_path / "overlay.png"
    _check_png(out)
    assert _only(tmp_path) == ["overlay.png"]  # atomic: no temporary file left


def test_overlay_without_truth_and_default_names(tmp_path):
    image, tissue = _case()
    _check_png(overlay_figure(image, tissue, tmp_path / "a.png", label_names=TISSUE))
    _check_png(overlay_figure(image, tissue, tmp_path / "b.png"))  # names from the values found
    assert _only(tmp_path) == ["a.png", "b.png"]


def test_overlay_empty_labels_and_blank_image(tmp_path):
    image, tissue = _case()
    empty = np.zeros_like(tissue)
    _check_png(overlay_figure(image, empty, tmp_path / "e.png", label_names=TUMOR, truth=empty))
    out = overlay_figure(np.zeros(tissue.shape, np.float32), empty, tmp_path / "z.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_overlay_tumor_custom_colors_slices_and_nan(tmp_path):
    image, _ = _case()
    image[0, 0, 0] = np.nan
    tumor = np.zeros(image.shape, np.uint8)
    tumor[20:30, 25:35, 15:25] = 2
    tumor[23:27, 28:32, 18:22] = 3
    out = overlay_figure(image, tumor, tmp_path / "sub" / "t.png", truth=tumor, label_names=TUMOR,
                         label_colors={3: (0.0, 0.0, 1.0)}, slices=(25, 30, 1000))
    _check_png(out)


def test_overlay_replaces_existing_file_atomically(tmp_path, monkeypatch):
    image, tissue = _case()
    path = tmp_path / "o.png"
    path.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("no space")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="no space"):
        overlay_figure(image, tissue, path, label_names=TISSUE)
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and _only(tmp_path) == ["o.png"]
    overlay_figure(image, tissue, path, label_names=TISSUE)
    assert path.read_bytes()[:8] == PNG_MAGIC and _only(tmp_path) == ["o.png"]


def test_overlay_shape_errors(tmp_path):
    image, tissue = _case()
    with pytest.raises(ValueError, match=r"\(48, 56, 40\)"):
        overlay_figure(image, tissue[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="truth shape"):
        overlay_figure(image, tissue, tmp_path / "x.png", truth=tissue[:, :-1])
    with pytest.raises(ValueError, match="3-D"):
        overlay_figure(image[..., 0], tissue[..., 0], tmp_path / "x.png")
    assert _only(tmp_path) == []


def test_orientation_radiological():
    # A voxel at the patient's right (high axis 0), anterior (high axis 1), superior (high axis 2).
    a = np.zeros((5, 6, 7), np.uint8)
    a[4, 5, 6] = 1
    views = {name: (idx, flip) for name, idx, _, flip, _ in figures._views(a.shape, (1, 1, 1), (4, 5, 6))}
    # imshow(origin="lower"): row -1 is the top of the panel, column 0 its left edge.
    ax = figures._to_screen(a[views["axial"][0]], views["axial"][1])
    assert ax[-1, 0] == 1  # axial: anterior up, patient's right on the left
    co = figures._to_screen(a[views["coronal"][0]], views["coronal"][1])
    assert co[-1, 0] == 1  # coronal: superior up, right on the left
    sa = figures._to_screen(a[views["sagittal"][0]], views["sagittal"][1])
    assert sa[-1, 0] == 1  # sagittal: superior up, anterior on the left


def test_choose_slices():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[10:16, 12:18, 4:10] = 2  # ED: centre (12.5, 14.5, 6.5)
    assert choose_slices(lab, TUMOR) == (12, 14, 6)  # round half to even
    # tissue names: the brain's centre for coronal and axial, one hemisphere's for sagittal
    t = np.zeros((20, 20, 20), np.uint8)
    t[4:16, 4:8, 4:8] = 1  # centre (9.5, 5.5, 5.5); left half (axis 0 < 10) centre 6.5
    assert choose_slices(t, TISSUE) == (6, 6, 6)
    # empty labels: truth, then the image, then the centre
    empty = np.zeros_like(t)
    assert choose_slices(empty, TUMOR, truth=lab) == (12, 14, 6)
    img = np.zeros((20, 20, 20))
    img[0:3, 0:3, 0:3] = 1
    assert choose_slices(empty, TUMOR, image=img) == (0, 1, 1)
    assert choose_slices(empty, TUMOR) == (10, 10, 10)


def test_choose_slices_show_every_tumor_class():
    """A small enhancing region off the whole tumor's centre: each panel moves to the nearest
    slice that shows it as well as the edema."""
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[10:30, 10:30, 10:30] = 2  # edema, centre 19.5
    lab[24:28, 24:28, 24:28] = 3  # enhancing, away from the centre on every axis
    i, j, k = choose_slices(lab, TUMOR)
    assert 24 <= i < 28 and 24 <= j < 28 and 24 <= k < 28
    assert (lab[:, :, k] == 3).any() and (lab[:, :, k] == 2).any()
    # nearest to the centre among slices showing both: the enhancing region's first slice
    assert k == 24


def test_sagittal_is_off_the_midline_without_tumor():
    image, tissue = _case((60, 56, 40))
    i, j, k = choose_slices(tissue, TISSUE, image)
    assert abs(i - 30) >= 6  # a symmetric brain's midline is slice 30
    assert (j, k) == (28, 20)


def test_file_indices_follow_the_file_orientation():
    las = np.diag([-2.0, 2.0, 2.0, 1.0])  # axis 0 flipped (L), as FSL's MNI152
    assert figures.file_indices((3, 4, 5), (10, 12, 14), las) == [(0, 6), (1, 4), (2, 5)]
    # a coronal acquisition: file axes (x: R->L, y: S->I, z: P->A) -> RAS axes 0, 2, 1
    cor = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
    out = figures.file_indices((3, 4, 5), (10, 12, 14), cor)
    assert out == [(0, 6), (2, 4), (1, 8)]
    assert figures.file_indices((3, 4, 5), (10, 12, 14), None) == [(0, 3), (1, 4), (2, 5)]


def _png_text(path):
    from PIL import Image

    with Image.open(path) as im:
        return dict(im.text)


def test_legend_lists_only_the_classes_shown_tissue_only(tmp_path):
    image, tissue = _case()
    names = {1: "CSF", 2: "GM", 3: "WM", 5: "NCR", 6: "ED", 7: "ET"}  # the pipeline's overlay coding
    out = overlay_figure(image, tissue, tmp_path / "t.png", label_names=names, truth=tissue)
    assert _png_text(out)["Legend"] == "CSF, GM, WM"  # no tumor entries on a tissue-only run
    no_csf = np.where(tissue == 1, 2, tissue).astype(np.uint8)
    out = overlay_figure(image, no_csf, tmp_path / "u.png", label_names=names)
    assert _png_text(out)["Legend"] == "GM, WM"


def test_legend_of_a_tumor_case_and_truth_only_classes(tmp_path):
    image, tissue = _case()
    names = {1: "CSF", 2: "GM", 3: "WM", 5: "NCR", 6: "ED", 7: "ET"}
    lab = tissue.copy()
    lab[18:30, 22:34, 14:26] = 6
    lab[21:27, 25:31, 17:23] = 7
    truth = lab.copy()
    truth[23:25, 27:29, 19:21] = 5  # necrosis only in the truth: drawn as a contour, listed
    text = _png_text(overlay_figure(image, lab, tmp_path / "t.png", label_names=names, truth=truth))
    assert text["Legend"] == "CSF, GM, WM, NCR, ED, ET"
    text = _png_text(overlay_figure(image, lab, tmp_path / "p.png", label_names=names))
    assert text["Legend"] == "CSF, GM, WM, ED, ET"
    # the slices go through the tumor and are numbered in the file's indices
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    text = _png_text(overlay_figure(image, lab, tmp_path / "f.png", label_names=names, file_affine=las))
    i, j, k = choose_slices(lab, names)
    assert text["Slices"] == f"axial z={k}, coronal y={j}, sagittal x={image.shape[0] - 1 - i}"


def test_contours_have_a_dark_outline_on_a_light_fill(tmp_path):
    """A near-white WM contour over a near-white WM fill stays visible: its pixels include
    dark outline pixels that the fill alone does not have."""
    image = np.full((40, 40, 20), 1000.0, np.float32)
    lab = np.zeros(image.shape, np.uint8)
    lab[5:35, 5:35, :] = 3
    truth = np.zeros_like(lab)
    truth[12:28, 12:28, :] = 3  # a square contour inside the filled square
    a = imread(overlay_figure(image, lab, tmp_path / "a.png", label_names=TISSUE, slices=(20, 20, 10)))
    b = imread(overlay_figure(image, lab, tmp_path / "b.png", label_names=TISSUE, truth=truth, slices=(20, 20, 10)))
    h, w = a.shape[:2]
    panel = (slice(int(0.3 * h), int(0.7 * h)), slice(int(0.05 * w), int(0.3 * w)))  # inside the axial panel
    dark_a = (a[panel][..., :3].mean(axis=2) < 0.3).sum()
    dark_b = (b[panel][..., :3].mean(axis=2) < 0.3).sum()
    assert dark_b > dark_a + 50


def test_default_colors():
    c = default_label_colors({1: "NCR", 2: "ED", 3: "ET", 7: "other", 8: "more"})
    assert c[1] != c[2] != c[3] and c[7] != c[8]
    t = default_label_colors(TISSUE)
    assert len(set(t.values())) == 3


def test_no_pyplot_on_a_brats_sized_volume(tmp_path):
    code = f"""
import sys, time
import numpy as np
from segment.report.figures import overlay_figure
shape = (240, 240, 155)
x, y, z = np.ogrid[:240, :240, :155]
r = np.sqrt((x - 120) ** 2 + (y - 120) ** 2 + (z - 77) ** 2)
img = np.where(r < 70, 500.0, 0.0).astype(np.float32)
lab = np.zeros(shape, np.uint8); lab[r < 30] = 2; lab[r < 15] = 3; lab[r < 8] = 1
overlay_figure(img, lab, r"{tmp_path}/warm.png", label_names={{1: "NCR", 2: "ED", 3: "ET"}})
overlay_figure(img, lab, r"{tmp_path}/o.png", truth=lab, label_names={{1: "NCR", 2: "ED", 3: "ET"}})
assert "matplotlib.pyplot" not in sys.modules
"""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("R", "A", "S"), ("L", "P", "S"), ("A", "S", "L"), ("S", "R", "P")])
def test_file_indices_agree_with_world_coordinates(codes):
    """The file index of a RAS-array voxel is the voxel of the file at the same world point."""
    import nibabel.orientations as nio

    from segment.io.nifti import reorient_to_ras
    from segment.types import Volume

    shape = (7, 9, 11)
    ornt = nio.axcodes2ornt(codes)
    aff = np.eye(4)
    for f, (axis, flip) in enumerate(ornt):
        aff[:3, f] = 0
        aff[int(axis), f] = flip * (1.0 + 0.5 * f)
    aff[:3, 3] = [5.0, -3.0, 2.0]
    vol = Volume(np.zeros(shape, np.float32), aff)
    ras = reorient_to_ras(vol)
    for ijk in [(0, 0, 0), (2, 3, 4), tuple(s - 1 for s in ras.shape)]:
        world = ras.affine @ np.array([*ijk, 1.0])
        expect = np.rint(np.linalg.inv(aff) @ world)[:3].astype(int)
        got = figures.file_indices(ijk, ras.shape, aff)
        for a, (f, idx) in enumerate(got):
            assert idx == expect[f], (codes, ijk, a)
