"""Brain masks from HD-BET (Isensee et al., 2019), when the user has it installed.

HD-BET is not a dependency: it is found as the ``hd-bet`` command on PATH and run on one scan
at a time. Both command-line generations are handled: v2 (``--save_bet_mask``, mask written as
``<out>_bet.nii.gz``) and v1 (``-mode``/``-tta``, mask ``<out>_mask.nii.gz``). Its weights are
downloaded by HD-BET itself on first use (``~/hd-bet_params``), which needs network once.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import SimpleITK as sitk

from mddpm.errors import MddpmError

HOW_TO_PROVIDE_MASKS = ("pass --masks DIR (one <case id>.nii.gz per scan), --nonzero-mask for scans that are "
                        "already skull-stripped, or install HD-BET (pip install hd-bet; it downloads its weights "
                        "on first use) so that 'hd-bet' is on PATH")


def hdbet_command() -> str | None:
    """Path of the ``hd-bet`` executable, or None."""
    return shutil.which("hd-bet")


@functools.lru_cache(maxsize=1)
def _cli_generation(exe: str) -> int:
    try:
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MddpmError(f"{exe}: cannot run HD-BET ({e})") from None
    return 2 if "save_bet_mask" in out.stdout + out.stderr else 1


def hdbet_mask(image: sitk.Image, device: str = "cpu") -> sitk.Image:
    """Run HD-BET on ``image`` and return its brain mask (uint8, in world space on a grid that
    may be a permutation of ``image``'s). HD-BET gets the scan with its voxel axes in the MNI152
    (FSL standard, "LAS") order it expects; errors end with the last line HD-BET printed."""
    exe = hdbet_command()
    if exe is None:
        raise MddpmError(f"HD-BET is not installed: {HOW_TO_PROVIDE_MASKS}")
    image = sitk.DICOMOrient(image, "LAS")
    with tempfile.TemporaryDirectory(prefix="mddpm-hdbet-") as tmp:
        src, out = Path(tmp) / "scan.nii.gz", Path(tmp) / "brain.nii.gz"
        sitk.WriteImage(image, str(src))
        if _cli_generation(exe) == 2:
            cmd = [exe, "-i", str(src), "-o", str(out), "-device", device, "--save_bet_mask", "--no_bet_image"]
            if device == "cpu":
                cmd.append("--disable_tta")
            mask_file = Path(tmp) / "brain_bet.nii.gz"
        else:
            cmd = [exe, "-i", str(src), "-o", str(out), "-device", device,
                   "-mode", "fast" if device == "cpu" else "accurate",
                   "-tta", "0" if device == "cpu" else "1"]
            mask_file = Path(tmp) / "brain_mask.nii.gz"
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not mask_file.is_file():
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            last = lines[-1][:200] if lines else "no output"
            raise MddpmError(f"HD-BET failed (exit {proc.returncode}; {last}); "
                             "its weights download to ~/hd-bet_params on first use")
        mask = sitk.ReadImage(str(mask_file))
    if mask.GetSize() == image.GetSize():
        mask.CopyInformation(image)  # HD-BET keeps the grid; drop header rounding differences
    return sitk.Cast(sitk.Greater(sitk.Cast(mask, sitk.sitkFloat32), 0.0), sitk.sitkUInt8)
