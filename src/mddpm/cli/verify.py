"""``mddpm verify DATASET``: list every problem of a dataset folder, one line each.

Exit code 0 when there is no error (warnings and notes are printed but allowed; ``--strict`` makes
warnings fail too), 2 otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mddpm.data.verify import Verification

SHOWN_PER_KIND = 10  # warnings/notes of one kind shown before "... and N more" (errors: all)


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a dataset folder and list every problem",
                       description="Check dataset.json and every file it names; report all problems at once.")
    p.add_argument("dataset", help="dataset folder (holds dataset.json)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report instead of lines")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) on warnings as well as errors")
    p.add_argument("--all", action="store_true", help=f"show every warning and note (default: {SHOWN_PER_KIND} of each "
                                                      "kind)")
    p.add_argument("--headers-only", action="store_true",
                   help="read NIfTI headers only: files, 3-D, shapes, affines (fast); no voxel-value checks")
    p.add_argument("--workers", type=int, default=None, help="threads reading files (default: up to 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.data.verify import check_dataset
    from mddpm.errors import one_line
    from mddpm.progress import progress_bar

    with progress_bar("verify", None, not (args.json or args.no_progress)) as advance:
        result = check_dataset(args.dataset, workers=args.workers, voxels=not args.headers_only,
                               progress=lambda done, total: advance())
    failed = not result.ok or (args.strict and result.count("warning") > 0)
    if args.json:
        print(json.dumps({**result.to_dict(), "ok": not failed, "strict": args.strict}, indent=2))
    else:
        for line in report_lines(result, show_all=args.all):
            print(one_line(line))
    return 2 if failed else 0


def report_lines(result: Verification, show_all: bool = False) -> list[str]:
    """One line per problem (file path first), then a summary line."""
    from mddpm.data.verify import SEVERITIES

    lines, shown, hidden = [], {}, {}
    for p in result.problems:
        key = (p.severity, p.code)
        if p.severity != "error" and not show_all and shown.get(key, 0) >= SHOWN_PER_KIND:
            hidden[key] = hidden.get(key, 0) + 1
            continue
        shown[key] = shown.get(key, 0) + 1
        lines.append(str(p))
    for (severity, code), n in hidden.items():
        lines.append(f"... and {n} more {severity}s of kind {code!r} (use --all or --json to see them)")
    counts = ", ".join(f"{result.count(s)} {s}{'' if result.count(s) == 1 else 's'}" for s in SEVERITIES)
    verdict = "OK" if result.ok else "FAILED"
    read = "headers read" if not result.voxels else "files read"
    lines.append(f"{verdict}: {result.root}: {counts} ({result.n_cases} cases, {result.n_files} {read} "
                 f"in {result.seconds:.1f} s)")
    return lines
