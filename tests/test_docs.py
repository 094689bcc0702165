"""Every shell example of README.md and docs/*.md runs as written (issue 16).

The harness and its conventions are in :mod:`tests.docs_harness` and docs/doc-examples.md.

* ``make test`` runs the quick part: the harness's own parser and matcher, every block of
  every document checked without running it (each ``sgma`` line parses against the
  current command line, GPU lines are marked), and docs/profile.md and docs/sample.md run
  for real (meta-device models; a 1024 px sample, its tiles and a 2-step training): about
  10 s on an idle 2-core machine.
* ``make docs-test`` (marker ``docs``, called by ``.ci/run``) runs every document.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.docs_harness import (
    Command,
    Fixtures,
    Runner,
    check_outcome,
    check_static,
    collect_blocks,
    doc_files,
    doc_name,
    missing_lines,
    parse_block,
    run_doc,
    split_shell,
    with_train_overrides,
)

DOCS = doc_files()
#: Run for real by ``make test`` (seconds); everything else runs under ``make docs-test``.
QUICK_DOCS = ["docs/profile.md", "docs/sample.md"]


@pytest.fixture(scope="session")
def docs_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    """Fixture inputs shared by the documents (built on first use).

    ``SGMA_DOCS_CACHE=DIR`` keeps them in DIR across sessions (for editing docs; delete
    DIR after changing a fixture).
    """
    cache = os.environ.get("SGMA_DOCS_CACHE")
    return Fixtures(Path(cache) if cache else tmp_path_factory.mktemp("docs-fixtures"))


def _report(name: str, result: object) -> str:
    ran = getattr(result, "ran", [])
    skipped = getattr(result, "skipped", [])
    slow = sorted(ran, key=lambda r: -r[1].seconds)[:3]
    lines = [f"{name}: {len(ran)} commands in {getattr(result, 'seconds', 0):.1f} s"]
    lines += [f"  {o.seconds:6.1f} s  {c.text[:90]}" for c, o in slow]
    lines += [f"  skipped [gpu]: {c.where} {c.code[:80]}" for c in skipped]
    return "\n".join(lines)


# ------------------------------------------------------------------ the harness itself
class TestParsing:
    def test_prompted_block_with_output_and_continuation(self) -> None:
        body = [
            "$ sgma prepare a \\",
            "      --out b   # a comment",
            "plan: ...",
            "",
            "$ ls b",
            "dataset.toml",
        ]
        commands = parse_block("x.md", 10, body)
        assert [c.text for c in commands] == ["sgma prepare a --out b   # a comment", "ls b"]
        assert [c.line for c in commands] == [11, 15]
        assert commands[0].expected == ["plan: ..."] and commands[1].expected == ["dataset.toml"]
        assert commands[0].code == "sgma prepare a --out b"

    def test_block_without_prompts_is_all_commands(self) -> None:
        body = ["# a comment line", "sgma sample s/   # offline", "make test"]
        assert [c.text for c in parse_block("x.md", 1, body)] == [
            "sgma sample s/   # offline",
            "make test",
        ]

    def test_collect_skips_other_languages(self, tmp_path: Path) -> None:
        doc = tmp_path / "d.md"
        doc.write_text(
            "```text\n$ sgma no\n```\n\n```console\n$ sgma sample s\n```\n"
            "```python\nprint(1)\n```\n```bash\nsgma profile\n```\n"
        )
        blocks = collect_blocks(doc)
        assert [(b.lang, b.line, [c.text for c in b.commands]) for b in blocks] == [
            ("console", 5, ["sgma sample s"]),
            ("bash", 11, ["sgma profile"]),
        ]

    def test_split_shell(self) -> None:
        parts = split_shell("sgma evaluate x --subsets 'a|b;c' --json | jq .summary  # x | y")
        assert parts.code == "sgma evaluate x --subsets 'a|b;c' --json | jq .summary"
        assert parts.comment == "x | y" and not parts.operators
        assert parts.code[parts.pipe :] == "| jq .summary"  # type: ignore[misc]
        assert split_shell("a > b").operators and split_shell('echo "#x" # c').comment == "c"

    def test_gpu_mark_and_error_expectation(self) -> None:
        gpu = Command("x.md", 1, "sgma train r.toml --gpus 4   # 4 GPUs [gpu]")
        error = Command("x.md", 2, "sgma sample s --size 3", ["error: --size must be ..."])
        assert gpu.gpu and not error.gpu and error.expects_error and not gpu.expects_error

    def test_train_overrides_keep_the_examples_keys(self) -> None:
        argv = with_train_overrides(["train", "r.toml", "--set", "model.backbone=resnet18"])
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert sets[0] == "model.backbone=resnet18" and "schedule.max_steps=2" in sets
        assert not any(s.startswith("model.backbone=test") for s in sets)
        assert with_train_overrides(["train", "r.toml", "--print"]) == [
            "train",
            "r.toml",
            "--print",
        ]
        assert with_train_overrides(["evaluate", "x.pt"]) == ["evaluate", "x.pt"]


class TestMatching:
    OUTPUT = "plan: 3 tiles\n│ building   │  12,345 │ 1.2 % │\nwrote out: 3 new tiles (train 3)\n"

    def test_in_order_with_ellipsis_and_spaces(self) -> None:
        assert missing_lines(["plan: ... tiles", "│ building │ ... │ ... │"], self.OUTPUT) == []
        assert missing_lines(["wrote out: ...", "plan: ..."], self.OUTPUT) == ["plan: ..."]
        assert missing_lines(["│ tree │ ... │"], self.OUTPUT) == ["│ tree │ ... │"]

    def test_outcomes(self) -> None:
        from tests.docs_harness import Outcome

        ok = Command("x.md", 3, "sgma x", ["wrote out: ..."])
        assert check_outcome(ok, Outcome(0, self.OUTPUT, self.OUTPUT)) is None
        assert "exit code 1" in str(check_outcome(ok, Outcome(1, self.OUTPUT, "")))
        err = Command("x.md", 4, "sgma y", ["error: bad"])
        assert "succeeded" in str(check_outcome(err, Outcome(0, "error: bad", "")))
        assert check_outcome(err, Outcome(2, "error: bad\n", "")) is None
        assert "traceback" in str(check_outcome(ok, Outcome(1, "", "", "Traceback ...")))

    def test_runner_pipes_and_expands(self, tmp_path: Path) -> None:
        (tmp_path / "a b").mkdir()
        runner = Runner(tmp_path, tmp_path)
        assert runner.expand("sgma x 'a b' ~/y *") == ["sgma", "x", "a b", f"{tmp_path}/y", "a b"]
        outcome = runner.run("sgma --version | tr a-z A-Z   # shouting")
        assert outcome.exit_code == 0 and outcome.output.startswith("SGMA ")
        assert runner.run("sgma sample s --size 3").exit_code == 2


# ------------------------------------------------------------ every doc, not running it
@pytest.mark.parametrize("doc", DOCS, ids=doc_name)
def test_examples_parse(doc: Path) -> None:
    """Each ``sgma`` line of ``doc`` parses with today's command line; GPU lines marked."""
    problems = [p for block in collect_blocks(doc) for p in check_static(block)]
    assert not problems, "\n".join(problems)


def test_every_doc_has_runnable_examples_or_none() -> None:
    """A new page is picked up without registering it: the list is the folder."""
    names = [doc_name(d) for d in DOCS]
    assert names[0] == "README.md" and "docs/sample.md" in names


# ------------------------------------------------------------------- running the docs
@pytest.mark.parametrize("name", QUICK_DOCS)
def test_quick_docs_run(name: str, docs_fixtures: Fixtures, tmp_path: Path) -> None:
    """The few documents cheap enough for ``make test`` run for real."""
    result = run_doc(Path(__file__).resolve().parents[1] / name, docs_fixtures, tmp_path)
    print(_report(name, result))
    assert not result.failures, "\n\n".join(result.failures)
    assert result.ran


@pytest.mark.docs
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("doc", DOCS, ids=doc_name)
def test_doc_runs(doc: Path, docs_fixtures: Fixtures, tmp_path: Path) -> None:
    """Every shell example of ``doc`` runs as written, in order (``make docs-test``)."""
    result = run_doc(
        doc, docs_fixtures, tmp_path, stop_at_first=not os.environ.get("SGMA_DOCS_ALL")
    )
    print(_report(doc_name(doc), result))
    assert not result.failures, "\n\n".join(result.failures)
