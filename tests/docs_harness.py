"""Run the shell examples of README.md and docs/*.md as written: the docs harness.

Every fenced block tagged ``console``, ``bash``, ``sh`` or ``shell`` in README.md and
docs/*.md is an example a reader may paste; :mod:`tests.test_docs` runs them, block by
block and line by line in document order, in one scratch folder per document
(``HOME`` points at a scratch home, so ``~/data/potsdam`` works too). The conventions,
also described in docs/doc-examples.md:

* **Commands.** In a block with ``$ `` prompts, a line starting with ``$ `` is a command
  and the lines under it, up to the next prompt, are its expected output. In a block
  without prompts every line is a command. A line ending in ``\\`` continues on the next
  one; ``#`` starts a comment; lines that are only a comment are skipped.
* **Where they run.** ``sgma ...`` runs in this Python process (Typer's test runner, so
  the ~10 s import of torch is paid once); a pipe after it (``sgma ... | jq .summary``)
  gets its stdout. Other commands run in ``bash`` with ``.venv/bin`` first on ``PATH``.
  Words are expanded by bash in both cases (quotes, globs, ``~``). ``make TARGET`` runs
  as ``make -n TARGET`` in the repository (the target exists and its recipe parses; ``make
  demo`` itself is what the sample workflow already runs). With ``SGMA_DOCS_SUBPROCESS=1``
  every ``sgma`` command runs as its own process instead.
* **Inputs.** Each document gets the files its examples name, built before its first
  block by :data:`SETUPS`: the built-in sample (``sgma sample``), or tiny fixtures for
  the presets and other layouts (Potsdam folders, a two-scene flight folder), and short
  training runs where a document starts from a checkpoint. The repository's
  ``recipes/``, ``benchmarks/``, ``.venv``, ``Makefile`` and ``pyproject.toml`` are linked
  into the scratch folder.
* **Short trainings.** Every ``sgma train`` (but ``--print``/``--help``) gets the
  overrides of :data:`TRAIN_SET` appended as ``--set KEY=VALUE``: 2 steps of one crop of
  64 px with the tiny ``test_convnext`` backbone, so a paper recipe runs in seconds on a
  CPU. A key the example sets itself keeps the example's value.
* **Short benchmarks.** A documented ``benchmarks/*.py`` run listed in :data:`BENCH_SET`
  gets its arguments appended (a small scene, one repeat).
* **GPU-only lines** end with a comment holding ``[gpu]`` (``# 4 GPUs [gpu]``) and are
  not run; a line that asks for CUDA, ``--gpus`` or ``torchrun`` without the marker fails.
* **Expected output.** Each expected line must appear in the command's output (stdout
  and stderr), in order, other lines in between allowed. Runs of spaces count as one,
  and ``...`` matches any text, so ``│ building │ ... │`` matches a table row with any
  figures. An expected line starting with ``error:`` means the command must fail (exit
  code not 0); any other command must succeed. A traceback always fails.

:func:`check_static` is the quick part (run by ``make test``): every block parses, every
``sgma`` line parses against the current command line (options, choices, arguments),
GPU lines are marked. :func:`run_doc` runs a whole document (``make docs-test``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"console", "bash", "sh", "shell"}
GPU_MARK = "[gpu]"
#: Words that need a GPU; a command holding one must carry the GPU mark.
GPU_WORDS = re.compile(r"(--gpus\b|--device\s+cuda|\bcuda:\d|CUDA_VISIBLE_DEVICES|\btorchrun\b)")
#: Appended to every documented ``sgma train`` (a key the example sets keeps its value).
TRAIN_SET = (
    "schedule.max_steps=2",
    "schedule.warmup_epochs=0",
    "data.crop_size=64",
    "data.batch_size=1",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "model.backbone=test_convnext",
    "model.head_dim=32",
)
#: Appended to a documented benchmark run: the same measurements on a small scene (the
#: defaults take minutes on 2 cores; the doc's figures come from the defaults).
BENCH_SET = {
    "benchmarks/predict_throughput.py": "--size 512 --rss-size 256 --window 128 --repeats 1",
    "benchmarks/region_scaling.py": "--size 128 --tile 64",
}
#: Terminal width the examples are rendered at (rich tables wrap to it).
COLUMNS = 100
COMMAND_TIMEOUT = 900  # s, one command


# ----------------------------------------------------------------------------- parsing
@dataclass
class Command:
    """One documented command with the output lines the doc shows under it."""

    doc: str
    line: int  # 1-based line of the command in the doc
    text: str  # continuation lines joined with spaces, prompt removed
    expected: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """``docs/x.md:12``."""
        return f"{self.doc}:{self.line}"

    @property
    def code(self) -> str:
        """The command without its trailing comment."""
        return split_shell(self.text).code

    @property
    def comment(self) -> str:
        """The trailing comment, without ``#``."""
        return split_shell(self.text).comment

    @property
    def gpu(self) -> bool:
        """Marked as GPU-only (``[gpu]`` in the trailing comment)."""
        return GPU_MARK in self.comment

    @property
    def expects_error(self) -> bool:
        """The doc shows an ``error:`` line under it, so it must fail."""
        return any(line.strip().startswith("error:") for line in self.expected)


