"""The YAML configuration, validated into typed, frozen models (pydantic).

Every option of ``segment run`` lives here. An unknown key, a wrong type or an impossible value
is one :class:`~segment.errors.ConfigError` naming the key, the value and what is allowed.

Example ``config.yaml``::

    seed: 0
    preprocess:
      skullstrip: auto        # auto | always | never
      bias_correction: false  # N4 before normalisation
    mixture:
      n_components: 3
    postprocess:
      min_island_mm3: 30
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .types import MODALITIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class N4Config(_Strict):
    """N4 bias-field correction settings."""

    shrink: int = Field(
        6, ge=1, le=16, description="shrink factor for estimating the field (6: ~1 s on a 1 mm brain)"
    )
    iterations: tuple[int, ...] = Field(
        (50,), min_length=1, max_length=6,
        description="iterations per fitting level; one level keeps the field stiff (one cubic B-spline span "
        "over the brain), so anatomy is not taken for bias (docs/validation_degraded.md)",
    )
    convergence: float = Field(1e-4, gt=0)
    method: Literal["native", "simpleitk"] = Field(
        "native", description="native: our N4 (numpy, ~0.2 s a 1 mm series); simpleitk: SimpleITK's filter (~0.7 s)"
    )


class SkullstripConfig(_Strict):
    """Brain extraction of heads with skull: the registered head template refined by the image,
    and the quality flags of the mask (``brain_mask`` step's ``info["flags"]``)."""

    template: bool = Field(
        True, description="register the bundled MNI152 head (affine) and use its brain as the prior; "
        "false: the image-only method"
    )
    band_mm: float = Field(
        3.0, ge=0.5, le=20, description="the image may add at most this much (mm) outside the warped "
        "template brain's edge"
    )
    band_inner_mm: float = Field(
        6.0, ge=0.5, le=20, description="the image may take away at most this much (mm) inside the warped "
        "template brain's edge (smaller or atrophied brains); deeper, the template brain is kept"
    )
    register_brain_only: bool = Field(
        True, description="also register the template's brain to brain-only inputs (the transform is kept "
        "for tissue priors; the mask stays the non-zero region)"
    )
    min_volume_ml: float = Field(800.0, ge=0, description="flag brain_volume_implausible below this (mL)")
    max_volume_ml: float = Field(
        2200.0, gt=0, description="flag brain_volume_implausible above this (mL); a zero-surrounded image larger "
        "than this is a head whose air was zeroed (skull-stripped, flag zero_background_head), not brain-only"
    )
    min_template_dice: float = Field(
        0.85, ge=0, le=1, description="flag mask_template_disagree when the mask's Dice with the warped "
        "template brain is below this"
    )
    poor_metric: float = Field(
        -0.25, le=0, description="flag registration_poor when the final Mattes mutual information metric "
        "(negative, lower is better) is above this; the mask then falls back to the image-only method"
    )


class PreprocessConfig(_Strict):
    skullstrip: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: skull-strip unless the images are already brain-only (zero background); "
        "never: the brain is the non-zero region",
    )
    skullstrip_options: SkullstripConfig = SkullstripConfig()
    saturation: Literal["restore", "off"] = Field(
        "restore", description="restore: a modality whose brain intensities pile up at their maximum (clipped, "
        "saturated) gets the values above the ceiling back from a censored fit of the clipped class (on its atlas "
        "core; a censored 3-class mixture without registration), before N4; not when the ceiling is under that "
        "class's median (QC flag either way); off: as read"
    )
    bias_correction: bool = Field(True, description="run N4 on every modality before normalisation")
    n4: N4Config = N4Config()
    lower_percentile: float = Field(
        0.0, ge=0, lt=50, description="clip below this percentile inside the brain (0: no clipping; "
        "clipping piles the dark tail into a spike that distorts the CSF class)"
    )
    upper_percentile: float = Field(99.9, gt=50, le=100, description="clip bright outliers (vessels, fat)")


