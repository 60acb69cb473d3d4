"""Import aiortc safely in a process that has already loaded TensorFlow.

pylibsrtp (aiortc's SRTP layer) links its own OpenSSL statically and exports its
symbols; TensorFlow, once imported, makes its own BoringSSL symbols global. Loaded
after TensorFlow, pylibsrtp's calls into its own OpenSSL then bind to BoringSSL and
``import aiortc`` dies with a segmentation fault at ``srtp_init()`` (seen with
tensorflow-cpu 2.21 and pylibsrtp 1.0 on Linux). Loading pylibsrtp with
``RTLD_DEEPBIND`` makes it resolve its own symbols first, whatever was loaded before.
Call :func:`import_aiortc` before anything imports aiortc or streamlit_webrtc.
"""

from __future__ import annotations

import os
import sys


def import_aiortc() -> None:
    """Import pylibsrtp (with RTLD_DEEPBIND where the platform has it), then aiortc."""
    if "pylibsrtp" not in sys.modules and hasattr(os, "RTLD_DEEPBIND") and hasattr(sys, "setdlopenflags"):
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            import pylibsrtp  # noqa: F401
        finally:
            sys.setdlopenflags(flags)
    import aiortc  # noqa: F401
