"""Raw scans to an mddpm dataset: reorient, resample, brain mask, register, crop, N4 (docs/preprocess.md)."""

from mddpm.preprocess.case import preprocess_case
from mddpm.preprocess.discover import find_cases
from mddpm.preprocess.pipeline import preprocess_dataset
from mddpm.preprocess.report import PreprocessReport
from mddpm.preprocess.settings import CaseInputs, PreprocessSettings
from mddpm.preprocess.steps import N4Settings, RegistrationSettings
from mddpm.preprocess.template import load_template

__all__ = [
    "CaseInputs", "N4Settings", "PreprocessReport", "PreprocessSettings", "RegistrationSettings", "find_cases",
    "load_template", "preprocess_case", "preprocess_dataset",
]