class MixtureConfig(_Strict):
    n_components: int = Field(3, ge=3, le=12, description="mixture components for tissue (>= 3)")
    covariance_type: Literal["full", "diag", "tied", "spherical"] = "full"
    modalities: tuple[str, ...] | None = Field(
        None, description="features for the tissue mixture; default: every modality present"
    )
    max_iter: int = Field(200, ge=1)
    tol: float = Field(1e-4, gt=0)
    n_init: int = Field(1, ge=1)
    reg_covar: float = Field(1e-6, ge=0)
    dtype: Literal["float64", "float32"] = "float64"
    partial_volume: bool = Field(
        True, description="model voxels mixing two tissues (CSF/GM, GM/WM) and label by the larger fraction"
    )
    pv_max_voxel_mm: float = Field(
        2.5, gt=0, le=20,
        description="the partial-volume model is used only when the voxel's largest side is at most this "
        "(2.5 mm, the mean thickness of the cortex): a thicker voxel often holds CSF, GM and WM at once, which "
        "a model of two tissues per voxel cannot explain, and the class mixture labels it instead",
    )
    fit_margin_mm: float = Field(
        3.0, ge=0, le=20,
        description="when the brain mask comes from skull stripping, fit the mixture on the mask eroded "
        "by this much (and at least one voxel), so stripping errors at its edge do not pull the classes; "
        "every brain voxel is labelled",
    )
    pv_noise: Literal["auto", "shrunk", "shared", "per_class"] = Field(
        "auto", description="partial-volume model's noise: shared (one covariance for every class and mix, "
        "Shattuck et al. 2001: a class cannot widen over the mixed voxels beside it), per_class (one per pure "
        "class), shrunk (per class, with an inverse-Wishart prior centred on the shared one: pv_noise_prior), "
        "auto (per_class when GM and WM are fewer than 7 noise SDs apart, noise measured from neighbouring "
        "voxels inside the atlas's white matter; shrunk otherwise)"
    )
    pv_noise_prior: float = Field(
        0.33, gt=0, le=10, description="shrunk noise: the shared covariance's weight in pseudo-voxels, as a "
        "fraction of the fitted voxels (0.33: about one class's worth)"
    )
    prior_weight: float = Field(
        0.3, ge=0, le=1, description="weight of the registered ICBM 2009a tissue priors in the mixture: they "
        "name the components, weight the E-step (mixing weight alpha_c * ((1 - w) + 3 w prior)) and the class "
        "probabilities; 0: intensities alone (no priors)"
    )
    max_samples: int | None = Field(
        None, ge=1000, description="several features: fit on a random subset of at most this many voxels (all "
        "are labelled); one feature is fitted on a 2048-bin histogram",
    )

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        bad = [m for m in v if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modalities {bad}; allowed: {list(MODALITIES)}")
        if not v:
            raise ValueError("must name at least one modality, or be omitted")
        return v


class PostprocessConfig(_Strict):
    fill_holes: bool = Field(True, description="fill holes of the brain mask")
    mrf_beta: float = Field(
        0.5, ge=0, le=10,
        description="weight of the Markov random field that favours neighbours of the same class "
        "(spatial regularisation of the tissue probabilities, as FSL FAST / ANTs Atropos); 0 disables",
    )
    mrf_iterations: int = Field(5, ge=1, le=50, description="mean-field iterations of the MRF")
    min_island_mm3: float = Field(
        20.0, ge=0, description="label islands smaller than this (mm^3) take their neighbours' label; 0 disables"
    )


class TumorConfig(_Strict):
    """Tumor segmentation (NCR / ED / ET) settings."""

    enabled: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: run when the modalities present allow it (see segment.labeling.tumor)"
    )
    coding: Literal["brats2023", "brats2021"] = Field(
        "brats2023", description="labels written to tumor.nii.gz: brats2023 = 1 NCR, 2 ED, 3 ET; brats2021 = 1/2/4"
    )
    # detection: does a tumor exist? (robust z units of the normalised FLAIR; sizes in mm / mL)
    smooth_mm: float = Field(1.0, ge=0, le=5, description="Gaussian sigma (mm) of the FLAIR used for detection and WT")
    detect_smooth_mm: float = Field(
        2.0, ge=0, le=10, description="Gaussian sigma (mm, at least 0.75 voxel) of the FLAIR used to find seeds"
    )
    seed_z: float = Field(
        3.0, ge=1, le=10, description="smoothed FLAIR above this robust z is a tumor seed (healthy brain stays below)"
    )
    seed_sd: float = Field(
        5.0, ge=1, le=20, description="... or this many of the smoothed FLAIR's own robust SDs above its median, "
        "whichever is lower (healthy brain stays below both; noise widens the raw spread that robust z divides by, "
        "not the smoothed image's, so a noisy scan's lesion still passes; a large lesion widens the smoothed "
        "spread, not the raw z)"
    )
    open_mm: float = Field(2.0, ge=0, le=10, description="opening radius (mm) removing thin bright rims from the seeds")
    min_tumor_ml: float = Field(1.0, ge=0, le=100, description="smallest lesion (mL of opened seeds) called a tumor")
    min_lesion_t2_z: float = Field(
        0.0, ge=-5, le=10, description="with T2: a lesion's median T2 robust z must exceed this (edema is T2-bright)"
    )
    secondary_fraction: float = Field(
        0.2, ge=0, le=1, description="lesions besides the largest are kept if this large relative to it, or enhancing"
    )
    surface_mm: float = Field(5.0, ge=0, le=20, description="depth (mm) of the brain-surface shell")
    max_surface_fraction: float = Field(
        0.5, ge=0, le=1, description="a seed lesion with more than this fraction in the surface shell is rejected"
    )
    # whole tumor
    wt_fraction: float = Field(
        0.45, gt=0, lt=1, description="WT boundary at this fraction of the way from healthy to lesion FLAIR level"
    )
    wt_floor_z: float = Field(1.5, ge=0, le=10, description="WT boundary never below this FLAIR robust z")
    grow_mm: float = Field(60.0, ge=0, le=100, description="tumor classes exist at most this far (mm) from a seed lesion")
    csf_flair_z: float = Field(
        -1.0, ge=-10, le=5, description="filled holes darker than this on FLAIR are CSF, never tumor"
    )
    min_island_mm3: float = Field(100.0, ge=0, description="WT islands smaller than this (mm^3) are removed")
    edge_mm: float = Field(
        1.0, ge=0, le=5, description="the layer this deep (mm) around the whole tumor that is FLAIR-brighter than "
        "healthy grey matter (mean + 1 SD) is edema: the fading outline of the edema, which manual outlines include "
        "(0 disables; voxels coarser than this have the fade inside them)"
    )
    core_edge: bool = Field(
        True, description="with T1c: the same layer (edge_mm) at the outlines of the enhancing tumor and the core "
        "inside the whole tumor: edema voxels next to ET with T1c above the edema's mean + 1 SD are ET, next to "
        "the core with T1c or FLAIR below its mean - 1 SD are core (raters outline each nested region outside)"
    )
    # enhancing tumor and necrosis (need T1c)
    et_smooth_mm: float = Field(0.0, ge=0, le=5, description="Gaussian sigma (mm) of the enhancement map")
    et_margin_mm: float = Field(3.0, ge=0, le=30, description="ET is searched in WT grown by this margin (mm)")
    et_ref_shell_mm: float = Field(
        5.0, ge=0, le=30, description="with T1: normal brain this far around the lesion joins the non-enhancing reference"
    )
    et_min_sd: float = Field(
        3.0, gt=0, le=20, description="enhancement candidates exceed the lesion's non-enhancing level by this many SDs"
    )
    et_min_delta: float = Field(
        0.8, ge=0, le=10, description="... and by at least this much (robust z units of T1c)"
    )
    et_floor_sd: float = Field(2.0, ge=0, le=20, description="ET boundary never below this many SDs above that level")
    min_et_mm3: float = Field(50.0, ge=0, description="ET islands (and total candidates) smaller than this are dropped")
    core_close_mm: float = Field(5.0, ge=0, le=20, description="closing radius (mm) of ET before filling the core (NCR)")
    core_cap_mm: float = Field(
        4.0, ge=0, le=20, description="outside the brain this close (mm) to ET closes a rim open at the surface"
    )
    core_hull: bool = Field(
        True, description="fluid-like voxels inside the convex hull of an enhancing rim (not a section of a "
        "larger CSF space) are core (NCR): a rim broken by thick slices, noise or the brain surface still "
        "holds its cyst"
    )
    core_hull_edema: bool = Field(
        True, description="with core_hull: edema-labelled regions inside that hull that are darker on FLAIR than "
        "the edema (median under its mean by core_hull_edema_sd of its SDs) are core: the tumor's non-enhancing "
        "solid part, core in the BraTS protocol (BRATS 2013 pat0006 TC 0.813 -> 0.88)"
    )
    core_hull_edema_sd: float = Field(
        0.5, ge=0, description="how much darker on FLAIR than the edema (its SDs under its mean, the region's "
        "median) a region amid the enhancing tumor is to be non-enhancing core (pat0006's: 0.75 under; the edema "
        "a curved rim's hull takes in, pat0005 and the phantoms: 0.38 under or brighter)"
    )
    # the joint healthy + tumor mixture
    alpha0: float = Field(0.5, gt=0, lt=1, description="initial latent tumor prior inside the reach of a lesion")
    mrf_beta: float = Field(
        0.3, ge=0, le=5, description="MRF weight per neighbour (x 1/mm, 6-neighbourhood mean field) of the tumor mixture"
    )
    et_gate_sd: float = Field(
        1.5, ge=0, le=10, description="enhancing class: T1c (T1c - T1) this many healthy SDs above GM and WM"
    )
    et_touch_mm: float = Field(
        2.0, ge=0, le=20, description="an enhancing island is tumor only if this close (mm) to the edema/core body"
    )
    healthy_margin_mm: float = Field(
        40.0, ge=0, le=100, description="the healthy classes are fitted on the brain farther than this (mm) from the "
        "seed lesions (at most grow_mm; the whole brain when that is under a fifth of it)"
    )
    et_grow_mm: float = Field(
        50.0, ge=0, le=100, description="the enhancing class exists at most this far (mm) from a seed lesion "
        "(at most grow_mm)"
    )
    healthy_enhancing: bool = Field(
        True, description="with T1c: a healthy class for the enhancing structures of the healthy brain (vessels, "
        "choroid plexus, dura), fitted away from the tumor, so the enhancing tumor class is not drawn to them"
    )
    et_body_fraction: float = Field(
        0.33, ge=0, le=1, description="an enhancing island, or a component of the core, is tumor only if this share of "
        "the brain around it is tumor body"
    )
    ed_gate_sd: float = Field(1.0, ge=-2, le=10, description="edema class: FLAIR this many healthy GM SDs above GM")
    local_mm: float = Field(
        10.0, ge=0, le=50, description="sigma (mm) of the local proportions of the tumor classes (0: global weights only)"
    )
    local_weight: float = Field(
        0.5, ge=0, le=1, description="share of the local (smoothed posterior) proportions in each tumor class's prior"
    )
    csf_edema_mix: bool = Field(
        True, description="model the partial-volume voxels between healthy CSF and edema as a class of their own"
    )
    wm_edema_mix: bool = Field(
        True, description="model the partial-volume voxels between healthy WM and edema as a class of their own"
    )
    em_iterations: int = Field(
        6, ge=1, le=100, description="EM iterations per round of the tumor mixture (2 rounds: the enclosed core between)"
    )


