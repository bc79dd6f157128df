"""The documentation is usable as written: links resolve, the files it names exist, README stays
short, its Python examples run, and the commands it shows accept the options it gives them.

Markdown files checked: README.md, CHANGELOG.md and every docs/*.md. Source files may cite a
section of the docs as ``docs/<file>.md#<anchor>``; those citations must resolve too.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import sys
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
SOURCE_DIRS = ("csrc", "rrm", "rrm_ops", "tests", "tools", "benchmarks", "docs", ".ci")
SOURCE_SUFFIXES = {".py", ".h", ".cpp", ".cu", ".cuh", ".sh", ".md", ".toml", ""}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
REFERENCE_LINK = re.compile(r"^\[[^\]\n]+\]:\s*(\S+)", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
DOC_CITATION = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
REPOSITORY_PATH = re.compile(r"(?:csrc|rrm|rrm_ops|tests|tools|benchmarks|docs|\.ci)/[\w./-]*$")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors a Markdown file defines: its headings (duplicates numbered) and <a id=...>."""
    text = path.read_text()
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for line in FENCE.sub("", text).splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def link_targets() -> list[tuple[Path, str]]:
    targets = []
    for path in MARKDOWN:
        text = prose(path.read_text())
        targets += [(path, target) for target in LINK.findall(text) + REFERENCE_LINK.findall(text)]
    return targets


def link_problem(source: Path, target: str) -> str | None:
    """Why a link from `source` does not resolve, or None."""
    if re.match(r"[a-z]+:", target):  # https:, mailto: ...
        return None
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    if ROOT not in destination.parents and destination != ROOT:
        return f"{target} leaves the repository"
    if not destination.exists():
        return f"{target}: no such file"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"{target}: {relative(destination)} has no heading with anchor #{anchor}"
    return None


def test_markdown_files_are_found():
    names = {relative(path) for path in MARKDOWN}
    assert {"README.md", "CHANGELOG.md", "docs/design.md", "docs/benchmarks.md", "docs/training.md"} <= names


def test_every_relative_link_resolves():
    problems = [f"{relative(source)}: {problem}" for source, target in link_targets()
                if (problem := link_problem(source, target))]
    assert not problems, "\n".join(problems)


def test_the_link_checker_rejects_missing_files_and_anchors():
    readme = ROOT / "README.md"
    assert link_problem(readme, "docs/design.md#dense-crf") is None
    assert link_problem(readme, "docs/nothing.md") is not None
    assert link_problem(readme, "docs/design.md#" + "no-such-section") is not None
    assert link_problem(readme, "../outside.md") is not None
    assert slug("Padding points (`point_block`)") == "padding-points-point_block"


def source_files() -> list[Path]:
    files = [path for path in ROOT.iterdir() if path.is_file() and path.suffix in {".py", ".toml", ".md"}]
    for folder in SOURCE_DIRS:
        files += [path for path in (ROOT / folder).rglob("*") if path.is_file() and path.suffix in SOURCE_SUFFIXES]
    return [path for path in files if "__pycache__" not in path.parts]


def test_repository_paths_named_in_prose_exist():
    # Inline code such as `tools/install.sh` or `csrc/crf/crf.h` names a file a reader will open.
    problems = []
    for path in MARKDOWN:
        for span in INLINE_CODE.findall(FENCE.sub("", path.read_text())):
            name = span.strip("`")
            if REPOSITORY_PATH.match(name) and not (ROOT / name).exists():
                problems.append(f"{relative(path)}: {name}")
    assert not problems, "missing files:\n" + "\n".join(problems)


def test_citations_of_doc_sections_resolve():
    problems = []
    for path in source_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for name, anchor in DOC_CITATION.findall(text):
            doc = ROOT / "docs" / name
            if not doc.exists() or anchor not in anchors(doc):
                problems.append(f"{relative(path)}: docs/{name}#{anchor}")
    assert not problems, "unresolved citations:\n" + "\n".join(problems)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES} wanted"


def readme_python_blocks() -> list[str]:
    return [code for language, code in FENCE.findall((ROOT / "README.md").read_text()) if language == "python"]


def test_readme_has_python_examples():
    assert len(readme_python_blocks()) >= 4


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_block_runs_as_written(index):
    code = readme_python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": f"readme_block_{index}"})


def shell_commands() -> list[tuple[Path, str]]:
    """Commands of the bash blocks and inline code of every Markdown file, continuations joined.

    A table row whose first cell is a command lends it every ``--option`` of the row.
    """
    commands = []
    for path in MARKDOWN:
        text = path.read_text()
        for language, code in FENCE.findall(text):
            if language in ("bash", "sh", ""):
                for line in code.replace("\\\n", " ").splitlines():
                    commands.append((path, line.split(" #")[0].strip()))
        outside_fences = FENCE.sub("", text)
        commands += [(path, span.strip("`")) for span in INLINE_CODE.findall(outside_fences)]
        for row in re.findall(r"^\|\s*`([^`]+)`[^|]*\|(.*)$", outside_fences, re.M):
            commands.append((path, row[0] + " " + " ".join(re.findall(r"--[a-z][\w-]*", row[1]))))
    return [(path, command) for path, command in commands if command]


def project_invocation(command: str) -> tuple[str, str, list[str]] | None:
    """('module' | 'script', name, options) of a `python -m rrm...`, `torchrun ... -m rrm...` or
    `python tools/x.py` command; None for anything else."""
    try:
        words = shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " "))
    except ValueError:
        return None
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1].startswith("rrm") and i > 0 and words[0] in ("python", "torchrun"):
            return "module", words[i + 1], [w.split("=")[0] for w in words[i + 2:] if w.startswith("--")]
    if len(words) > 1 and words[0] == "python" and words[1].startswith("tools/") and words[1].endswith(".py"):
        return "script", words[1], [w.split("=")[0] for w in words[2:] if w.startswith("--")]
    return None


@cache
def help_text(kind: str, name: str) -> str:
    """What `name --help` prints, run in this process (argparse prints it and exits)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [name, "--help"]
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
            with pytest.raises(SystemExit):
                if kind == "module":
                    runpy.run_module(name, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(str(ROOT / name), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def documented_invocations() -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for _, command in shell_commands():
        invocation = project_invocation(command)
        if invocation:
            kind, name, options = invocation
            found.setdefault((kind, name), set()).update(options)
    return found


def test_documented_commands_are_found():
    names = {name for _, name in documented_invocations()}
    assert {"rrm.train", "rrm.infer", "rrm.evaluate", "rrm.pseudo_labels", "rrm.data.synthetic",
            "rrm.data.check", "rrm_ops.demo", "tools/benchmark_table.py"} <= names


@pytest.mark.parametrize("kind, name", sorted(documented_invocations()))
def test_documented_command_accepts_its_options(kind, name):
    options = documented_invocations()[(kind, name)]
    text = help_text(kind, name)
    assert "usage:" in text
    unknown = sorted(option for option in options if not re.search(re.escape(option) + r"(?![\w-])", text))
    assert not unknown, f"{name} --help does not list {unknown}"
