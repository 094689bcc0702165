"""Property-based fuzzing of every parser and reader at sgma's edge (issue 14).

Each target feeds generated input to the code that reads it and checks one property: the
call works, or it raises an :class:`~sgma_cli.errors.SgmaError` whose message is one line
naming the file or option; any other exception fails the test (hypothesis shrinks it to a
small example). Every test takes the ``fuzz`` fixture and puts it under ``@given``: it
applies the run's hypothesis profile and counts the examples. ``[quick]`` (the "quick"
profile of tests/conftest.py, 25 fixed examples) runs in ``make test``, ``[slow]`` (the
"slow" profile, 1,000 examples) under ``-m slow``::

    def test_target(fuzz: Fuzz) -> None:
        @given(st.text())
        @fuzz
        def check(text: str) -> None:
            works_or_sgma_error(parse, text)

        check()

After a ``-m slow`` run the terminal summary lists the examples each target ran.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

from sgma_cli.errors import SgmaError

T = TypeVar("T")


#: Examples run per fuzz test id, for the terminal summary.
EXAMPLES: dict[str, int] = {}


class Fuzz:
    """Decorator for a test's inner function: the profile's settings plus an example count."""

    def __init__(self, profile: str, nodeid: str) -> None:
        self.settings = settings(settings.get_profile(profile))
        self.profile = profile
        self.nodeid = nodeid
        EXAMPLES[nodeid] = 0

    def at_most(self, examples: int) -> Fuzz:
        """The same, capped at ``examples`` in the quick profile (for costly targets, so
        ``make test`` stays short; the slow profile keeps its 1,000)."""
        if self.profile == "quick":
            self.settings = settings(self.settings, max_examples=examples)
        return self

    def __call__(self, test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def counted(*args: Any, **kwargs: Any) -> None:
            EXAMPLES[self.nodeid] += 1
            test(*args, **kwargs)

        return self.settings(counted)


@pytest.fixture(params=["quick", pytest.param("slow", marks=pytest.mark.slow)])
def fuzz(request: pytest.FixtureRequest) -> Fuzz:
    """Put under ``@given``: the run's profile (``quick`` or ``slow``), examples counted."""
    return Fuzz(request.param, request.node.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After slow fuzz tests, one line each: how many generated examples it ran."""
    slow = {k: v for k, v in EXAMPLES.items() if k.endswith("[slow]")}
    if slow:
        terminalreporter.section("fuzz examples run")
        for nodeid, count in sorted(slow.items()):
            terminalreporter.write_line(f"{count:6d}  {nodeid}")


@pytest.fixture
def scratch(tmp_path: Path) -> Callable[[], Any]:
    """``with scratch() as folder:`` a fresh empty folder per generated example."""

    class _Scratch:
        def __enter__(self) -> Path:
            self.path = Path(tempfile.mkdtemp(dir=tmp_path))
            return self.path

        def __exit__(self, *exc: object) -> None:
            shutil.rmtree(self.path, ignore_errors=True)

    return _Scratch


def works_or_sgma_error(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``call(*args, **kwargs)``; ``None`` if it raised a one-line :class:`SgmaError`.

    Any other exception propagates (the fuzz test fails with it), and so does an
    ``SgmaError`` whose message spans several lines.
    """
    try:
        return call(*args, **kwargs)
    except SgmaError as err:
        text = str(err)
        assert text and "\n" not in text and "\r" not in text, f"not one line: {text!r}"
        return None
