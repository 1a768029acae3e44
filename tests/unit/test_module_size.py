"""No module of stockctl grows past ``MAX_LINES`` (issue 15): past that, a module holds more than
one thing, and it is split along the seam between them."""

from __future__ import annotations

from pathlib import Path

import stockctl

MAX_LINES = 400


def test_no_module_is_over_the_limit() -> None:
    root = Path(stockctl.__file__).parent
    sizes = {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in root.rglob("*.py")
    }
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