@dataclass
class Block:
    """One fenced shell block."""

    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    commands: list[Command]


def doc_files() -> list[Path]:
    """README.md, then docs/*.md in name order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_name(path: Path) -> str:
    """The path relative to the repository (``docs/train.md``)."""
    return path.relative_to(REPO).as_posix()


_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)\s*$")


def collect_blocks(path: Path) -> list[Block]:
    """Every shell block of one Markdown file, with its commands and expected outputs."""
    name = doc_name(path) if path.is_relative_to(REPO) else path.name
    blocks: list[Block] = []
    fence: str | None = None
    lang, start, body = "", 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, lang, start, body = match.group(1), match.group(2).lower(), number, []
            continue
        if match and match.group(1).startswith(fence) and not match.group(2):
            if lang in SHELL_LANGS:
                blocks.append(Block(name, start, lang, parse_block(name, start, body)))
            fence = None
            continue
        body.append(line)
    return blocks


def parse_block(doc: str, fence_line: int, lines: list[str]) -> list[Command]:
    """Commands of a block body (see the module docstring for the prompt rules)."""
    prompted = any(ln.lstrip().startswith("$ ") for ln in lines)
    commands: list[Command] = []
    current: Command | None = None
    continuing = False
    for offset, raw in enumerate(lines, start=1):
        number = fence_line + offset
        line = raw.rstrip()
        if continuing and current is not None:
            current.text += " " + line.strip().removesuffix("\\").strip()
            continuing = line.endswith("\\")
            continue
        stripped = line.lstrip()
        starts = stripped.startswith("$ ") if prompted else bool(stripped)
        if starts:
            text = stripped[2:] if prompted else stripped
            if not prompted and text.startswith("#"):
                continue  # a comment line
            current = Command(doc, number, text.removesuffix("\\").strip())
            commands.append(current)
            continuing = line.endswith("\\")
        elif current is not None and stripped:
            current.expected.append(stripped)
    return commands


@dataclass(frozen=True)
class ShellParts:
    """A command line split for the runner: code, comment, first pipe, other operators."""

    code: str
    comment: str
    pipe: int | None  # index of the first unquoted ``|`` in ``code``
    operators: bool  # ``;``, ``&``, ``>``, ``<``, backticks or ``$(`` outside quotes


def split_shell(text: str) -> ShellParts:
    """Scan ``text`` as bash would for quotes, comments, pipes and other operators."""
    quote: str | None = None
    pipe, operators, i = None, False, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch == "\\":
            i += 2
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return ShellParts(text[:i].rstrip(), text[i + 1 :].strip(), pipe, operators)
        elif ch == "|" and text[i : i + 2] != "||" and pipe is None:
            pipe = i
        elif ch in ";&<>`" or text[i : i + 2] == "$(":
            operators = True
        i += 1
    return ShellParts(text.rstrip(), "", pipe, operators)


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What one command did."""

    exit_code: int
    output: str  # stdout then stderr for subprocesses; interleaved for in-process runs
    stdout: str
    traceback: str | None = None
    seconds: float = 0.0


