"""Bundled templates and their registration to a subject.

:func:`load_template` gives the FSL MNI152 head with its brain mask (2 mm, RAS);
:func:`segment.io.register.register_template` puts it where the subject's head is and warps
template-space arrays (masks, tissue priors) onto the subject's grid.
"""
from .template import DATA_DIR, Template, load_template, load_tissue_priors

__all__ = ["DATA_DIR", "Template", "load_template", "load_tissue_priors"]
