"""Registration with Krita: the Easel extension (actions) and the Easel docker."""

from __future__ import annotations

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from . import controller as ctl
from . import live
from .docker import DOCKER_ID, EaselDocker


class EaselExtension(Extension):
    """Creates the ``easel_generate``, ``easel_cancel`` and ``easel_upscale`` actions in every window."""

    def __init__(self, parent):
        super().__init__(parent)
        self.controller = ctl.instance()

    def setup(self) -> None:
        notifier = Krita.instance().notifier()
        notifier.applicationClosing.connect(self.controller.shutdown)
        notifier.applicationClosing.connect(live.instance().shutdown)

    def createActions(self, window) -> None:  # Krita's API
        generate = window.createAction("easel_generate", "Easel: Generate", "tools/scripts")
        generate.setToolTip("Generate with Easel: regenerate the selection, refine the canvas "
                            "(strength < 100%) or paint a new image")
        generate.triggered.connect(lambda *_: self.controller.generate())
        cancel = window.createAction("easel_cancel", "Easel: Cancel", "tools/scripts")
        cancel.triggered.connect(lambda *_: self.controller.cancel())
        upscale = window.createAction("easel_upscale", "Easel: Upscale ×2", "tools/scripts")
        upscale.setToolTip("Upscale the visible canvas ×2 with Easel (tiled, refined at the docker's strength) "
                           "into a new document")
        upscale.triggered.connect(lambda *_: self.controller.upscale(2))
        region = window.createAction("easel_region_from_selection", "Easel: New Region from Selection", "tools/scripts")
        region.setToolTip("A new layer filled where the selection is, added as an Easel region with the docker's "
                          "region prompt")
        region.triggered.connect(lambda *_: self._new_region())

    def _new_region(self) -> None:
        docker = self.controller.current_docker()
        if docker is not None:
            docker.regions.new_from_selection()
        else:
            self.controller.set_status("Open the Easel docker to type the region's prompt.", error=True)


def register() -> None:
    app = Krita.instance()
    app.addExtension(EaselExtension(app))
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, EaselDocker))
