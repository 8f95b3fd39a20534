"""Where the tests find the shared fixture model files, the bundled examples and the repository, from any folder."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
EXAMPLES = ROOT / "notebooks_examples"
