"""The "Easel" docker: server, model, prompt and parameters, Generate/Cancel, progress, results."""

from __future__ import annotations

from krita import DockWidget

from . import controller as ctl
from . import krita_settings, live
from .control_layers import ControlPanel
from .power import PowerPanel, trigger_action
from .qt import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QIcon,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPixmap,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSize,
    QSlider,
    QSpinBox,
    Qt,
    QVBoxLayout,
    QWidget,
    named,
)
from .regions_panel import RegionPanel
from .server_panel import ServerPanel
from .shared import editing

GENERATE_TIP = "Selection: regenerate it · strength < 100%: refine the canvas · else: new image"
EDIT_TIP = "Edit model: the prompt is an instruction (\"make it night\") for the selection, else the whole canvas"

DOCKER_ID = "easel_docker"
DEFAULT_LABEL = "model default"


class EaselDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("Easel")
        self.controller = ctl.instance()
        self.live = live.instance()
        self._models_shown: tuple = ()
        self._build()
        self._restore()
        self.controller.changed.connect(self.refresh)
        self.controller.progress_changed.connect(self.refresh_progress)
        self.controller.history_added.connect(self._add_history)
        self.live.changed.connect(self.refresh_live)
        self.controller.add_docker(self)
        for item in self.controller.history:
            self._add_history(item)
        self.refresh()
        if not self.controller.connection_ok:
            self.controller.connect_server(self.url.text())

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QWidget(self)
        outer = QVBoxLayout(root)
        form = QFormLayout()
        outer.addLayout(form)

        self.url = named(QLineEdit(), "easel_url", "Address of the Easel server (easel serve)")
        self.connect_button = named(QPushButton("Connect"), "easel_connect")
        row = QHBoxLayout()
        row.addWidget(self.url, 1)
        row.addWidget(self.connect_button)
        form.addRow("Server", row)
        self.connection = named(QLabel(), "easel_connection")
        self.connection.setWordWrap(True)
        form.addRow("", self.connection)
        self.server_panel = ServerPanel(self.controller)  # start a local server when needed: command, arguments
        form.addRow("", self.server_panel)

        self.model = named(QComboBox(), "easel_model", "Model to paint with (from the server)")
        self.refresh_models = named(QPushButton("↻"), "easel_refresh_models",
                                    "Ask the server again: models and LoRAs added to its folders show up")
        self.refresh_models.setMaximumWidth(32)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh_models)
        form.addRow("Model", model_row)
        self.prompt = named(QPlainTextEdit(), "easel_prompt", "What to paint")
        self.prompt.setPlaceholderText("Describe the picture …")
        self.prompt.setFixedHeight(56)
        form.addRow("Prompt", self.prompt)
        self.negative = named(QLineEdit(), "easel_negative", "What to avoid")
        self.negative.setPlaceholderText("negative prompt")
        form.addRow("Negative", self.negative)
        negative_row = [self.negative, form.labelForField(self.negative)]

        self.strength = named(QSlider(Qt.Orientation.Horizontal), "easel_strength",
                               "100%: paint a new image (or new content in the selection); lower: refine the canvas")
        self.strength.setRange(1, 100)
        self.strength_label = named(QLabel(), "easel_strength_label")
        form.addRow("Strength", self.strength)
        form.addRow("", self.strength_label)

        self.steps = named(QSpinBox(), "easel_steps", "Denoising steps (0: the model's default)")
        self.steps.setRange(0, 200)
        self.steps.setSpecialValueText(DEFAULT_LABEL)
        self.guidance = named(QDoubleSpinBox(), "easel_guidance", "Prompt guidance (CFG)")
        self.guidance.setRange(-0.5, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setDecimals(1)
        self.guidance.setSpecialValueText(DEFAULT_LABEL)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)

        self.seed_random = named(QCheckBox("random"), "easel_seed_random", "A new seed for every generation")
        self.seed = named(QLineEdit(), "easel_seed", "Fixed seed: the same seed and settings repeat the image")
        self.seed.setPlaceholderText("seed")
        row = QHBoxLayout()
        row.addWidget(self.seed_random)
        row.addWidget(self.seed, 1)
        form.addRow("Seed", row)
        self.last_seed = named(QLabel("last seed: –"), "easel_last_seed")
        self.reuse_seed = named(QPushButton("Reuse"), "easel_reuse_seed", "Use the last seed as a fixed seed")
        row = QHBoxLayout()
        row.addWidget(self.last_seed, 1)
        row.addWidget(self.reuse_seed)
        form.addRow("", row)
        self.batch = named(QSpinBox(), "easel_batch", "Images per generation (one layer each)")
        self.batch.setRange(1, 8)
        form.addRow("Batch", self.batch)

        self.power = PowerPanel(self.controller)  # "More": LoRAs, variations, sketch guide, upscale, history
        self.power.negative_widgets = negative_row
        outer.addWidget(self.power)
        self.controls = ControlPanel(self.controller)  # control layers: the model's kinds, From image
        outer.addWidget(self.controls)
        self.regions = RegionPanel(self.controller)  # region layers: shown for models with regions
        outer.addWidget(self.regions)
        self.generate_button = named(QPushButton("Generate"), "easel_generate_button", GENERATE_TIP)
        self.cancel_button = named(QPushButton("Cancel"), "easel_cancel_button")
        row = QHBoxLayout()
        row.addWidget(self.generate_button, 2)
        row.addWidget(self.cancel_button, 1)
        outer.addLayout(row)
        self.live_button = named(QPushButton("Live"), "easel_live",
                                  "Live painting: the canvas regenerates as you paint (few steps, fixed seed), "
                                  "shown in the locked 'Easel Live' layer; off removes that layer")
        self.live_button.setCheckable(True)
        self.live_apply = named(QPushButton("Apply"), "easel_live_apply",
                                 "Copy the live result into a normal new layer")
        row = QHBoxLayout()
        row.addWidget(self.live_button, 2)
        row.addWidget(self.live_apply, 1)
        outer.addLayout(row)
        self.live_status = named(QLabel(), "easel_live_status")
        self.live_status.setWordWrap(True)
        outer.addWidget(self.live_status)
        self.progress = named(QProgressBar(), "easel_progress")
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        outer.addWidget(self.progress)
        self.status = named(QLabel(), "easel_status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)
        self.preview = named(QLabel(), "easel_preview", "Live preview of the steps, then the result")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setFixedSize(96, 96)
        self.results = named(QListWidget(), "easel_results", "This session's results: double-click to apply again")
        self.results.setViewMode(QListWidget.ViewMode.IconMode)
        self.results.setFlow(QListWidget.Flow.LeftToRight)
        self.results.setWrapping(False)
        self.results.setIconSize(QSize(64, 64))
        self.results.setFixedHeight(96)
        self.apply_button = named(QPushButton("Apply again"), "easel_apply_button",
                                   "Add the chosen result as a new layer in the active document")
        row = QHBoxLayout()
        row.addWidget(self.preview)
        row.addWidget(self.results, 1)
        outer.addLayout(row)
        outer.addWidget(self.apply_button)
        outer.addStretch(1)
        self.setWidget(root)

        self.connect_button.clicked.connect(lambda: self.controller.connect_server(self.url.text(), start=True))
        self.refresh_models.clicked.connect(lambda: self.controller.connect_server(self.url.text()))
        self.url.returnPressed.connect(lambda: self.controller.connect_server(self.url.text(), start=True))
        self.strength.valueChanged.connect(self._strength_changed)
        self.model.currentTextChanged.connect(self.power.refresh)  # the refiner fits SDXL models only
        self.model.currentTextChanged.connect(self.controls.refresh)  # the kinds of this model's ControlNets
        self.model.currentTextChanged.connect(self.regions.refresh)
        self.model.currentTextChanged.connect(self._edit_mode)  # an edit model: Generate reads Edit
        self.live_button.toggled.connect(self.live.toggle)
        self.live_apply.clicked.connect(self.live.apply)
        self.seed_random.toggled.connect(lambda random: self.seed.setEnabled(not random))
        self.reuse_seed.clicked.connect(self._reuse_seed)
        self.generate_button.clicked.connect(lambda: trigger_action("easel_generate", self.controller.generate))
        self.cancel_button.clicked.connect(lambda: trigger_action("easel_cancel", self.controller.cancel))
        self.results.itemActivated.connect(self._apply_item)
        self.apply_button.clicked.connect(lambda: self._apply_item(self.results.currentItem()))

    def _restore(self) -> None:
        params = krita_settings.load_params()
        self.url.setText(self.controller.url)
        self.prompt.setPlainText(params.prompt)
        self.negative.setText(params.negative_prompt)
        self.strength.setValue(round(params.strength * 100))
        self._strength_changed(self.strength.value())
        self.steps.setValue(params.steps or 0)
        self.guidance.setValue(self.guidance.minimum() if params.guidance is None else params.guidance)
        self.seed_random.setChecked(params.seed < 0)
        self.seed.setText(krita_settings.read_setting("seed_text", "") if params.seed < 0 else str(params.seed))
        self.seed.setEnabled(params.seed >= 0)
        self.batch.setValue(params.batch)
        self._saved_model = params.model

    # -- reading the widgets -------------------------------------------------------------------
    def params(self, remember: bool = True) -> editing.Params:
        """What the painter set (the controller calls this when Generate is pressed, live at every poll)."""
        seed = -1 if self.seed_random.isChecked() else editing.parse_seed(self.seed.text())
        if remember:
            krita_settings.write_setting("seed_text", self.seed.text())
        return editing.params_from_ui(self.prompt.toPlainText(), self.negative.text(), self.strength.value() / 100.0,
                                      self.steps.value(), self.guidance.value(), seed, self.batch.value(),
                                      self.model.currentText())

    # -- showing the controller's state ----------------------------------------------------------
    def refresh(self) -> None:
        c = self.controller
        if c.closing:
            return
        self.connection.setText(c.connection)
        self._style(self.connection, not c.connection_ok)
        ids, default = c.model_ids()
        if tuple(ids) != self._models_shown:
            wanted = self.model.currentText() or self._saved_model or default
            self.model.clear()
            self.model.addItems(ids)
            if wanted in ids:
                self.model.setCurrentIndex(ids.index(wanted))
            self._models_shown = tuple(ids)
            limits = (c.welcome or {}).get("limits", {})
            self.steps.setMaximum(int(limits.get("max_steps", self.steps.maximum())))
            self.batch.setMaximum(int(limits.get("max_batch", self.batch.maximum())))
        problems = editing.ui.model_problems(c.welcome or {})  # broken files in the server's models folders
        self.model.setToolTip("Model to paint with (from the server)" + (
            "\n\nThe server cannot use:\n" + "\n".join(problems) if problems else ""))
        self.generate_button.setEnabled(not c.busy)
        self.cancel_button.setEnabled(c.busy)
        self.status.setText(c.status)
        self._style(self.status, c.status_is_error)
        if c.last_seed is not None:
            self.last_seed.setText(f"last seed: {c.last_seed}")
        self.reuse_seed.setEnabled(c.last_seed is not None)
        self.power.refresh(self.model.currentText())
        self.controls.refresh(self.model.currentText())
        self.regions.refresh(self.model.currentText())
        self._edit_mode(self.model.currentText())
        self.refresh_progress()
        self.refresh_live()

    def refresh_live(self) -> None:
        lv = self.live
        if self.controller.closing:
            return
        if self.live_button.isChecked() != lv.active:
            self.live_button.blockSignals(True)
            self.live_button.setChecked(lv.active)
            self.live_button.blockSignals(False)
        self.live_apply.setEnabled(lv.shown is not None)
        self.live_status.setText(lv.status)
        self._style(self.live_status, lv.status_is_error)

    def refresh_progress(self) -> None:
        c = self.controller
        if c.closing:
            return
        self.progress.setValue(c.percent)
        self.progress.setFormat(f"%p% {c.progress_text}" if c.progress_text else "%p%")
        if c.preview is not None and c.busy:
            pixmap = QPixmap.fromImage(c.preview)
            self.preview.setPixmap(pixmap.scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.FastTransformation))

    @staticmethod
    def _style(label, error: bool) -> None:
        """Errors in red; style sheets are costly to re-apply, so only on a change."""
        wanted = "color: #c0392b;" if error else ""
        if label.styleSheet() != wanted:
            label.setStyleSheet(wanted)

    def _add_history(self, item) -> None:
        entry = QListWidgetItem(self.results)
        entry.setIcon(QIcon(QPixmap.fromImage(item.thumbnail)))
        entry.setToolTip(f"{item.name}\nat {item.result.x}, {item.result.y}: double-click to apply again")
        entry.setData(Qt.ItemDataRole.UserRole, item)
        while self.results.count() > ctl.HISTORY_SIZE:
            self.results.takeItem(0)
        self.results.scrollToItem(entry)
        if item.result.image is not None:
            self.preview.setPixmap(QPixmap.fromImage(item.thumbnail))

    # -- reactions -------------------------------------------------------------------------------
    def _strength_changed(self, value: int) -> None:
        self.strength_label.setText(editing.strength_text(value))

    def _edit_mode(self, model_id: str) -> None:
        """An edit model (FLUX.1 Kontext): the button reads Edit and sends the canvas or the selection to edit."""
        edit = editing.is_edit_model(self.controller.welcome, model_id)
        self.generate_button.setText("Edit" if edit else "Generate")
        self.generate_button.setToolTip(EDIT_TIP if edit else GENERATE_TIP)

    def _reuse_seed(self) -> None:
        if self.controller.last_seed is not None:
            self.use_seed(self.controller.last_seed)

    def use_seed(self, seed: int) -> None:
        self.seed_random.setChecked(False)
        self.seed.setText(str(seed))

    def _apply_item(self, entry) -> None:
        if entry is not None:
            self.controller.apply_again(entry.data(Qt.ItemDataRole.UserRole))

    def canvasChanged(self, canvas) -> None:  # Krita's API: another view is active
        self.controls.reload()
        self.regions.reload()