_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class Runner:
    """Runs documented commands in ``work`` with ``HOME=home`` (see the module docstring).

    Args:
        work: the scratch folder (current folder of every command).
        home: the scratch home (``~``).
        subprocess_sgma: run ``sgma`` as a process too (``SGMA_DOCS_SUBPROCESS=1``).
    """

    def __init__(self, work: Path, home: Path, subprocess_sgma: bool = False) -> None:
        self.work, self.home, self.subprocess_sgma = work, home, subprocess_sgma
        venv_bin = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "HOME": str(home),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "COLUMNS": str(COLUMNS),
            "PYTHONPATH": str(REPO),
        }
        self.log: list[tuple[str, Outcome]] = []

    # -- helpers
    def _bash(self, code: str, stdin: str | None = None, cwd: Path | None = None) -> Outcome:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", code],
                cwd=cwd or self.work,
                env=self.env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            return Outcome(
                124, f"{out}\n(killed after {COMMAND_TIMEOUT} s)", out, None, COMMAND_TIMEOUT
            )
        tb = proc.stderr if "Traceback (most recent call last)" in proc.stderr else None
        return Outcome(
            proc.returncode,
            proc.stdout + proc.stderr,
            proc.stdout,
            tb,
            time.perf_counter() - start,
        )

    def expand(self, code: str) -> list[str]:
        """The words bash makes of ``code`` (quotes removed, globs and ``~`` expanded)."""
        out = self._bash(f"printf '%s\\0' {code}")
        if out.exit_code:
            raise ValueError(f"bash cannot expand {code!r}: {out.output.strip()}")
        return out.stdout.split("\0")[:-1]

    # -- one command
    def run(self, text: str) -> Outcome:
        """Run one documented command line (comment and all)."""
        parts = split_shell(text)
        code = parts.code
        head = code if parts.pipe is None else code[: parts.pipe]
        tail = None if parts.pipe is None else code[parts.pipe + 1 :]
        words = shlex.split(head, comments=False, posix=True) if head.strip() else []
        env_words = [w for w in words[: _first_command(words)] if _ASSIGN.match(w)]
        program = words[len(env_words)] if len(words) > len(env_words) else ""
        if program == "make":
            targets = " ".join(shlex.quote(w) for w in words[len(env_words) + 1 :])
            outcome = self._bash(f"make -n {targets}", cwd=REPO)
        elif program == "sgma" and not self.subprocess_sgma and not _operators(head):
            argv = self.expand(head)
            env = dict(w.split("=", 1) for w in argv[: len(env_words)])
            argv = with_train_overrides(argv[len(env_words) + 1 :])
            outcome = self._in_process(argv, env)
            if tail is not None and outcome.exit_code == 0 and outcome.traceback is None:
                piped = self._bash(tail, stdin=outcome.stdout)
                piped.output = piped.output + _stderr_of(outcome)
                piped.seconds += outcome.seconds
                outcome = piped
        else:
            if program != "sgma" and parts.pipe is None and not parts.operators:
                code = with_bench_overrides(code)
            if program == "sgma":
                argv_words = shlex.split(head)[len(env_words) + 1 :]
                extra = with_train_overrides(argv_words)[len(argv_words) :]
                head = head + "".join(f" {shlex.quote(w)}" for w in extra)
                code = head if tail is None else f"{head} |{tail}"
            outcome = self._bash(code)
        self.log.append((text, outcome))
        return outcome

    def _in_process(self, argv: list[str], env: dict[str, str]) -> Outcome:
        from typer.testing import CliRunner

        from sgma_cli.cli.app import app
        from sgma_cli.cli.console import console, err_console

        start = time.perf_counter()
        widths = console.width, err_console.width
        console.width = err_console.width = COLUMNS
        try:
            with _chdir(self.work), _environ({"HOME": str(self.home), "COLUMNS": str(COLUMNS)}):
                result = CliRunner().invoke(app, argv, env=env, catch_exceptions=True)
        finally:
            console.width, err_console.width = widths
        tb = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            tb = "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
        return Outcome(
            result.exit_code,
            result.output,
            result.stdout,
            tb,
            time.perf_counter() - start,
        )


