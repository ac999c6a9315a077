"""
The distribution carries the twistd plugin file, the way Twisted finds it.
"""

import os
import subprocess
import sys
import tempfile
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.tools.launcher import ROOT


class WheelTests(SynchronousTestCase):
    """
    A normal (non-editable) install gets the plugin.
    """

    def test_wheelHasPluginAndNoTwistedInit(self):
        """
        The wheel holds twisted/plugins/zmqrelay_plugins.py and no
        twisted/__init__.py or twisted/plugins/__init__.py (which would shadow
        Twisted itself), plus the zmqrelay package and its subpackages.
        """
        out = tempfile.mkdtemp()
        self.addCleanup(subprocess.call, ["rm", "-rf", out])
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "-w", out, ROOT],
            check=True, capture_output=True, timeout=300,
        )
        [wheel] = [f for f in os.listdir(out) if f.endswith(".whl")]
        names = set(zipfile.ZipFile(os.path.join(out, wheel)).namelist())
        self.assertIn("twisted/plugins/zmqrelay_plugins.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("zmqrelay/tools/tap/cloud.py", names)
        self.assertIn("zmqrelay/interfaces.py", names)
