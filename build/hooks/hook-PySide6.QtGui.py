"""PySide6.QtGui as PyInstaller's own hook collects it, less the Qt plugins that a widgets
application on an X11 or Wayland desktop never loads and that drag in big libraries:
the virtual keyboard (QtQuick + QML), the PDF image format (QtPdf), the GTK3 theme (GTK,
cairo, pango), EGLFS / LinuxFB / VNC / Vulkan-display platforms and the evdev/TUIO input
plugins (QtNetwork). Kept: xcb, wayland, offscreen and minimal platforms, image formats,
SVG icons, the XDG portal theme."""
from PyInstaller.utils.hooks.qt import add_qt6_dependencies

UNUSED = ("platforminputcontexts/libqtvirtualkeyboardplugin", "imageformats/libqpdf",
          "platformthemes/libqgtk3", "egldeviceintegrations/", "platforms/libqeglfs",
          "platforms/libqminimalegl", "platforms/libqlinuxfb", "platforms/libqvnc",
          "platforms/libqvkkhrdisplay", "generic/")

hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in binaries
            if not any(part in src.replace("\\", "/") for part in UNUSED)]
