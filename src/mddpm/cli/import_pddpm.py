"""``mddpm import-pddpm DATA_DIR OUT``: a dataset.json over the pDDPM/mDDPM preprocessed data.

Files are referenced in place; missing files are listed one per line on stderr and do not stop
the import unless ``--strict``.
"""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("import-pddpm", help="make a dataset of the pDDPM/mDDPM preprocessed data (Data/splits layout)",
                       description="Write OUT/dataset.json referencing the IXI/BraTS21/MSLUB T2 volumes of the "
                                   "pDDPM layout in place (no copies); see docs/dataset-format.md.")
    p.add_argument("data_dir", help="DATA_DIR holding Data/splits/*.csv (or the Data folder itself)")
    p.add_argument("out", help="dataset folder to write dataset.json into")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT/dataset.json")
    p.add_argument("--strict", action="store_true", help="write nothing when a referenced file is missing")
    p.add_argument("--drop-missing", action="store_true",
                   help="leave cases with missing files out of cases, splits and folds (recorded in provenance)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.data.import_pddpm import read_pddpm, write_import
    from mddpm.errors import one_line

    imported = read_pddpm(args.data_dir, drop_missing=args.drop_missing)
    for line in imported.missing:
        print(one_line(line), file=sys.stderr)
    target = write_import(imported, args.out, force=args.force, strict=args.strict)
    print(f"{'split':<14} {'csv':<18} {'rows':>6} {'T2 kept':>8} {'unique':>7}")
    for c in imported.counts:
        print(f"{c.split:<14} {c.csv + '.csv':<18} {c.rows:>6} {c.after_t2_filter:>8} {c.unique:>7}")
    cases = imported.meta["cases"]
    healthy = sum(c["role"] == "healthy" for c in cases)
    print(f"wrote {target}: {len(cases)} cases ({healthy} healthy, {len(cases) - healthy} anomalous), "
          f"{len(imported.meta['folds'])} folds, {len(imported.missing)} missing file(s)"
          + (f", {len(imported.dropped)} case(s) dropped" if imported.dropped else ""))
    print(f"next: mddpm verify {args.out}")
    return 0
