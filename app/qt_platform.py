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
        socket = _wayland_socket(env)
        return socket is not None and not os.path.exists(socket)  # Qt prefers Wayland there, X only as fallback
    return True


def missing_xcb_packages(loads=None) -> list[str]:
    """The packages whose libraries the xcb plugin needs and this machine cannot load."""
    loads = loads or _loads
    packages: list[str] = []
    for soname, package in XCB_LIBRARIES.items():
        if not loads(soname) and package not in packages:
            packages.append(package)
    return packages


def _x_fallback(env) -> bool:
    """Whether Qt, failing to reach a Wayland compositor, goes on to X: a DISPLAY is set, and
    an explicit QT_QPA_PLATFORM list (``wayland;xcb``) names xcb."""
    if not env.get("DISPLAY"):
        return False
    asked = [p.split(":")[0].strip() for p in env.get("QT_QPA_PLATFORM", "").split(";") if p.strip()]
    return not asked or "xcb" in asked


def _wayland_socket(env) -> str | None:
    """The socket Qt's Wayland plugin would connect to (None when Qt would not use Wayland)."""
    if not sys.platform.startswith("linux"):
        return None
    asked = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    name = env.get("WAYLAND_DISPLAY", "")
    if not name or not (asked == "wayland" or (not asked and env.get("XDG_SESSION_TYPE") == "wayland")):
        return None
    return name if os.path.isabs(name) else os.path.join(env.get("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid()), name)


def x_display_reachable(display: str, timeout: float = 3.0) -> bool:
    """Whether an X server answers at ``display`` (xcb_connect, as Qt's plugin does): a DISPLAY
    left from an ssh session or another user's, with no server there, made Qt abort (exit 134)
    while the QApplication was being built. True when it cannot be told (libxcb not loadable:
    :func:`missing_xcb_packages` says so), False when the connection fails or takes longer than
    ``timeout`` seconds (a remote display that does not answer)."""
    import threading

    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return True
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    answer: list[bool] = []

    def connect() -> None:
        conn = xcb.xcb_connect(display.encode(), None)
        try:
            answer.append(bool(conn) and xcb.xcb_connection_has_error(conn) == 0)
        finally:
            if conn:
                xcb.xcb_disconnect(conn)

    worker = threading.Thread(target=connect, name="fetaliqa-x-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answer and answer[0])


def display_problem(environ=None, loads=None, reachable=None) -> str | None:
    """One line saying why Qt would abort on this X display (libraries missing, or no X server
    answering there) and what to do; None when fine."""
    env = os.environ if environ is None else environ
    wayland = _wayland_socket(env)
    if wayland is not None and not os.path.exists(wayland) and not _x_fallback(env):
        return (f"no Wayland compositor answers at WAYLAND_DISPLAY={env.get('WAYLAND_DISPLAY')!r} ({wayland} does "
                "not exist): Qt cannot open a window there. Fix WAYLAND_DISPLAY, or run headless with "
                "QT_QPA_PLATFORM=offscreen.")
    if not will_use_xcb(env):
        return None
    missing = missing_xcb_packages(loads)
    if missing:
        return ("Qt cannot open a window on this X display: system libraries are missing; install them "
                f"with `sudo apt install {' '.join(missing)}` (or run headless with QT_QPA_PLATFORM=offscreen).")
    display = env.get("DISPLAY", "")
    if not (reachable or x_display_reachable)(display):
        return (f"no X server answers on the display DISPLAY={display!r} (a setting left from another session, or "
                "one this user may not use): Qt cannot open a window there. Unset DISPLAY or set it to your "
                "screen, or run headless with QT_QPA_PLATFORM=offscreen.")
    return None
