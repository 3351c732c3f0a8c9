"""The model library: models folders scanned and described from file headers (docs/models.md).

``scan.Library`` lists a folder's checkpoints, diffusers folders, LoRAs, ControlNets and VAEs;
``detect.describe`` names a file's kind and family from its tensor names and shapes;
``header`` reads those without the weights; ``configs`` holds the diffusers configs Easel ships
for single files; ``layouts`` knows A1111, ComfyUI and flat folders.
"""

from .detect import Description, describe
from .scan import Entry, Library

__all__ = ["Description", "Entry", "Library", "describe"]
