"""Worker threads that talk to the server for a plugin (results reach the UI by callbacks)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..connection import Client, ClientError, JobCancelled, JobFailed, ProgressInfo, Result
from .core import PlannedRequest


class ClientTask(threading.Thread):
    """Runs ``work(client)`` on a worker thread over one connection: a generate with a control
    image (``generate_work``), ``fetch_history``, ``fetch_result``… ``on_done(value, error)`` is
    called exactly once, with error "cancelled" when cancelled.

    ``prepare(cancel_event)`` runs first on the worker thread (``ServerManager.hooks``: start the local
    server); ``explain(exc)`` turns a connection error into the message shown (a server that died)."""

    def __init__(self, url: str, work: Callable[[Client], object], *, job: str | None = None,
                 on_done: Callable[[object, str | None], None] | None = None, image_format: str = "rgba",
                 client_name: str = "easel-plugin", token: str | None = None, timeout: float = 10.0,
                 prepare: Callable[[threading.Event], object] | None = None,
                 explain: Callable[[BaseException], str] | None = None):
        super().__init__(daemon=True, name=f"easel-{job or 'task'}")
        self.work, self.job, self.on_done = work, job, on_done
        self.prepare, self.explain = prepare, explain or str
        self._client = Client(url, timeout=timeout, image_format=image_format, client_name=client_name, token=token)
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()
        if self.job:
            try:
                self._client.cancel(self.job)
            except ClientError:
                pass

    def run(self) -> None:
        value, error = None, None
        try:
            if self.prepare is not None:
                self.prepare(self._cancel)
            with self._client as client:
                if self._cancel.is_set():
                    raise JobCancelled(self.job)
                value = self.work(client)
        except JobCancelled:
            error = "cancelled"
        except JobFailed as exc:
            error = f"{exc} (field: {exc.field})" if exc.field else str(exc)
        except ClientError as exc:
            error = self.explain(exc)
        except Exception as exc:  # a plugin must never die with a traceback
            error = f"unexpected error: {exc!r}"
        if self.on_done:
            self.on_done(value, error)


def generate_work(planned: PlannedRequest, on_progress: Callable[[ProgressInfo], None] | None = None):
    """``ClientTask`` work that sends ``planned`` (with its ``control`` guide, if any) and waits; settings
    the model cannot use (hidden in the dialogs, e.g. a negative prompt on FLUX.1) are left out."""
    from .power import fit_attachments, fit_to_model

    def work(client: Client) -> Result:
        request = fit_to_model(planned.request, client.welcome)
        return client.generate(request, planned.image, planned.mask, on_progress,
                               control=getattr(planned, "control", None),
                               attachments=fit_attachments(request, planned.attachments))
    return work


class GenerationTask(ClientTask):
    """Runs one planned request on a worker thread; callbacks fire on that thread (marshal them
    to the UI). ``on_done(result, error)`` is called exactly once: with a Result, or with None and
    a plain-words error message ("cancelled" when the job was cancelled)."""

    def __init__(self, url: str, planned: PlannedRequest, *,
                 on_progress: Callable[[ProgressInfo], None] | None = None,
                 on_done: Callable[[Result | None, str | None], None] | None = None,
                 image_format: str = "rgba", client_name: str = "easel-plugin", token: str | None = None,
                 **hooks):
        super().__init__(url, generate_work(planned, on_progress), job=planned.request.job, on_done=on_done,
                         image_format=image_format, client_name=client_name, token=token, **hooks)
        self.url, self.planned, self.on_progress = url, planned, on_progress