def _first_command(words: list[str]) -> int:
    n = 0
    while n < len(words) and _ASSIGN.match(words[n]):
        n += 1
    return n


def _operators(head: str) -> bool:
    return split_shell(head).operators


def _stderr_of(outcome: Outcome) -> str:
    return outcome.output.replace(outcome.stdout, "", 1) if outcome.stdout else outcome.output


def with_train_overrides(argv: list[str]) -> list[str]:
    """``argv`` (after ``sgma``) with :data:`TRAIN_SET` appended when it is a training run."""
    rest = [a for a in argv if a != "--debug"]
    if not rest or rest[0] != "train" or {"--print", "--help"} & set(rest):
        return list(argv)
    own = {argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv[:-1]) if a == "--set"}
    extra = [w for kv in TRAIN_SET if kv.split("=", 1)[0] not in own for w in ("--set", kv)]
    return [*argv, *extra]


def with_bench_overrides(code: str) -> str:
    """``code`` with :data:`BENCH_SET`'s arguments appended when it runs a listed benchmark."""
    for script, extra in BENCH_SET.items():
        if re.search(rf"(^|\s|/){re.escape(script)}(\s|$)", code):
            return f"{code} {extra}"
    return code


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------- checking
def _normalise(line: str) -> str:
    return " ".join(line.split())


def _pattern(expected: str) -> re.Pattern[str]:
    """``...`` matches any text, the spaces around it included (a wrapped line ends there)."""
    parts = [re.escape(p.strip()) for p in _normalise(expected).split("...")]
    return re.compile(r"\s*.*?\s*".join(parts))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """Expected lines not found in ``output`` in order (empty when all match)."""
    actual = [_normalise(ln) for ln in output.splitlines()]
    at = 0
    for i, line in enumerate(expected):
        pattern = _pattern(line)
        while at < len(actual) and not pattern.fullmatch(actual[at]):
            at += 1
        if at == len(actual):
            return expected[i:]
        at += 1
    return []


def check_outcome(command: Command, outcome: Outcome) -> str | None:
    """Why ``outcome`` does not satisfy the doc, or ``None``."""
    shown = f"$ {command.text}\n{outcome.output}"
    if outcome.traceback:
        return f"{command.where}: traceback\n{shown}\n{outcome.traceback}"
    if command.expects_error and outcome.exit_code == 0:
        return f"{command.where}: the doc shows an error, the command succeeded\n{shown}"
    if not command.expects_error and outcome.exit_code != 0:
        return f"{command.where}: exit code {outcome.exit_code}\n{shown}"
    missing = missing_lines(command.expected, outcome.output)
    if missing:
        return f"{command.where}: output lacks the doc's line {missing[0]!r}\n{shown}"
    return None


# ------------------------------------------------------------------------ static checks
def parse_sgma(argv: list[str]) -> str | None:
    """Parse ``sgma ARGV`` with the real command line, without running it; error or None.

    A path that must exist but does not is accepted (inputs exist only at run time).
    """
    import typer

    from sgma_cli.cli.app import app

    group = typer.main.get_command(app)
    try:
        ctx = group.make_context("sgma", list(argv))
        if not getattr(ctx, "_protected_args", []) and not ctx.args:
            return None  # `sgma --version` and the like
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = group.resolve_command(ctx, rest)  # type: ignore[attr-defined]
        if sub is None:
            return f"no such command {rest[:1]}"
        sub.make_context(name or "", rest, parent=ctx)
    except Exception as err:  # click's usage errors, whatever their class
        text = err.format_message() if hasattr(err, "format_message") else str(err)
        if "does not exist" in text:
            return None
        if type(err).__name__ in {"Exit", "SystemExit"}:
            return None
        return f"{type(err).__name__}: {text}"
    return None


