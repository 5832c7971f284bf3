"""Test probe, put on PYTHONPATH by tests/service/test_no_tensorflow.py and test_cli_startup.py only: at
interpreter exit, write the sorted names in ``sys.modules`` to the file named by ``FACEREC_TEST_MODULES_OUT``."""

import atexit
import json
import os
import sys

_OUT = os.environ.get("FACEREC_TEST_MODULES_OUT")


def _dump() -> None:
    if _OUT:
        with open(_OUT, "w") as f:
            json.dump(sorted(name for name, module in sys.modules.items() if module is not None), f)


atexit.register(_dump)
