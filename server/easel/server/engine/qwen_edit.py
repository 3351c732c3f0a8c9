"""The processor of Qwen-Image-Edit(-Plus) folders, loaded without torchvision.

The edit pipelines hand their pictures and prompt to the Qwen2.5-VL text encoder through a ``processor``
component, a transformers ``Qwen2VLProcessor`` (tokenizer, image processor and video processor). transformers
makes its video processor with torchvision, which Easel does not install, so loading the folder as it is fails
there; the pipelines never give it a video. The engine therefore loads the folder's ``processor/`` as its tokenizer
and image processor (transformers' PIL one where torchvision is missing) in ``ImageProcessor``: the same pictures
and the same image tokens as the full processor, passed to ``DiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

PROCESSOR_CLASS = "Qwen2VLProcessor"


def processor_kwargs(folder: str, index: dict | None) -> dict[str, Any]:
    """``{"processor": …}`` for ``from_pretrained`` where the folder's model_index names a Qwen2VLProcessor
    component (the Qwen-Image-Edit pipelines); else nothing."""
    entry = (index or {}).get("processor")
    if not (isinstance(entry, (list, tuple)) and entry and entry[-1] == PROCESSOR_CLASS):
        return {}
    return {"processor": load_processor(os.path.join(folder, "processor"))}


def load_processor(path: str) -> Any:
    """The image-only Qwen2VLProcessor of a ``processor/`` folder (its tokenizer and image processor files)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    return image_processor_class()(image_processor=AutoImageProcessor.from_pretrained(path),
                                   tokenizer=AutoTokenizer.from_pretrained(path))


@cache
def image_processor_class() -> type:
    """``Qwen2VLProcessor`` without its video part (made once, on first use: it imports transformers)."""
    from transformers import ProcessorMixin, Qwen2VLProcessor

    class ImageProcessor(Qwen2VLProcessor):
        """A Qwen2VLProcessor of pictures only: its attributes are the tokenizer and the image processor."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any) -> None:
            # as Qwen2VLProcessor sets them, without handing a video processor on
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = (getattr(tokenizer, "image_token_id", None)
                                   or tokenizer.convert_tokens_to_ids(self.image_token))
            self.video_token_id = (getattr(tokenizer, "video_token_id", None)
                                   or tokenizer.convert_tokens_to_ids(self.video_token))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageProcessor
