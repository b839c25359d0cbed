"""Every ```python block in README.md and docs/*.md runs here, so the docs cannot drift from the code.

The blocks of one file run in order in one namespace, so a later block may use an earlier one's
names; each block is its own test, named by file and line: ``docs/write-a-layer.md:42`` (the line
of its opening fence). A test picked alone (``-k``, a single id) first runs the blocks before it.
A block is skipped only when its fence says ```python no-run or the line before it is
``<!-- no-run -->``: for what cannot run in a test (a download, a shell session), never for the
main examples. Blocks run from the repository root, so ``from parity.data import ...`` works.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tinynn

ROOT = Path(__file__).resolve().parents[1]
NO_RUN = "no-run"
NO_RUN_COMMENT = "<!-- no-run -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One ```python block: where it starts, its code, and whether it is to run."""

    path: Path
    line: int  # 1-based line of the opening fence
    source: str
    run: bool

    @property
    def name(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path.as_posix()}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The fenced Python blocks of a Markdown file, in order (CommonMark fences: ``` or ~~~, closed by
    the same character at least as many times; a fence indented in a list has its indent removed)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        fence, indent, info = opening["fence"], len(opening["indent"]), opening["info"].split()
        closing = re.compile(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
        end = i + 1
        while end < len(lines) and not closing.fullmatch(lines[end]):
            end += 1
        if info and info[0].lower() in ("python", "py", "python3"):
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            body = [line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[i + 1:end]]
            # Blank lines in front, so a traceback's line numbers are the Markdown file's own.
            source = "\n" * (i + 1) + "\n".join(body) + "\n"
            blocks.append(Block(path, i + 1, source, NO_RUN not in info[1:] and previous != NO_RUN_COMMENT))
        i = end + 1
    return blocks


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    """Execute one block in ``namespace``; tinynn's process-wide modes are restored afterwards."""
    code = compile(block.source, str(block.path), "exec")
    with tinynn.textbook(tinynn.is_textbook()), tinynn.set_grad_enabled(tinynn.is_grad_enabled()):
        exec(code, namespace)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


BLOCKS = {path: python_blocks(path) for path in doc_files() if path.exists()}
CASES = [pytest.param(path, index, id=block.name, marks=() if block.run else pytest.mark.skip(reason=NO_RUN))
         for path, blocks in BLOCKS.items() for index, block in enumerate(blocks)]


@dataclass
class _FileRun:
    """How far one file's blocks have run in this session, in its shared namespace."""

    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__doc__"})
    done: int = 0  # blocks[:done] have run (or been passed over)
    failed: str | None = None  # the first block that failed


_RUNS: dict[Path, _FileRun] = {}


@pytest.mark.parametrize(("path", "index"), CASES)
def test_doc_block(path: Path, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    blocks = BLOCKS[path]
    state = _RUNS.get(path)
    if state is None or state.done > index:  # first block of the file in this session, or run again
        state = _RUNS[path] = _FileRun()
    for earlier in blocks[state.done:index]:  # this test was picked alone: run what comes before it
        state.done += 1
        if earlier.run and state.failed is None:
            try:
                run_block(earlier, state.namespace)
            except Exception:
                state.failed = earlier.name
    if state.failed is not None:
        pytest.skip(f"an earlier block of this file failed: {state.failed}")
    state.done = index + 1
    failure = None
    try:
        run_block(blocks[index], state.namespace)
    except Exception as error:
        state.failed = blocks[index].name
        failure = f"{blocks[index].name} failed:\n{doc_traceback(error)}"
    if failure is not None:  # outside the except: the report is the block's traceback alone
        pytest.fail(failure, pytrace=False)


def doc_traceback(error: BaseException) -> str:
    """The traceback from the Markdown block on (lines as the file numbers them), without this file's frames."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def test_the_main_examples_are_collected() -> None:
    """A collector that silently found nothing would pass every test: the main examples must be here, and run."""
    for name in ("README.md", "docs/read-along.md", "docs/write-a-layer.md"):
        blocks = BLOCKS.get(ROOT / name, [])
        assert any(block.run for block in blocks), f"{name}: no ```python block that runs"


def test_collector_finds_runs_and_skips_blocks(tmp_path: Path) -> None:
    """A planted error fails its block, at its Markdown line; no-run fences and other languages are left."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# title\n"
        "```python\n"              # line 2
        "x = 1\n"
        "```\n"
        "```sh\n"
        "python3 dev.py run\n"
        "```\n"
        "```python no-run\n"       # line 8
        "raise SystemExit\n"
        "```\n"
        "<!-- no-run -->\n"
        "\n"
        "````python\n"             # line 13
        "```\n"                    # a shorter fence inside does not close it
        "````\n"
        "- in a list:\n"
        "  ```python\n"            # line 17
        "  y = x + 1\n"
        "  assert y == 3, 'planted'\n"  # line 19
        "  ```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(doc)
    assert [(b.line, b.run) for b in blocks] == [(2, True), (8, False), (13, False), (17, True)]
    assert blocks[2].source.strip() == "```"
    namespace: dict[str, Any] = {}
    run_block(blocks[0], namespace)
    with pytest.raises(AssertionError, match="planted") as failure:
        run_block(blocks[3], namespace)
    assert failure.traceback[-1].lineno + 1 == 19  # pytest counts lines from 0
    assert namespace["y"] == 2
