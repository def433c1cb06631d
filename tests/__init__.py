"""The project's tests. :data:`ROOT` and :data:`EXAMPLES` are where every tier finds its files."""

from pathlib import Path

#: The project's checkout.
ROOT = Path(__file__).resolve().parent.parent
#: The docs' runnable examples, which the tests import and run.
EXAMPLES = ROOT / "docs" / "examples"
