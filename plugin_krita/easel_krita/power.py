"""The docker's "More" group: power features (docs/features.md) — LoRAs, variations, sketch guide
(ControlNet), SDXL refiner, the second pass and exact size, the selection mode and Expand canvas
(docs/imaging.md), Upscale ×2 (a new document) and the server's History.

Only widgets and reading them live here; requests, polarity, history and re-apply are
``shared.editing``'s; the work runs through the controller (``generate``, ``upscale``,
``fetch_history``, ``insert_history``), the same busy / progress / Cancel path as Generate.
Features the connected server does not offer are hidden and count as off.
"""

from __future__ import annotations

import random

from krita import Krita

from .qt import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    Qt,
    QVBoxLayout,
    QWidget,
    named,
)
from .shared import editing
from .shared.protocol import MAX_EXPAND, request_fields

PICK_LABEL = "add a LoRA…"
# the picker's order: auto, the new-content modes, refine last
MARGINS = ("left", "top", "right", "bottom")  # the request's expand, in its order


def _declared(box: QDoubleSpinBox, name: str) -> QDoubleSpinBox:
    """``box`` with the range and start value the protocol declares for request field ``name``
    (its low end where the default is None: "the server decides")."""
    field = request_fields()[name]
    box.setRange(field.spec.low, field.spec.high)
    box.setValue(field.spec.low if field.default is None else field.default)
    return box


def _row(layout, label: str, *widgets, stretch_first: bool = True) -> QWidget:
    """A labelled row in its own widget, so that a feature the server lacks hides as a whole."""
    row = QWidget()
    line = QHBoxLayout(row)
    line.setContentsMargins(0, 0, 0, 0)
    if label:
        line.addWidget(QLabel(label))
    for i, widget in enumerate(widgets):
        line.addWidget(widget, 1 if (i == 0 and stretch_first) else 0)
    layout.addWidget(row)
    return row


