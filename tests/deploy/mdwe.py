"""Run a command under the kernel's MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux 6.3+).

systemd's MemoryDenyWriteExecute=yes forbids mappings that are writable and executable and
making memory executable later; PR_MDWE_REFUSE_EXEC_GAIN is the kernel's own version of the
same rule, inherited across fork and execve, so a test can check without systemd that the
daemon and its libraries live with it.
"""

from __future__ import annotations

import ctypes
import errno
import sys

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1

#: argv prefix: ``[*MDWE_PREFIX, program, args...]`` runs program under MDWE.
MDWE_PREFIX = [sys.executable, "-m", "tests.deploy.mdwe"]


def supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (asked without changing anything)."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.prctl(PR_GET_MDWE, 0, 0, 0, 0)
    return result >= 0 or ctypes.get_errno() != errno.EINVAL


def enable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) failed")


if __name__ == "__main__":
    import os

    enable()
    os.execvp(sys.argv[1], sys.argv[1:])