class OutputConfig(_Strict):
    overlay: bool = True
    probabilities: bool = Field(False, description="also write float32 class probability maps")
    bias_corrected: bool = Field(
        False, description="also write each modality after N4 (<modality>_biascorr.nii.gz, float32, on the "
        "reference grid), as FSL FAST -B; needs preprocess.bias_correction: true"
    )


class QCConfig(_Strict):
    """Thresholds of the quality flags shown in a batch's report and review page."""

    brain_volume_ml: tuple[float, float] = Field(
        (800.0, 2100.0), description="flag a brain mask whose volume (mL) lies outside [min, max]"
    )
    min_class_fraction: float = Field(
        0.005, ge=0, lt=1, description="flag a tissue class covering less than this fraction of the brain"
    )
    tumor_edge_fraction: float = Field(
        0.01, ge=0, le=1, description="flag a tumor with more than this fraction of its voxels on the brain mask's border"
    )
    min_dice: float = Field(
        0.5, ge=0, le=1, description="flag a case whose Dice for any class or region is below this (with ground truth)"
    )
    min_tissue_fraction: float = Field(
        0.05, ge=0, lt=1, description="flag a tissue class (CSF, GM, WM) labelling less than this fraction of the "
        "healthy brain: no adult brain has so little of any"
    )
    gm_wm_ratio: tuple[float, float] = Field(
        (0.8, 2.5), description="flag a grey/white matter volume ratio outside [min, max] (the IBSR manual labels "
        "of young adults, cerebellum included, give 1.5-2.15; MNI152 1.8)"
    )
    min_prior_dice: float = Field(
        0.4, ge=0, le=1, description="flag a tissue class whose labels overlap the registered atlas priors' argmax "
        "by a Dice below this (the class is not where the atlas puts it)"
    )

    @field_validator("brain_volume_ml")
    @classmethod
    def _ordered_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"must be [min, max] with 0 <= min < max, got {list(v)}")
        return v


