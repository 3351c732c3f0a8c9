"""Every Qt import of the plugin, in one place: Krita 5 ships PyQt5, Krita 6 PyQt6.

The rest of the plugin imports Qt names only from here and uses scoped enums
(``Qt.AlignmentFlag.AlignLeft``), which both bindings accept, so a port is this file.
"""

try:
    from PyQt5.QtCore import QObject, QSize, Qt, QTimer
    from PyQt5.QtCore import pyqtSignal as Signal
    from PyQt5.QtGui import QColor, QIcon, QImage, QPainter, QPixmap
    from PyQt5.QtWidgets import (
        QApplication,
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QFormLayout,
        QHBoxLayout,
        QLabel,
        QLineEdit,
        QListWidget,
        QListWidgetItem,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QSizePolicy,
        QSlider,
        QSpinBox,
        QVBoxLayout,
        QWidget,
    )

    QT_API = "PyQt5"
except ImportError:  # Krita 6
    from PyQt6.QtCore import QObject, QSize, Qt, QTimer
    from PyQt6.QtCore import pyqtSignal as Signal
    from PyQt6.QtGui import QColor, QIcon, QImage, QPainter, QPixmap
    from PyQt6.QtWidgets import (
        QApplication,
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QFormLayout,
        QHBoxLayout,
        QLabel,
        QLineEdit,
        QListWidget,
        QListWidgetItem,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QSizePolicy,
        QSlider,
        QSpinBox,
        QVBoxLayout,
        QWidget,
    )

    QT_API = "PyQt6"


def qimage_bytes(image: "QImage") -> bytes:
    """The pixel bytes of a 32-bit QImage, rows packed (no scan-line padding)."""
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    data = bytes(ptr)
    if stride == width * 4:
        return data[: width * height * 4]
    return b"".join(data[y * stride : y * stride + width * 4] for y in range(height))


__all__ = [
    "QT_API", "QApplication", "QCheckBox", "QColor", "QComboBox", "QDoubleSpinBox", "QFormLayout",
    "QHBoxLayout", "QIcon", "QImage", "QLabel", "QLineEdit", "QListWidget", "QListWidgetItem",
    "QObject", "QPainter", "QPixmap", "QPlainTextEdit", "QProgressBar", "QPushButton", "QSize", "QSizePolicy",
    "QSlider", "QSpinBox", "QTimer", "QVBoxLayout", "QWidget", "Qt", "Signal", "qimage_bytes",
]
