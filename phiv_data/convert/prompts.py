"""Every prompt phiv's converters write, in one place (documented in the README).

Each is a ``str.format`` template; ``--prompt-template`` replaces it on the command line
with a string using the same fields.
"""

from __future__ import annotations

UCF101_PROMPT = "Classify the video into one of the following classes: {classes}."
"""The recipe's prompt; ``classes`` is the sorted class names joined by ", "."""
