"""Compare two junit-xml runs of the same tests and print a markdown table of the differences.

    python compare.py plain.xml gprune.xml [--label "gprune keep=1.0"] [--fail-on-diff]

Prints the counts of each outcome per run, then every test whose outcome differs (a test missing from
one run counts as "absent"), with the first line of the differing run's failure message.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed")
_RANK = {name: rank for rank, name in enumerate(("passed", "xfailed", "skipped", "failed", "error"))}


@dataclass(frozen=True)
class Result:
    outcome: str
    message: str


def _test_id(case: ET.Element) -> str:
    module, _, cls = case.get("classname", "").rpartition(".")
    module = module.rpartition(".")[2] or module
    return "::".join(part for part in (module, cls, case.get("name", "")) if part)


def _result(case: ET.Element) -> Result:
    outcome, message = "passed", ""
    for child in case:
        if child.tag == "skipped":
            kind = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            found = Result(kind, child.get("message", ""))
        elif child.tag in ("failure", "error"):
            found = Result("failed" if child.tag == "failure" else "error", child.get("message", ""))
        else:
            continue
        if _RANK[found.outcome] > _RANK[outcome]:
            outcome, message = found.outcome, found.message
    return Result(outcome, message)


def load(path: str) -> dict[str, Result]:
    """Test id -> outcome; a test reported twice (teardown error) keeps its worse outcome."""
    results: dict[str, Result] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id, result = _test_id(case), _result(case)
        previous = results.get(test_id)
        if previous is None or _RANK[result.outcome] > _RANK[previous.outcome]:
            results[test_id] = result
    return results


def _cell(text: str, limit: int = 160) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = line if len(line) <= limit else line[: limit - 1] + "…"
    return line.replace("|", "\\|")


def table(base: dict[str, Result], other: dict[str, Result], label: str) -> tuple[str, int]:
    """The markdown report and the number of tests whose outcome differs."""
    base_counts = Counter(r.outcome for r in base.values())
    other_counts = Counter(r.outcome for r in other.values())
    lines = [f"| outcome | unpruned | {label} |", "|---|---:|---:|"]
    lines += [f"| {name} | {base_counts[name]} | {other_counts[name]} |" for name in OUTCOMES]
    lines.append(f"| total | {len(base)} | {len(other)} |")
    absent = Result("absent", "")
    differing = [
        (test_id, base.get(test_id, absent), other.get(test_id, absent))
        for test_id in sorted(base.keys() | other.keys())
        if base.get(test_id, absent).outcome != other.get(test_id, absent).outcome
    ]
    lines += ["", f"{len(differing)} test(s) differ.", ""]
    if differing:
        lines += [f"| test id | unpruned | {label} | message |", "|---|---|---|---|"]
        for test_id, a, b in differing:
            message = b.message if _RANK.get(b.outcome, -1) >= _RANK.get(a.outcome, -1) else a.message
            lines.append(f"| `{test_id}` | {a.outcome} | {b.outcome} | {_cell(message)} |")
    return "\n".join(lines), len(differing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="junit xml of the plain run")
    parser.add_argument("other", help="junit xml of the run with gprune applied")
    parser.add_argument("--label", default="gprune keep=1.0", help="column header of the second run")
    parser.add_argument("--fail-on-diff", action="store_true", help="exit 1 when any outcome differs")
    args = parser.parse_args(argv)
    report, n_differing = table(load(args.base), load(args.other), args.label)
    print(report)
    return 1 if args.fail_on_diff and n_differing else 0


if __name__ == "__main__":
    sys.exit(main())
