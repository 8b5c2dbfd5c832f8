"""Raw scans to an mddpm dataset: reorient, resample, brain mask, register, crop, N4 (docs/preprocess.md)."""

from mddpm.preprocess.pipeline import (
    CaseInputs,
    PreprocessReport,
    PreprocessSettings,
    find_cases,
    preprocess_case,
    preprocess_dataset,
)
from mddpm.preprocess.steps import N4Settings, RegistrationSettings
from mddpm.preprocess.template import load_template

__all__ = [
    "CaseInputs", "N4Settings", "PreprocessReport", "PreprocessSettings", "RegistrationSettings", "find_cases",
    "load_template", "preprocess_case", "preprocess_dataset",
]
