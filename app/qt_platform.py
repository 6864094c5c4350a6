"""Can Qt open a window here? Checked before the QApplication exists.

Qt's X11 platform plugin (xcb) needs a set of system libraries that a minimal Linux desktop or
container may lack (libxcb-cursor0 above all, since Qt 6.5). Without them Qt prints "Could not
load the Qt platform plugin xcb" and aborts the process (exit 134) while the QApplication is
being built, too late for a readable message. This module tries to load each library the way
the plugin would (``dlopen`` through ctypes, so LD_LIBRARY_PATH and the loader cache count), and
names the distribution packages that provide the missing ones.
"""

from __future__ import annotations

import ctypes
import os
import sys

# The shared libraries Qt 6's xcb platform plugin (libqxcb.so and libQt6XcbQpa.so) links to,
# beyond the C runtime, with the Debian/Ubuntu package that provides each one.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libglib-2.0.so.0": "libglib2.0-0",
}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def will_use_xcb(environ=None) -> bool:
    """True when Qt would pick its X11 plugin: Linux, an X display, no other platform asked for."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return False
    asked = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if asked and asked != "xcb":
        return False
    if not env.get("DISPLAY"):
        return False
    if not asked and env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return False  # Qt prefers its Wayland plugin in a Wayland session
    return True


def missing_xcb_packages(loads=None) -> list[str]:
    """The packages whose libraries the xcb plugin needs and this machine cannot load."""
    loads = loads or _loads
    packages: list[str] = []
    for soname, package in XCB_LIBRARIES.items():
        if not loads(soname) and package not in packages:
            packages.append(package)
    return packages


def display_problem(environ=None, loads=None) -> str | None:
    """One line saying what to install when Qt would abort on this X display; None when fine."""
    if not will_use_xcb(environ):
        return None
    missing = missing_xcb_packages(loads)
    if not missing:
        return None
    return ("Qt cannot open a window on this X display: system libraries are missing; install them "
            f"with `sudo apt install {' '.join(missing)}` (or run headless with QT_QPA_PLATFORM=offscreen).")
