"""The bundled MNI152 head template (segment.atlas)."""
from __future__ import annotations

import numpy as np

from segment.atlas import DATA_DIR, load_template


def test_template_grid_and_brain():
    tpl = load_template()
    assert tpl.head.shape == tpl.brain_mask.shape == (91, 109, 91)
    np.testing.assert_allclose(tpl.head.spacing, (2.0, 2.0, 2.0))
    # RAS, MNI coordinates: the origin (anterior commissure) is inside the brain
    ijk = np.rint(np.linalg.inv(tpl.brain_mask.affine) @ [0.0, 0.0, 0.0, 1.0])[:3].astype(int)
    assert tpl.brain_mask.data[tuple(ijk)]
    assert np.all(np.diag(tpl.head.affine)[:3] > 0)
    # 1 mm source: 2075 mL
    assert 2000 < tpl.brain_volume_ml < 2200
    # the head is larger than the brain and brighter than air around it
    head = tpl.head.data > 0.2 * np.percentile(tpl.head.data, 99)
    assert head.sum() > 1.3 * tpl.brain_mask.data.sum()
    assert tpl.brain_fraction.data.min() >= 0 and tpl.brain_fraction.data.max() <= 1
    assert (tpl.brain.data[~tpl.brain_mask.data] <= tpl.head.data[~tpl.brain_mask.data]).all()


def test_notice_ships_with_the_data():
    text = (DATA_DIR / "NOTICE").read_text()
    assert "Louis Collins" in text and "McConnell" in text
    assert load_template() is load_template()  # cached
