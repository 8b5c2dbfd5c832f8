"""The structure of ``dataset.json``: one set of checks shared by ``mddpm verify`` and the loader
every other command uses (:func:`mddpm.data.dataset.load_dataset`), so that no command accepts what
``verify`` rejects. Files are not opened here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.io import case_id_problem, read_json

FORMAT = "mddpm-dataset"
FORMAT_VERSION = 1
ROLES = ("healthy", "anomalous")
LABEL_ENCODINGS = ("binary", "gt0")
TRAINING_SPLIT = "train"
MAX_LISTED = 5  # ids or values quoted in one message


@dataclass(frozen=True)
class Problem:
    """One finding: ``where`` is the file it is about (or dataset.json), ``code`` a stable kind."""

    severity: str  # "error" | "warning" | "note"
    code: str  # e.g. "missing-file", "shape-mismatch", "label-values"
    where: str
    message: str
    case: str | None = None

    def __str__(self) -> str:
        suffix = f" [case {self.case}]" if self.case else ""
        return f"{self.where}: {self.severity}: {self.message}{suffix}"


@dataclass
class Entry:
    """One valid case entry of dataset.json, paths resolved."""

    index: int
    id: str
    role: str
    image: Path
    mask: Path
    label: Path | None
    group: str | None = None


@dataclass
class Structure:
    """What :func:`check_structure` found: the JSON (None when unusable), the valid cases, the problems."""

    meta: dict | None
    entries: list[Entry]
    encoding: str
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def resolve_path(root: Path, p: str | None) -> Path | None:
    if p is None:
        return None
    path = Path(p)
    return path if path.is_absolute() else root / path


def check_structure(root: Path) -> Structure:
    """Read ``root/dataset.json`` and check its structure (never raises for bad input)."""
    problems: list[Problem] = []
    meta_path = root / "dataset.json"
    meta = _read_meta(root, meta_path, problems)
    if meta is None:
        return Structure(None, [], "binary", problems)
    where = str(meta_path)
    encoding = _label_encoding(meta, where, problems)
    _check_geometry(meta, where, problems)
    entries = _parse_cases(meta, root, where, problems)
    _check_splits(meta, entries, where, problems)
    return Structure(meta, entries, encoding, problems)


def _read_meta(root: Path, meta_path: Path, problems: list[Problem]) -> dict | None:
    def fail(where, message, code):
        problems.append(Problem("error", code, str(where), message))

    if not root.is_dir():
        return fail(root, "dataset folder not found", "missing-dataset")
    if not meta_path.is_file():
        return fail(meta_path, "file not found (a dataset folder needs dataset.json)", "missing-file")
    try:
        meta = read_json(meta_path)
    except MddpmError as e:
        return fail(meta_path, str(e).removeprefix(f"{meta_path}: "), "invalid-json")
    if meta.get("format") != FORMAT:
        return fail(meta_path, f"unknown format {meta.get('format')!r} (expected {FORMAT!r})", "unknown-format")
    if meta.get("format_version") != FORMAT_VERSION:
        return fail(meta_path, f"unsupported format_version {meta.get('format_version')!r} "
                               f"(this mddpm reads {FORMAT_VERSION})", "unknown-format")
    return meta


def _label_encoding(meta: dict, where: str, problems: list[Problem]) -> str:
    encoding = meta.get("label_encoding", "binary")
    if encoding not in LABEL_ENCODINGS:
        problems.append(Problem("error", "label-encoding", where,
                                f"unknown label_encoding {encoding!r} (expected one of {', '.join(LABEL_ENCODINGS)})"))
        return "binary"
    return encoding


def _check_geometry(meta: dict, where: str, problems: list[Problem]) -> None:
    """``geometry``: an object whose ``spacing_mm`` is 3 positive numbers and ``shape`` 3 positive integers or null."""
    geometry = meta.get("geometry", {})
    if not isinstance(geometry, dict):
        problems.append(Problem("error", "invalid-geometry", where, '"geometry" must be an object'))
        return
    for key, kind in (("spacing_mm", (int, float)), ("shape", int)):
        value = geometry.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, kind) and not isinstance(v, bool) and 0 < v < float("inf") for v in value)):
            problems.append(Problem("error", "invalid-geometry", where,
                                    f"geometry.{key} must be 3 positive "
                                    f"{'numbers' if key == 'spacing_mm' else 'integers'}, "
                                    f"not {str(value)[:60]}"))


def _parse_cases(meta: dict, root: Path, where: str, problems: list[Problem]) -> list[Entry]:
    """Valid case entries (duplicates included, reported); structural problems go to ``problems``."""
    cases = meta.get("cases")
    if not isinstance(cases, list):
        problems.append(Problem("error", "invalid-cases", where, '"cases" must be a list of case objects'))
        return []
    entries: list[Entry] = []
    first_index: dict[str, int] = {}
    healthy_with_label: list[str] = []
    for i, c in enumerate(cases):
        def bad(message, code="invalid-case", case=None):
            problems.append(Problem("error", code, where, f"case #{i}: {message}", case))

        if not isinstance(c, dict):
            bad("not a JSON object")
            continue
        cid = c.get("id")
        if not isinstance(cid, (str, int)) or isinstance(cid, bool) or str(cid) == "":
            bad('no "id"')
            continue
        cid = str(cid)
        problem = case_id_problem(cid)
        if problem:
            bad(f"case id {cid!r} {problem}")
            continue
        if cid in first_index:
            bad(f"duplicate case id {cid!r} (first at case #{first_index[cid]})", "duplicate-id", cid)
        else:
            first_index[cid] = i
        role = c.get("role")
        if not isinstance(role, str) or role not in ROLES:
            bad(f"role {role!r} is not one of {', '.join(ROLES)}", case=cid)
            continue
        paths = {}
        for key in ("image", "mask", "label"):
            value = c.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                bad(f'"{key}" must be a path', case=cid)
                value = None
            paths[key] = value
        if paths["image"] is None or paths["mask"] is None:
            missing = [k for k in ("image", "mask") if paths[k] is None]
            bad(f"no {' or '.join(missing)} path", case=cid)
            continue
        if role == "anomalous" and paths["label"] is None:
            bad("anomalous case has no label", "missing-label", cid)
        if role == "healthy" and paths["label"] is not None:
            healthy_with_label.append(cid)
        group = c.get("group")
        entries.append(Entry(i, cid, role, resolve_path(root, paths["image"]), resolve_path(root, paths["mask"]),
                             resolve_path(root, paths["label"]), group if isinstance(group, str) else None))
    if healthy_with_label:
        problems.append(Problem("note", "healthy-label", where,
                                f"{len(healthy_with_label)} healthy case(s) have a label "
                                f"({listing(healthy_with_label)}); it is checked like any label"))
    return entries


def _check_splits(meta: dict, entries: list[Entry], where: str, problems: list[Problem]) -> None:
    cases = meta.get("cases") if isinstance(meta.get("cases"), list) else []
    known = {str(c["id"]) for c in cases if isinstance(c, dict) and c.get("id") is not None}
    roles = {e.id: e.role for e in entries}
    named: dict[str, list[str]] = {}
    splits = meta.get("splits", {})
    if not isinstance(splits, dict):
        problems.append(Problem("error", "invalid-splits", where, '"splits" must map split names to lists of case ids'))
        splits = {}
    for name, ids in splits.items():
        named[f"split {name!r}"] = _check_id_list(f"split {name!r}", ids, known, where, problems)
    folds = meta.get("folds", [])
    if not isinstance(folds, list):
        problems.append(Problem("error", "invalid-folds", where, '"folds" must be a list of '
                                                                 '{"train": [...], "val": [...]}'))
        folds = []
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or "train" not in fold or "val" not in fold:
            problems.append(Problem("error", "invalid-folds", where, f'fold {k} must have "train" and "val" lists'))
            continue
        for part in ("train", "val"):
            named[f"fold {k} {part}"] = _check_id_list(f"fold {k} {part}", fold[part], known, where, problems)

    # Pairs that should be disjoint: the training split against every other split, and each fold's train/val.
    pairs = [(f"split {TRAINING_SPLIT!r}", f"split {n!r}") for n in splits if n != TRAINING_SPLIT]
    pairs += [(f"fold {k} train", f"fold {k} val") for k in range(len(folds))]
    for a, b in pairs:
        if a in named and b in named:
            shared = sorted(set(named[a]) & set(named[b]))
            if shared:
                problems.append(Problem("warning", "split-overlap", where,
                                        f"{a} and {b} share {len(shared)} case(s): {listing(shared)}"))
    for name, ids in named.items():
        if name == f"split {TRAINING_SPLIT!r}" or name.endswith(" train"):
            anomalous = [i for i in dict.fromkeys(ids) if roles.get(i) == "anomalous"]
            if anomalous:
                problems.append(Problem("warning", "anomalous-in-train", where,
                                        f"{name} holds {len(anomalous)} anomalous case(s): {listing(anomalous)}"))


def _check_id_list(name: str, ids, known: set[str], where: str, problems: list[Problem]) -> list[str]:
    if not isinstance(ids, list):
        problems.append(Problem("error", "invalid-splits", where, f"{name} must be a list of case ids"))
        return []
    ids = [str(i) for i in ids]
    unknown = [i for i in dict.fromkeys(ids) if i not in known]
    if unknown:
        problems.append(Problem("error", "unknown-case", where, f"{name} names {len(unknown)} unknown case(s): "
                                                                f"{listing(unknown)}"))
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        problems.append(Problem("warning", "repeated-id", where, f"{name} lists {len(repeated)} case(s) more than "
                                                                 f"once: {listing(repeated)}"))
    if not ids:
        problems.append(Problem("warning", "empty-split", where, f"{name} is empty"))
    return ids


def listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")
