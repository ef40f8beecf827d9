"""The verl plugin's tests run only in the verl environment (`make test-verl`); elsewhere they are not collected.

verl loads the plugin the way a user's run does: through VERL_USE_EXTERNAL_MODULES, set before verl is imported.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("verl") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("VERL_USE_EXTERNAL_MODULES", "conspo.integrations.verl")
    os.environ.setdefault("VERL_USE_EXTERNAL_PLUGINS", "none")  # no other installed plugin changes the run