def check_static(block: Block) -> list[str]:
    """Problems found without running anything: parse errors, unmarked GPU lines."""
    problems = []
    for command in block.commands:
        code = command.code
        if GPU_WORDS.search(code) and not command.gpu:
            problems.append(
                f"{command.where}: needs a GPU; end the line with a comment holding {GPU_MARK}"
            )
        parts = split_shell(command.text)
        head = code if parts.pipe is None else code[: parts.pipe]
        try:
            words = shlex.split(head)
        except ValueError as err:
            problems.append(f"{command.where}: not a shell command ({err})")
            continue
        words = words[_first_command(words) :]
        if words[:1] == ["sgma"]:
            error = parse_sgma(words[1:])
            if error:
                problems.append(f"{command.where}: `{code}` does not parse: {error}")
    return problems


# ----------------------------------------------------------------------------- fixtures
def link_repo_files(work: Path) -> None:
    """Link recipes/, benchmarks/, .venv, Makefile and pyproject.toml into ``work``."""
    for name in ("recipes", "benchmarks", ".venv", "Makefile", "pyproject.toml"):
        target = REPO / name
        if target.exists() and not (work / name).exists():
            (work / name).symlink_to(target)


class Fixtures:
    """Inputs shared by the documents, each built once per session under ``root``.

    Built through the same :class:`Runner` (so trainings are short); documents get
    copies or links of them (see :data:`SETUPS`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        link_repo_files(root)
        self.home = root / "home"
        self.home.mkdir(exist_ok=True)
        self.runner = Runner(root, self.home, os.environ.get("SGMA_DOCS_SUBPROCESS") == "1")
        self._built: dict[str, Path] = {}

    def sh(self, command: str) -> Outcome:
        """Run a setup command in the fixture folder; a failure stops the test."""
        outcome = self.runner.run(command)
        if outcome.exit_code or outcome.traceback:
            raise RuntimeError(f"setup `{command}` failed:\n{outcome.output}\n{outcome.traceback}")
        return outcome

    def _once(self, name: str, build: Callable[[Path], None]) -> Path:
        if name not in self._built:
            path = self.root / name
            if not path.exists():
                build(path)
            self._built[name] = path
        return self._built[name]

    def potsdam_raw(self) -> Path:
        """ISPRS Potsdam folders for scenes 2_10, 2_11 (train) and 2_13 (test), 512 px each."""
        return self._once("potsdam-raw", lambda p: make_potsdam3(p, 512))

    def flight_raw(self) -> Path:
        """The flight folder of docs/prepare.md (two 1024 px scenes, one SAR raster)."""
        return self._once("flight-raw", lambda p: make_flight(p, 1024))

    def potsdam_data(self) -> Path:
        """``sgma prepare`` of :meth:`potsdam_raw` with the preset (tiles of 512 px)."""
        raw = self.potsdam_raw()
        return self._once(
            "data-potsdam",
            lambda p: self.sh(f"sgma prepare {raw} --preset potsdam --out {p}"),
        )

    def potsdam_runs(self) -> Path:
        """Short runs of recipes/potsdam.toml: ``runs/sgma`` (SGMA) and ``runs/sum`` (baseline)."""
        data = self.potsdam_data()

        def build(path: Path) -> None:
            self.sh(f"sgma train recipes/potsdam.toml --data {data} --out {path}/sgma")
            self.sh(
                f"sgma train recipes/potsdam.toml --data {data} --out {path}/sum "
                "--set model.fusion=sum --set train.mas=false"
            )

        return self._once("runs-potsdam", build)

    def sample_scene(self) -> Path:
        """``sgma sample`` at the default size (1024 px, seed 0)."""
        return self._once("sample-scene", lambda p: self.sh(f"sgma sample {p}"))

    def small_scene(self) -> Path:
        """``sgma sample --size 256``: a scene folder where any small scene will do."""
        return self._once("small-scene", lambda p: self.sh(f"sgma sample {p} --size 256"))

    def sample_run(self) -> Path:
        """A short run of recipes/sample.toml on the prepared sample (``run/checkpoints/``)."""
        scene = self.sample_scene()

        def build(path: Path) -> None:
            self.sh(f"sgma prepare {scene} --out {path}/data")
            self.sh(f"sgma train recipes/sample.toml --data {path}/data --out {path}/run")

        return self._once("sample-run", build)


def make_potsdam3(root: Path, n: int) -> None:
    """``tests.data.conftest.make_potsdam`` (2_10 train, 2_13 test) plus 2_11, a copy of 2_10.

    Two official training scenes, so the preset's val hold-out takes a whole scene.
    """
    from tests.data.conftest import make_potsdam

    make_potsdam(root, n)
    for path in sorted(root.rglob("*_10*")):
        twin = path.with_name(path.name.replace("2_10", "2_11").replace("02_10", "02_11"))
        if twin != path and not twin.exists():
            shutil.copy(path, twin)


def make_flight(root: Path, n: int = 1024) -> None:
    """A flight folder: ``ortho/{a,b}.tif`` (0.5 m, side by side), ``dsm/{a,b}.tif`` (1 m),
    one ``s1.tif`` SAR raster (2 m) over both, ``buildings.gpkg`` (field ``kind``) and
    ``classes.json`` beside it."""
    import json

    import geopandas as gpd
    import numpy as np
    from affine import Affine
    from shapely.geometry import box

    from tests.data.conftest import UTM, X0, Y0, write_raster

    rng = np.random.default_rng(16)
    side = n * 0.5  # metres per scene
    for i, name in enumerate(("a", "b")):
        x0 = X0 + i * side
        rgb = rng.integers(0, 255, (3, n, n), dtype=np.uint8)
        write_raster(root / "ortho" / f"{name}.tif", rgb, UTM, Affine(0.5, 0, x0, 0, -0.5, Y0))
        dsm = rng.normal(5, 2, (1, n // 2, n // 2)).astype(np.float32)
        write_raster(root / "dsm" / f"{name}.tif", dsm, UTM, Affine(1.0, 0, x0, 0, -1.0, Y0))
    sar = rng.normal(-10, 2, (1, n // 4, n // 2)).astype(np.float32)
    write_raster(root / "s1.tif", sar, UTM, Affine(2.0, 0, X0, 0, -2.0, Y0))
    houses = [
        box(X0 + x, Y0 - side, X0 + x + side / 4, Y0) for x in np.arange(0, 2 * side, side / 2)
    ]
    garages = [
        box(X0 + x + side / 4, Y0 - side, X0 + x + side / 2, Y0)
        for x in np.arange(0, 2 * side, side / 2)
    ]
    frame = gpd.GeoDataFrame(
        {"kind": ["house"] * len(houses) + ["garage"] * len(garages)},
        geometry=houses + garages,
        crs=UTM,
    )
    frame.to_file(root / "buildings.gpkg", driver="GPKG")
    classes = [["house", [255, 0, 0]], ["garage", [0, 0, 255]]]
    (root / "classes.json").write_text(json.dumps(classes))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy(src, dst)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


# Per document: what its examples expect to find before its first block. Raw inputs are
# linked (examples only read them); what examples may write into is copied.
def _setup_readme(fx: Fixtures, work: Path, home: Path) -> None:
    _link(fx.potsdam_raw(), work / "potsdam")


def _setup_prepare(fx: Fixtures, work: Path, home: Path) -> None:
    _link(fx.potsdam_raw(), home / "data" / "potsdam")
    _link(fx.flight_raw(), home / "flight")
    _link(fx.small_scene(), work / "heldout")


def _setup_train(fx: Fixtures, work: Path, home: Path) -> None:
    _copy(fx.potsdam_data(), work / "data" / "potsdam")


def _setup_evaluate(fx: Fixtures, work: Path, home: Path) -> None:
    _copy(fx.potsdam_data(), work / "data" / "potsdam")
    _copy(fx.potsdam_runs(), work / "runs")
    run = fx.sample_run()
    _copy(fx.sample_scene(), work / "demo" / "scene")
    _copy(run / "run", work / "demo" / "run")
    _copy(run / "run" / "checkpoints" / "best.pt", work / "best.pt")


def _setup_predict(fx: Fixtures, work: Path, home: Path) -> None:
    run = fx.sample_run()
    scene = fx.sample_scene()
    _copy(scene, work / "demo" / "scene")
    _copy(run / "run", work / "demo" / "run")
    _copy(run / "run" / "checkpoints" / "best.pt", work / "best.pt")
    _copy(scene / "rgb.tif", work / "ortho_2024.tif")
    _copy(scene / "sar.tif", work / "s1_asc.tif")
    _copy(scene, work / "big_scene")


def _setup_sources(fx: Fixtures, work: Path, home: Path) -> None:
    """The sample scene and checkpoint, with its RGB and DSM cut into 2 x 2 COG tiles."""
    from tests.tiled_region import write_stac_items, write_tiles

    run = fx.sample_run()
    scene = fx.sample_scene()
    _copy(scene, work / "scene")
    _copy(run / "run" / "checkpoints" / "best.pt", work / "best.pt")
    ortho = write_tiles(scene / "rgb.tif", work / "ortho", "ortho", 2, set(), blocksize=256)
    write_tiles(scene / "dsm.tif", work / "dsm", "dsm", 2, set(), blocksize=256)
    write_stac_items(work / "items.json", tuple(ortho))


def _setup_regions(fx: Fixtures, work: Path, home: Path) -> None:
    """docs/sources.md's inputs plus ``aoi.geojson``, a polygon over part of the scene."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    _setup_sources(fx, work, home)
    x0, y0 = 368000.0, 5808000.0  # the sample scene's top-left corner (EPSG:32633)
    field = Polygon([(x0 + 40, y0 - 20), (x0 + 400, y0 - 60), (x0 + 300, y0 - 380)])
    gpd.GeoDataFrame(geometry=[field], crs="EPSG:32633").to_file(work / "aoi.geojson")