class PowerPanel(QWidget):
    """A "More" toggle and the group it shows; ``features()`` feeds Generate (``editing.build_request`` reads the guide)."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self._offered: tuple = ()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.more = named(QPushButton("More ▸"), "easel_more", "LoRAs, variations, sketch guide, refiner, "
                                                                "second pass, upscale, history")
        self.more.setCheckable(True)
        outer.addWidget(self.more)
        self.panel = named(QWidget(), "easel_more_panel")
        box = QVBoxLayout(self.panel)
        box.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.panel)
        self.panel.setVisible(False)

        self.loras = named(QLineEdit(), "easel_loras", "LoRAs and weights: name:weight, … (blank: none)")
        self.loras.setPlaceholderText("ink:0.8, soft:0.5")
        self.lora_pick = named(QComboBox(), "easel_lora_pick", "The server's LoRAs: pick one to add it")
        self.lora_row = _row(box, "LoRAs", self.loras, self.lora_pick)

        self.variation_seed = named(QLineEdit(), "easel_variation_seed",
                                     "Variation seed (blank: none): mixes its noise into the seed's")
        self.variation_seed.setPlaceholderText("variation seed")
        self.variation_strength = named(QDoubleSpinBox(), "easel_variation_strength",
                                         "0: the seed's image · 1: the variation seed's image")
        _declared(self.variation_strength, "variation_strength").setSingleStep(0.05)
        self.vary = named(QPushButton("Vary last"), "easel_vary",
                           "Keep the last result's seed, pick a new variation seed and generate")
        self.variation_row = _row(box, "Variation", self.variation_seed, self.variation_strength, self.vary)
        self.negative_widgets: list = []  # the docker's negative prompt row: hidden where the model has none

        self.sketch = named(QCheckBox("canvas as sketch guide"), "easel_sketch_guide",
                             "Send the visible canvas as the ControlNet guide (dark-on-light sketches are inverted)")
        self.control_model = named(QComboBox(), "easel_control_model", "ControlNet (from the server)")
        self.control_strength = named(QDoubleSpinBox(), "easel_control_strength", "ControlNet strength")
        _declared(self.control_strength, "control_strength").setSingleStep(0.1)
        self.control_row = _row(box, "", self.sketch, self.control_model, self.control_strength)

        self.refiner = named(QCheckBox("SDXL refiner"), "easel_refiner",
                              "Let the server's refiner finish the last steps (SDXL models only)")
        self.refiner_row = _row(box, "", self.refiner)

        self.second_pass = named(QCheckBox("2nd pass"), "easel_hires",
                                  "Regions well above the model's size: generate at its size, upscale, then refine "
                                  "at full size (off: one pass, resampled)")
        self.second_pass.setChecked(True)
        self.hires_strength = named(QDoubleSpinBox(), "easel_hires_strength",
                                     "How much the second pass repaints (auto: the model family's default)")
        _declared(self.hires_strength, "hires_strength").setSingleStep(0.05)
        self.hires_strength.setSpecialValueText("auto")  # shown at 0
        self.exact_size = named(QCheckBox("exact size"), "easel_exact_size",
                                 "Run the model at the region's own size instead of its native area (faster for "
                                 "small regions; no second pass)")
        _row(box, "", self.second_pass, self.hires_strength, self.exact_size, stretch_first=False)

        self.mode = named(QComboBox(), "easel_inpaint_mode", editing.selection_mode_help())
        for mode in editing.SELECTION_MODES:
            self.mode.addItem(mode.capitalize(), mode)
        _row(box, "Selection", self.mode)
        self.margins = {}
        for side in MARGINS:
            spin = named(QSpinBox(), f"easel_expand_{side}", f"Pixels Expand adds on the {side}")
            spin.setRange(0, MAX_EXPAND)
            spin.setSingleStep(32)
            self.margins[side] = spin
        self.expand = named(QPushButton("Expand"), "easel_expand",
                            "Grow the canvas by these margins (left, top, right, bottom) and paint them from the "
                            "prompt; the old pixels stay (control and region layers are not used)")
        _row(box, "Expand", *self.margins.values(), self.expand, stretch_first=False)

        self.upscale = named(QPushButton("Upscale ×2"), "easel_upscale",
                              "Upscale the visible canvas ×2, refined at the strength above; opens a new document")
        self.upscaler = named(QComboBox(), "easel_upscaler", "What enlarges before the refine: Lanczos, or an "
                               "upscaler model of the server (ESRGAN & co.; strength 0 = it alone)")
        self.history = named(QPushButton("History"), "easel_history", "List the server's recent jobs")
        _row(box, "", self.upscale, self.upscaler, self.history, stretch_first=False)
        self.history_list = named(QListWidget(), "easel_history_list",
                                   "The server's recent jobs: double-click to add one as a layer")
        self.history_list.setFixedHeight(90)
        self.history_list.setVisible(False)
        box.addWidget(self.history_list)

        self.more.toggled.connect(self._toggle)
        self.second_pass.toggled.connect(self._follow_size)
        self.exact_size.toggled.connect(self._follow_size)
        self.lora_pick.activated.connect(self._pick_lora)
        self.vary.clicked.connect(self._vary)
        self.upscale.clicked.connect(lambda: trigger_action("easel_upscale", self.controller.upscale))
        self.expand.clicked.connect(lambda: self.controller.generate(expand=self.expand_margins()))
        self.history.clicked.connect(self.controller.fetch_history)
        self.history_list.itemActivated.connect(
            lambda item: self.controller.insert_history(item.data(Qt.ItemDataRole.UserRole)))
        controller.history_listed.connect(self._show_history)

    # -- showing ------------------------------------------------------------------------------
    def _toggle(self, shown: bool) -> None:
        self.panel.setVisible(shown)
        self.more.setText("More ▾" if shown else "More ▸")

    def _follow_size(self, _checked: bool = False) -> None:
        """Exact size runs 1:1 (no second pass); the strength only matters with the second pass."""
        exact = self.exact_size.isChecked()
        self.second_pass.setEnabled(not exact)
        self.hires_strength.setEnabled(not exact and self.second_pass.isChecked())

    def refresh(self, model_id: str) -> None:
        """Offer what the server offers (``welcome``); called with the docker's refresh."""
        c = self.controller
        choices = editing.feature_choices(c.welcome, model_id)  # LoRAs: those of this model's family
        upscalers = editing.upscaler_choices(c.welcome)
        offered = (tuple(choices["loras"]), tuple(choices["control_models"]), tuple(upscalers))
        if offered != self._offered:
            self._offered = offered
            chosen = self.upscaler_id()
            self.upscaler.clear()
            for label, upscaler in upscalers:
                self.upscaler.addItem(label, upscaler)
            self.upscaler.setCurrentIndex(max(0, self.upscaler.findData(chosen)))
            self.lora_pick.clear()
            self.lora_pick.addItems([PICK_LABEL, *choices["loras"]])
            current = self.control_model.currentText()
            self.control_model.clear()
            self.control_model.addItems(choices["control_models"])
            if current in choices["control_models"]:
                self.control_model.setCurrentText(current)
        self.lora_row.setVisible(bool(choices["loras"]))
        self.control_row.setVisible(bool(choices["control_models"]))
        self.refiner_row.setVisible(choices["refiner"])
        self.refiner.setEnabled(choices["refiner"] and model_id in choices["refiner_models"])
        self.variation_row.setVisible(choices["variations"])  # per model (welcome features): e.g. FLUX.1 has
        for widget in self.negative_widgets:  # no negative prompt, SD3/Flux no sketch ControlNet or refiner
            widget.setVisible(choices["negative_prompt"])
        idle = not c.busy
        for button in (self.vary, self.upscale, self.history, self.expand):
            button.setEnabled(idle and c.connection_ok)
        self.vary.setEnabled(self.vary.isEnabled() and c.last_seed is not None)

    def _show_history(self, entries: list) -> None:
        self.history_list.clear()
        for entry in entries:
            item = QListWidgetItem(editing.history_label(entry), self.history_list)
            item.setData(Qt.ItemDataRole.UserRole, entry)
        self.history_list.setVisible(True)

    # -- reading ------------------------------------------------------------------------------
    def upscaler_id(self) -> str:
        """The chosen upscaler's id ("" = Lanczos)."""
        return self.upscaler.currentData() or ""

    def expand_margins(self) -> list[int]:
        """Expand's margins [left, top, right, bottom] in pixels."""
        return [self.margins[side].value() for side in MARGINS]

    def features(self) -> editing.Features:
        """The features set, those the server lacks as off. ValueError (plain words) for bad text."""
        choices = editing.feature_choices(self.controller.welcome)
        text = self.variation_seed.text().strip()
        try:
            variation = int(text) if text else -1
        except ValueError:
            raise ValueError(f"variation seed {text!r}: write a whole number, or leave it blank") from None
        control = self.control_model.currentText() if self.sketch.isChecked() and choices["control_models"] else ""
        return editing.features_from_ui(
            self.loras.text() if choices["loras"] else "", variation, self.variation_strength.value(),
            control, self.control_strength.value(), self.refiner.isChecked() and self.refiner.isEnabled(),
            available_loras=choices["loras"], second_pass=self.second_pass.isChecked(),
            hires_strength=self.hires_strength.value(), exact_size=self.exact_size.isChecked(),
            inpaint_mode=self.mode.currentData() or "")

    # -- reactions ------------------------------------------------------------------------------
    def _pick_lora(self, index: int) -> None:
        if index > 0:
            self.loras.setText(editing.add_lora(self.loras.text(), self.lora_pick.itemText(index)))
        self.lora_pick.setCurrentIndex(0)

    def _vary(self) -> None:
        """Keep the last seed (fixed), a new variation seed, a small strength when none is set."""
        docker = self.parent()
        while docker is not None and not hasattr(docker, "use_seed"):
            docker = docker.parent()
        if docker is None or self.controller.last_seed is None:
            return
        docker.use_seed(self.controller.last_seed)
        self.variation_seed.setText(str(random.randrange(2**31)))
        if self.variation_strength.value() == 0.0:
            self.variation_strength.setValue(0.2)
        trigger_action("easel_generate", self.controller.generate)


def trigger_action(action_id: str, fallback) -> None:
    """Trigger Krita's action ``action_id`` (the same path as menus and shortcuts), else call ``fallback``."""
    action = Krita.instance().action(action_id)
    if action is not None:
        action.trigger()
    else:
        fallback()
