"""Port a Keras program to rnnlab by rewriting only its import lines."""
from __future__ import annotations

import re
import textwrap


def port_imports(source: str) -> str:
    """``import keras`` / ``from tensorflow.keras.x import y`` / ``from keras import z`` -> rnnlab.keras.

    Only lines that start with ``import`` or ``from`` and mention keras change; the program's body
    stays as written.
    """
    out = []
    for line in textwrap.dedent(source).splitlines():
        stripped = line.strip()
        if stripped.startswith("import ") and "keras" in stripped:
            line = line.replace("import tensorflow.keras as keras", "import rnnlab.keras as keras")
            line = re.sub(r"^(\s*)import keras\b(?! as)", r"\1import rnnlab.keras as keras", line)
        elif stripped.startswith("from ") and "keras" in stripped:
            line = line.replace("from tensorflow import keras", "from rnnlab import keras")
            line = re.sub(r"from (tensorflow\.)?keras\b", "from rnnlab.keras", line)
        out.append(line)
    return "\n".join(out)
