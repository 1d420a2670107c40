"""A failpoint for tests/test_faults.py, loaded by every Python process of an attempt that the
test means to kill while it writes a checkpoint (the test puts this folder first on PYTHONPATH
and sets FDRL_STOP_AT_CHECKPOINT=N).

The process stops itself (SIGSTOP) when it is about to give its N-th checkpoint of this run its
final name: the checkpoint's temporary file is on disk, written and flushed, and the name
`step-XXXXXX.pt` does not exist yet. The test then SIGKILLs the process tree there. The process,
its files and the kill are real; the failpoint only chooses the moment, which a test racing a
write of a few milliseconds against a busy machine cannot. Without the variable it does nothing.
"""

import os
import re
import signal

_STOP_AT = int(os.environ.get("FDRL_STOP_AT_CHECKPOINT", "0"))

if _STOP_AT > 0:
    _CHECKPOINT_TEMP = re.compile(r"^\.step-\d+\.pt\..+\.tmp$")  # fdrl.io's temporary names
    _replace = os.replace
    _renamed = 0

    def _replace_or_stop(src, dst, *args, **kwargs):
        global _renamed
        if _CHECKPOINT_TEMP.match(os.path.basename(os.fspath(src))):
            _renamed += 1
            if _renamed == _STOP_AT:
                os.kill(os.getpid(), signal.SIGSTOP)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _replace_or_stop
