"""Every Qt import of the plugin, in one place: Krita 5 ships PyQt5, Krita 6 PyQt6.

The rest of the plugin imports Qt names only from here and uses scoped enums
(``Qt.AlignmentFlag.AlignLeft``), which both bindings accept, so a port is this file.
"""

import importlib

_NAMES = {
    "QtCore": ("QByteArray", "QObject", "QSize", "Qt", "QTimer", "QUuid", "pyqtSignal"),
    "QtGui": ("QColor", "QIcon", "QImage", "QPainter", "QPixmap"),
    "QtWidgets": ("QApplication", "QCheckBox", "QComboBox", "QDoubleSpinBox", "QFormLayout", "QHBoxLayout",
                  "QLabel", "QLineEdit", "QListWidget", "QListWidgetItem", "QPlainTextEdit", "QProgressBar",
                  "QPushButton", "QSizePolicy", "QSlider", "QSpinBox", "QVBoxLayout", "QWidget"),
}


def _load() -> str:
    """Bind the names above from PyQt5 (Krita 5) or PyQt6 (Krita 6); returns the binding's name."""
    for api in ("PyQt5", "PyQt6"):
        try:
            modules = {sub: importlib.import_module(f"{api}.{sub}") for sub in _NAMES}
        except ImportError:
            continue
        for sub, names in _NAMES.items():
            globals().update({name: getattr(modules[sub], name) for name in names})
        return api
    raise ImportError("Easel needs PyQt5 or PyQt6 (Krita's Python scripting); neither could be imported")


QT_API = _load()
Signal = pyqtSignal  # noqa: F821 - bound by _load


def named(widget, name: str, tip: str = ""):
    """Give ``widget`` its objectName (what tests and style sheets find it by), tooltip and accessible name."""
    widget.setObjectName(name)
    if tip:
        widget.setToolTip(tip)
    widget.setAccessibleName(name.replace("easel_", "").replace("_", " "))
    return widget


def qimage_bytes(image: "QImage") -> bytes:  # noqa: F821 - bound by _load
    """The pixel bytes of a 32-bit QImage, rows packed (no scan-line padding)."""
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    data = bytes(ptr)
    if stride == width * 4:
        return data[: width * height * 4]
    return b"".join(data[y * stride : y * stride + width * 4] for y in range(height))


__all__ = ["QT_API", "Signal", "named", "qimage_bytes",
           *(name for names in _NAMES.values() for name in names if name != "pyqtSignal")]