class BatchConfig(_Strict):
    """How ``segment batch`` runs many cases (none of it changes a case's outputs)."""

    workers: int | None = Field(None, ge=1, description="parallel worker processes; default: number of cores")
    scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:port) to run the cases on a cluster; "
        "default: a local process pool"
    )
    force: bool = Field(False, description="redo cases whose outputs are already complete")
    numba_threads: int | None = Field(
        None, ge=1, description="Numba threads per worker; default: cores // workers, so workers do not oversubscribe"
    )
    qc: QCConfig = QCConfig()

    @field_validator("scheduler")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import re

        if not re.fullmatch(r"(tcp|tls|ws|wss|ucx|inproc)://\S+", v):
            raise ValueError("not a scheduler address; allowed: tcp://host:port (or tls://, ws://, wss://, ucx://)")
        return v


class Config(_Strict):
    """All settings of one run; the defaults are a sensible tissue segmentation."""

    seed: int = Field(0, ge=0)
    preprocess: PreprocessConfig = PreprocessConfig()
    mixture: MixtureConfig = MixtureConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    tumor: TumorConfig = TumorConfig()
    outputs: OutputConfig = OutputConfig()
    batch: BatchConfig = BatchConfig()
    registration: Literal["auto", "always", "never"] = Field(
        "auto",
        description="rigid registration (mutual information) of every series onto the reference series "
        "before resampling, because patients move between series. auto: series on another grid, and "
        "series on the reference grid unless the images are brain-only with a zero background "
        "(BraTS-like, already co-registered); always: every series; never: physical coordinates only",
    )
    truth: Literal["auto", "tissue", "tumor"] = Field(
        "auto",
        description="what a ground truth named only 'seg'/'label' holds; auto: tissue if its labels cover "
        "most of the brain, else tumor",
    )

    @model_validator(mode="after")
    def _bias_output_needs_n4(self) -> "Config":
        if self.outputs.bias_corrected and not self.preprocess.bias_correction:
            raise ValueError("outputs.bias_corrected: true needs preprocess.bias_correction: true "
                             "(there is no corrected image without N4)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(x) for x in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
            continue
        val = err.get("input")
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed values are")
        parts.append(f"'{key}' = {val!r}: {msg}")
    return f"{source}: invalid config: " + "; ".join(parts)


def config_from_dict(data: dict[str, Any] | None, *, source: str = "config") -> Config:
    """Validate a plain dict (e.g. parsed YAML) into a :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; ``None`` gives the defaults.

    ``overrides`` is a nested dict merged over the file's values (command-line flags).
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not a UTF-8 text file (byte {exc.start}); save the config as UTF-8 YAML") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from None
        try:
            data = yaml.load(text, Loader=_StrictLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if overrides:
        data = _merge(data if isinstance(data, dict) else {}, overrides)
    return config_from_dict(data, source=source)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would silently keep
    the last one, so half of what the user wrote would be ignored)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
