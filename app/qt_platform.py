"""Can Qt open a window here? Checked before the QApplication exists.

Qt's X11 platform plugin (xcb) needs a set of system libraries that a minimal Linux desktop or
container may lack (libxcb-cursor0 above all, since Qt 6.5). Without them Qt prints "Could not
load the Qt platform plugin xcb" and aborts the process (exit 134) while the QApplication is
being built, too late for a readable message. This module tries to load each library the way
the plugin would (``dlopen`` through ctypes, so LD_LIBRARY_PATH and the loader cache count), and
names the distribution packages that provide the missing ones. It also checks the other ways Qt
aborts or complains as it starts: no compositor at WAYLAND_DISPLAY, a QT_QPA_PLATFORM that names
no platform or one that cannot start here, a C locale (Qt's four-line warning).
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


def platform_order(environ=None) -> list[str]:
    """The platform plugins Qt tries, in order, when the QApplication is built (the first that
    starts is used; when none does, Qt aborts the process). QT_QPA_PLATFORM, when set, is the
    list; otherwise Qt puts Wayland first whenever WAYLAND_DISPLAY is set or the session is a
    Wayland one (XDG_SESSION_TYPE=wayland), then X11. Qt 6 does so with WAYLAND_DISPLAY alone:
    a WAYLAND_DISPLAY left from another session, with no DISPLAY, made Qt abort (exit 134)."""
    env = os.environ if environ is None else environ
    forced = env.get("QT_QPA_PLATFORM", "")
    if forced:
        return [name for name in (p.split(":")[0].strip().lower() for p in forced.split(";")) if name]
    return (["wayland"] if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland" else []) + ["xcb"]


def will_use_xcb(environ=None) -> bool:
    """True when Qt would pick its X11 plugin: Linux, an X display, no other platform asked for
    or reachable before it."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or not env.get("DISPLAY"):
        return False
    for name in platform_order(env):
        if name == "xcb":
            return True
        if not name.startswith("wayland"):
            return False
        socket = _wayland_socket(env)
        if socket is not None and os.path.exists(socket):
            return False  # a compositor answers: Qt uses Wayland
    return False


def platform_plugins() -> list[str] | None:
    """The platform names this Qt has plugins for (``xcb``, ``wayland``, ``offscreen``...), read
    from PySide6's plugin folder without loading Qt; None when that cannot be told (another
    plugin folder given by QT_PLUGIN_PATH or QT_QPA_PLATFORM_PLUGIN_PATH, or no PySide6 found)."""
    import importlib.util

    if os.environ.get("QT_PLUGIN_PATH") or os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        return None
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    folders = [os.path.join(f, "Qt", "plugins", "platforms") for f in (spec.submodule_search_locations or [])] if spec else []
    names: set[str] = set()
    for folder in folders:
        try:
            files = os.listdir(folder)
        except OSError:
            continue
        for f in files:
            stem = f.split(".")[0]
            if stem.startswith("libq"):
                stem = stem[4:]
            elif stem.startswith("q"):  # (qxcb.dll and the like elsewhere)
                stem = stem[1:]
            if stem in ("wayland", "wayland-generic"):  # one plugin that answers to these three names
                names.update(("wayland", "wayland-egl", "wayland-brcm"))
            elif stem:
                names.add(stem)
    return sorted(names) or None


def missing_xcb_packages(loads=None) -> list[str]:
    """The packages whose libraries the xcb plugin needs and this machine cannot load."""
    loads = loads or _loads
    packages: list[str] = []
    for soname, package in XCB_LIBRARIES.items():
        if not loads(soname) and package not in packages:
            packages.append(package)
    return packages


def _wayland_socket(env) -> str | None:
    """The socket Qt's Wayland plugin would connect to (None when Qt would not try Wayland)."""
    if not sys.platform.startswith("linux") or not any(n.startswith("wayland") for n in platform_order(env)):
        return None
    name = env.get("WAYLAND_DISPLAY") or "wayland-0"  # (libwayland's default)
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


