#!/usr/bin/env python3
"""Regenerates (or checks) the quoted `divergence` outputs of docs/pitfalls.md.

The doc shows, for each fault, a block of commands (`divergence run ...`, `divergence diff ...`)
followed by a block of what `diff` printed: some of its sections (the first-divergence block,
the ops around it, the per-step table, the summary line, a header line such as `tokens:`). This
script runs every command block in order, in one scratch folder (a command block may reuse the
`ours.npz` of the one before), with `fixtures/` linked in, and replaces each output block by
the same sections of the new output (`diff ... --format table --color never`, piped: nothing is
dropped for width).

    python3 scripts/doc_outputs.py [--bin target/debug/divergence]          # rewrite the doc
    python3 scripts/doc_outputs.py --check [--bin target/debug/divergence]  # CI: exit 1 if stale

`--check` compares with every digit masked: it fails when a section, a line, a column or a
word changed (the doc no longer shows what the tool prints, as a newcomer found on 2026-12-02:
the `origin`, `hint` and `positions` lines and the `error` column were missing), not when a
last digit moves (our CPU matmuls can round differently on another CPU). Standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "pitfalls.md"


def fenced_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(first content line, closing fence line) of every ``` block."""
    blocks, start = [], None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if start is None:
                start = i + 1
            else:
                blocks.append((start, i))
                start = None
    return blocks


def key(line: str) -> str:
    """A section's (or a header line's) name: its text up to the first ':', '(' or digit."""
    return re.split(r"[:(0-9]", line.strip(), maxsplit=1)[0].strip()


def sections(text: str) -> list[list[str]]:
    out, cur = [], []
    for line in text.splitlines():
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def excerpt(new: str, old: list[str]) -> list[str] | None:
    """The sections of `new` that `old` quotes, in `old`'s order; None if one is missing."""
    new_sections = sections(new)
    header_lines = [ln for s in new_sections for ln in s]
    result: list[list[str]] = []
    for old_section in sections("\n".join(old)):
        k = key(old_section[0])
        if len(old_section) == 1 and old_section[0].startswith("  "):
            # one line of the report's header (`  tokens:    ...`)
            match = [ln for ln in header_lines if ln.startswith("  ") and key(ln) == k]
            if not match:
                return None
            result.append(match[:1])
            continue
        match = [s for s in new_sections if key(s[0]) == k]
        if not match:
            return None
        result.append(match[0])
    lines: list[str] = []
    for s in result:
        if lines:
            lines.append("")
        lines.extend(s)
    return lines


def run_block(commands: list[str], binary: str, cwd: Path) -> str:
    out = ""
    for cmd in commands:
        argv = shlex.split(cmd)
        assert argv[0] == "divergence", cmd
        argv[0] = binary
        if argv[1] == "diff" and "--format" not in argv:
            argv += ["--format", "table", "--color", "never"]
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                           env={**os.environ, "NO_COLOR": "1"})
        if p.returncode not in (0, 1):
            sys.exit(f"doc_outputs: {cmd}: exit {p.returncode}: {p.stderr.strip()}")
        out = p.stdout
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(REPO / "target" / "debug" / "divergence"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    binary = str(Path(args.bin).resolve())
    lines = DOC.read_text().splitlines()
    blocks = fenced_blocks(lines)
    replacements: list[tuple[int, int, list[str]]] = []
    stale: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "fixtures").symlink_to(REPO / "fixtures")
        for (a, b), nxt in zip(blocks, blocks[1:]):
            body = lines[a:b]
            if not body or not all(ln.startswith("divergence ") for ln in body):
                continue
            old = lines[nxt[0]:nxt[1]]
            if not old or old[0].startswith("divergence "):
                continue
            new = excerpt(run_block(body, binary, cwd), old)
            if new is None:
                stale.append(f"{DOC.name}:{nxt[0] + 1}: a section it quotes is no longer printed")
                continue
            mask = lambda xs: [re.sub(r"[0-9]", "0", x) for x in xs]  # noqa: E731
            if mask(new) != mask(old):
                diff = "\n".join(difflib.unified_diff(old, new, "doc", "now", lineterm="", n=0))
                stale.append(f"{DOC.name}:{nxt[0] + 1}:\n{diff}")
            replacements.append((nxt[0], nxt[1], new))
    if args.check:
        if stale:
            print("\n".join(stale))
            print(f"doc_outputs: {len(stale)} stale output(s) in {DOC}: "
                  "run `python3 scripts/doc_outputs.py` and commit", file=sys.stderr)
            return 1
        print(f"doc_outputs: {len(replacements)} outputs of {DOC.name} match what the tool prints")
        return 0
    for a, b, new in reversed(replacements):
        lines[a:b] = new
    DOC.write_text("\n".join(lines) + "\n")
    print(f"doc_outputs: {len(replacements)} outputs of {DOC.name} rewritten "
          f"({len(stale)} had changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