def _setup_export(fx: Fixtures, work: Path, home: Path) -> None:
    _setup_predict(fx, work, home)


#: Document -> setup(fixtures, work, home). Documents not listed start empty.
SETUPS: dict[str, Callable[[Fixtures, Path, Path], None]] = {
    "README.md": _setup_readme,
    "docs/prepare.md": _setup_prepare,
    "docs/train.md": _setup_train,
    "docs/evaluate.md": _setup_evaluate,
    "docs/predict.md": _setup_predict,
    "docs/cluster.md": _setup_predict,
    "docs/export.md": _setup_export,
    "docs/sources.md": _setup_sources,
    "docs/regions.md": _setup_regions,
}


@dataclass
class DocRun:
    """The result of running one document."""

    ran: list[tuple[Command, Outcome]] = field(default_factory=list)
    skipped: list[Command] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_doc(path: Path, fixtures: Fixtures, scratch: Path, stop_at_first: bool = True) -> DocRun:
    """Run every shell block of ``path`` in order in ``scratch/work`` (``HOME=scratch/home``)."""
    start = time.perf_counter()
    work, home = scratch / "work", scratch / "home"
    work.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    link_repo_files(work)
    name = doc_name(path)
    setup = SETUPS.get(name)
    if setup is not None:
        setup(fixtures, work, home)
    runner = Runner(work, home, os.environ.get("SGMA_DOCS_SUBPROCESS") == "1")
    result = DocRun()
    for block in collect_blocks(path):
        problems = check_static(block)
        if problems:
            result.failures += problems
            if stop_at_first:
                break
        for command in block.commands:
            if command.gpu:
                result.skipped.append(command)
                continue
            outcome = runner.run(command.text)
            result.ran.append((command, outcome))
            why = check_outcome(command, outcome)
            if why:
                result.failures.append(why)
                if stop_at_first:
                    result.seconds = time.perf_counter() - start
                    return result
    result.seconds = time.perf_counter() - start
    return result
