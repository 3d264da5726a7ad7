"""Safe loading: no code path in rnnlab unpickles anything (a model file someone sent you cannot run code)."""
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rnnlab"
UNSAFE = [
    (r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.load", "pickle"),
    (r"\bimport dill\b|\bcloudpickle\b|\bjoblib\.load", "pickle-based serialiser"),
    (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load without weights_only=True"),
    (r"allow_pickle\s*=\s*True", "numpy allow_pickle=True"),
    (r"(?<![.\w])(eval|exec)\(", "eval/exec of data"),
]
ALLOWED_EXEC = {"tasks/bench_fit.py"}  # runs its own embedded benchmark program, never user data


def test_no_unpickling_anywhere_in_the_package():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        for pattern, what in UNSAFE:
            if what.startswith("eval") and rel in ALLOWED_EXEC:
                continue
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{rel}:{line}: {what}")
    assert not problems, "unsafe loading found:\n" + "\n".join(problems)