def display_problem(environ=None, loads=None, reachable=None, plugins=None) -> str | None:
    """One line saying why Qt would abort here and what to do; None when fine. Each platform Qt
    would try (:func:`platform_order`) is checked as Qt would meet it: a platform name this Qt
    has no plugin for (a typo in QT_QPA_PLATFORM), no compositor at WAYLAND_DISPLAY, no DISPLAY
    for a forced ``xcb``, X libraries missing, no X server answering at DISPLAY. When none would
    start, the line names the last one tried that was set up (a broken X display after a stale
    Wayland one, which Qt falls back to). ``plugins``: the platform names Qt has (default:
    :func:`platform_plugins`)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    forced = env.get("QT_QPA_PLATFORM", "")
    have = platform_plugins() if plugins is None else plugins
    order = platform_order(env)
    problems: list[str] = []
    for name in order:
        if have is not None and name not in have:
            if forced:
                problems.append(f"QT_QPA_PLATFORM={forced!r} names no platform this Qt has ({', '.join(have)}): "
                                "Qt cannot start. Unset QT_QPA_PLATFORM, or set it to one of these (offscreen: "
                                "headless, no window).")
        elif name.startswith("wayland"):
            socket = _wayland_socket(env)
            if socket is None or os.path.exists(socket):
                return None
            where = f"WAYLAND_DISPLAY={env.get('WAYLAND_DISPLAY')!r}" if env.get("WAYLAND_DISPLAY") else "the default socket"
            problems.append(f"no Wayland compositor answers at {where} ({socket} does not exist): Qt cannot open "
                            "a window there. Fix WAYLAND_DISPLAY, or run headless with QT_QPA_PLATFORM=offscreen.")
        elif name == "xcb":
            display = env.get("DISPLAY", "")
            if not display:
                if forced:  # (Qt's own last resort when nothing is set: no display at all, not a setting to fix)
                    problems.append(f"QT_QPA_PLATFORM={forced!r} asks for an X server at DISPLAY, and DISPLAY is "
                                    "not set: Qt cannot open a window. Set DISPLAY to your screen or unset "
                                    "QT_QPA_PLATFORM, or run headless with QT_QPA_PLATFORM=offscreen.")
                continue
            missing = missing_xcb_packages(loads)
            if missing:
                problems.append("Qt cannot open a window on this X display: system libraries are missing; install "
                                f"them with `sudo apt install {' '.join(missing)}` (or run headless with "
                                "QT_QPA_PLATFORM=offscreen).")
            elif not (reachable or x_display_reachable)(display):
                problems.append(f"no X server answers on the display DISPLAY={display!r} (a setting left from another "
                                "session, or one this user may not use): Qt cannot open a window there. Unset "
                                "DISPLAY or set it to your screen, or run headless with QT_QPA_PLATFORM=offscreen.")
            else:
                return None
        else:
            return None  # offscreen, minimal, vnc, eglfs...: not a display this can check
    return problems[-1] if problems else None


def utf8_locale_setting(environ=None, available=None) -> tuple[str, str] | None:
    """The variable and value that give Qt a UTF-8 locale where the locale is C or POSIX
    (``LC_ALL=C``, or nothing set), None where nothing is to change. Qt switches to C.UTF-8
    there itself, with a four-line warning on every run; set before the QApplication is made,
    C.UTF-8 differs from C only in the characters it reads, so the switch is the same, without
    the warning. LC_ALL overrides LC_CTYPE, so it is the one set when it is set. Another
    locale that is not UTF-8 (a user's Latin-1 one) is theirs: Qt's warning stays. ``available``:
    whether a locale name can be set (default: asked of the C library)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    current = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    if current not in ("C", "POSIX"):
        return None
    if not (available or _locale_available)("C.UTF-8"):
        return None
    return ("LC_ALL" if env.get("LC_ALL") else "LC_CTYPE"), "C.UTF-8"


def _locale_available(name: str) -> bool:
    import locale

    old = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, name)
    except locale.Error:
        return False
    finally:
        locale.setlocale(locale.LC_CTYPE, old)
    return True


def use_utf8_locale() -> None:
    """Apply :func:`utf8_locale_setting` to this process's environment (before the QApplication)."""
    setting = utf8_locale_setting()
    if setting is not None:
        os.environ[setting[0]] = setting[1]
