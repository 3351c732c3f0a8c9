"""Server limits, announced to clients in ``welcome`` and enforced on every request."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..client.protocol import DEFAULT_MAX_MESSAGE_BYTES, GenerateRequest, ProtocolError


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # one websocket frame, either way
    max_side: int = 8192  # longest side of any image sent or generated
    max_pixels: int = 8192 * 8192  # width * height of any image
    max_batch: int = 8
    max_steps: int = 150
    max_prompt_chars: int = 4000
    max_jobs_per_client: int = 32

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def check_size(self, width: int, height: int, field: str) -> None:
        if width > self.max_side or height > self.max_side or width * height > self.max_pixels:
            raise ProtocolError(
                f"'{field}' is {width}x{height}; this server accepts at most {self.max_side} px a side and "
                f"{self.max_pixels} pixels. Send a smaller region (e.g. only the selection with some context)",
                field=field)

    def check_request(self, request: GenerateRequest) -> None:
        """Raise ProtocolError naming the field when a request exceeds these limits."""
        if request.batch > self.max_batch:
            raise ProtocolError(f"'batch' {request.batch} is over this server's limit of {self.max_batch}; "
                                f"ask for {self.max_batch} or fewer", field="batch")
        if request.steps is not None and request.steps > self.max_steps:
            raise ProtocolError(f"'steps' {request.steps} is over this server's limit of {self.max_steps}",
                                field="steps")
        for name in ("prompt", "negative_prompt"):
            if len(getattr(request, name)) > self.max_prompt_chars:
                raise ProtocolError(f"'{name}' is longer than {self.max_prompt_chars} characters", field=name)
        if request.width is not None or request.height is not None:
            self.check_size(request.width or 1, request.height or 1, "width" if request.width else "height")
