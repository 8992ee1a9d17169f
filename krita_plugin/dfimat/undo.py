"""One named undo step for a DFIMat round in Krita ("DFIMat Select Person", "DFIMat Refine").

Krita's scripting API has no undo grouping: every node added or removed is its own step, named by Krita ("Add
Layer", "Remove Layer"), so a refinement (the new mask in, the old one out) would be two anonymous steps. Krita's
undo stack (``KUndo2QStack``) groups commands under a name with ``beginMacro``/``endMacro``, but Python cannot
reach it. This module finds the stack the way the Undo History docker sees it (its model holds the active
document's stack), checks that what it found is that stack, and calls the two methods from Krita's own library.

Every check must pass before anything is called; otherwise ``named_step`` changes nothing and the round keeps
Krita's own steps (another Krita build, no History docker, a non-Linux library layout). Call on the GUI thread.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

# KisUndoModel (plugins/dockers/historydocker) is a QAbstractItemModel (a vtable pointer and Qt's d-pointer)
# whose own members start with a bool, then the KUndo2QStack* it shows, then its QItemSelectionModel*. The
# selection model is also the docker view's, which is how the layout is confirmed before the stack is touched.
_STACK_OFFSET = 24
_SELECTION_MODEL_OFFSET = 32
_BEGIN = "_ZN12KUndo2QStack10beginMacroERK17KUndo2MagicString"
_END = "_ZN12KUndo2QStack8endMacroEv"
_MAGIC_STRING = "_ZN17KUndo2MagicStringC1ERK7QString"
_QSTRING_FROM_UTF8 = "_ZN7QString15fromUtf8_helperEPKci"


def _loaded(fragment: str) -> str | None:
    """The path of a shared library already loaded into Krita whose file name contains ``fragment``."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if fragment in path.rsplit("/", 1)[-1]:
                    return path
    except OSError:
        return None
    return None


def _in_krita_library(address: int) -> bool:
    """Whether ``address`` lies in memory mapped from one of Krita's own libraries (where vtables live)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) < 6 or "libkrita" not in fields[5]:
                    continue
                start, end = (int(v, 16) for v in fields[0].split("-"))
                if start <= address < end:
                    return True
    except OSError:
        return False
    return False


def _functions():
    command, core = _loaded("libkritacommand.so"), _loaded("libQt5Core.so")
    if command is None or core is None:
        return None
    try:
        lib, qt = ctypes.CDLL(command), ctypes.CDLL(core)
        begin, end, magic = getattr(lib, _BEGIN), getattr(lib, _END), getattr(lib, _MAGIC_STRING)
        from_utf8 = getattr(qt, _QSTRING_FROM_UTF8)
    except (OSError, AttributeError):
        return None
    begin.argtypes, begin.restype = [ctypes.c_void_p, ctypes.c_void_p], None
    end.argtypes, end.restype = [ctypes.c_void_p], None
    magic.argtypes, magic.restype = [ctypes.c_void_p, ctypes.c_void_p], None
    # QString is returned through a hidden pointer to the caller's storage (it is not trivially copyable).
    from_utf8.argtypes, from_utf8.restype = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int], ctypes.c_void_p
    return begin, end, magic, from_utf8


def _history_stack(window) -> int | None:
    """The address of the undo stack the Undo History docker shows (the active view's document), or None."""
    from PyQt5 import sip
    from PyQt5.QtCore import QObject
    from PyQt5.QtWidgets import QAbstractItemView, QDockWidget

    for dock in window.qwindow().findChildren(QDockWidget):
        if dock.objectName() != "History":
            continue
        for view in dock.findChildren(QAbstractItemView):
            model = view.model()
            if model is None or model.metaObject().className() != "KisUndoModel":
                continue
            base = sip.unwrapinstance(model)
            selection = view.selectionModel()
            if selection is None or ctypes.c_void_p.from_address(base + _SELECTION_MODEL_OFFSET).value != \
                    sip.unwrapinstance(selection):
                return None
            pointer = ctypes.c_void_p.from_address(base + _STACK_OFFSET).value
            if not pointer or not _in_krita_library(ctypes.c_void_p.from_address(pointer).value or 0):
                return None
            stack = sip.wrapinstance(pointer, QObject)
            if not stack.inherits("KUndo2QStack"):
                return None
            parent = stack.parent()
            if parent is None or parent.metaObject().className() != "KisDocument":
                return None
            return pointer
    return None


def _is_active(doc) -> bool:
    from krita import Krita

    app = Krita.instance()
    window = app.activeWindow()
    view = window.activeView() if window is not None else None
    shown = view.document() if view is not None else None
    return shown is not None and shown.rootNode().uniqueId() == doc.rootNode().uniqueId()


@contextmanager
def named_step(doc, title: str) -> Iterator[bool]:
    """Group every undo command made inside the block into one step called ``title``; yields whether it could.

    The block's Krita calls must have finished (``doc.waitForDone()``) before it ends, so that their commands
    are on the stack when the step closes.
    """
    from krita import Krita

    functions = _functions()
    window = Krita.instance().activeWindow()
    pointer = _history_stack(window) if functions is not None and window is not None and _is_active(doc) else None
    if pointer is None:
        yield False
        return
    begin, end, magic, from_utf8 = functions
    text = title.encode("utf-8")
    # Never destroyed: the stack copies the name into its macro, and leaving these few bytes of string data to
    # Qt is safer than calling an inline destructor from here.
    qstring = ctypes.create_string_buffer(64)
    name = ctypes.create_string_buffer(64)
    from_utf8(ctypes.addressof(qstring), text, len(text))
    magic(ctypes.addressof(name), ctypes.addressof(qstring))
    begin(pointer, ctypes.addressof(name))
    try:
        yield True
    finally:
        doc.waitForDone()
        end(pointer)
