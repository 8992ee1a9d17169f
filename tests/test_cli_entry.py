import subprocess
import sys

from backend import __version__


def test_version_flag_prints_package_version():
    out = subprocess.run([sys.executable, "-m", "backend", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_no_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "backend"], capture_output=True, text=True)
    assert out.returncode == 2
