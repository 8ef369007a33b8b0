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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .types import MODALITIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class N4Config(_Strict):
    """N4 bias-field correction settings."""

    shrink: int = Field(4, ge=1, le=16, description="shrink factor for estimating the field")
    iterations: tuple[int, ...] = Field((50, 50, 30), min_length=1, max_length=6)
    convergence: float = Field(1e-4, gt=0)


class PreprocessConfig(_Strict):
    skullstrip: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: skull-strip unless the images are already brain-only (zero background); "
        "never: the brain is the non-zero region",
    )
    bias_correction: bool = Field(False, description="run N4 on every modality before normalisation")
    n4: N4Config = N4Config()
    lower_percentile: float = Field(0.5, ge=0, lt=50)
    upper_percentile: float = Field(99.5, gt=50, le=100)


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
    max_samples: int | None = Field(
        None, ge=1000, description="fit on a random subset of at most this many voxels (all are labelled)"
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


class OutputConfig(_Strict):
    overlay: bool = True
    probabilities: bool = Field(False, description="also write float32 class probability maps")


class Config(_Strict):
    """All settings of one run; the defaults are a sensible tissue segmentation."""

    seed: int = Field(0, ge=0)
    preprocess: PreprocessConfig = PreprocessConfig()
    mixture: MixtureConfig = MixtureConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    tumor: TumorConfig = TumorConfig()
    outputs: OutputConfig = OutputConfig()
    truth: Literal["auto", "tissue", "tumor"] = Field(
        "auto",
        description="what a ground truth named only 'seg'/'label' holds; auto: tissue if its labels cover "
        "most of the brain, else tumor",
    )

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
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if overrides:
        data = _merge(data if isinstance(data, dict) else {}, overrides)
    return config_from_dict(data, source=source)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
