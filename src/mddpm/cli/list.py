"""``mddpm list methods|presets``: what can be trained."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered methods and their presets")
    p.add_argument("what", choices=["methods", "presets"], help="what to list")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.methods import all_methods  # here: building the parser imports no heavy library

    methods = all_methods()
    width = max(len(n) for n in methods)
    for name in sorted(methods):
        spec = methods[name]
        if args.what == "methods":
            print(f"{name:<{width}}  {spec.description}")
        else:
            print(name)
            for preset in sorted(spec.presets):
                print(f"  {preset:<6} {spec.presets[preset].get('about', '')}")
    return 0
