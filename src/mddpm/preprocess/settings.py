"""What determines a preprocessed case: the settings (hashed for resume) and the inputs of one case."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.preprocess.steps import N4Settings, RegistrationSettings
from mddpm.preprocess.template import template_fingerprint

PIPELINE_VERSION = 1  # bump when the algorithm changes: finished cases of older versions are redone
MASK_SOURCES = ("files", "nonzero", "hd-bet")


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that determines the output of one case (hashed for resume)."""

    orientation: str = "LPS"  # sitk.DICOMOrient code; "LPS" is ANTs' "RAI", the published orientation
    spacing_mm: float = 1.0
    mask_source: str = "files"  # "files" (--masks), "nonzero" (already skull-stripped), "hd-bet"
    hdbet_device: str = "cpu"
    register: bool = True
    template: str | None = None  # None: nilearn's MNI152 2009a T1 brain
    template_mask: str | None = None
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    bias_correction: bool = True
    n4: N4Settings = field(default_factory=N4Settings)

    def __post_init__(self):
        if self.mask_source not in MASK_SOURCES:
            raise MddpmError(f"mask source {self.mask_source!r}: expected one of {', '.join(MASK_SOURCES)}")
        if not self.spacing_mm > 0:
            raise MddpmError(f"spacing {self.spacing_mm}: must be > 0 mm")
        if len(self.orientation) != 3 or set(self.orientation.upper()) - set("LRPAIS"):
            raise MddpmError(f"orientation {self.orientation!r}: expected a code like LPS or RAS")
        if self.n4.shrink < 1:
            raise MddpmError(f"N4 shrink factor {self.n4.shrink}: must be >= 1")

    def as_dict(self) -> dict:
        return asdict(self)


def settings_hash(settings: PreprocessSettings) -> tuple[str, dict]:
    """(sha256, record) of the settings, the template's identity and the pipeline version."""
    record = {"pipeline_version": PIPELINE_VERSION, "settings": settings.as_dict(),
              "template": (template_fingerprint(settings.template, settings.template_mask)
                           if settings.register else None)}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return digest, record


@dataclass(frozen=True)
class CaseInputs:
    id: str
    image: Path
    mask: Path | None = None
    label: Path | None = None
