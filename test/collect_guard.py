"""A collection hook for conftest.py, apart so that a test can run it alone."""
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_pycollect_makemodule(module_path, parent):
    """launch_testing's pytest plugin imports every test module to look for a launch test;
    a module that skips itself at import (need_modules, importorskip) would skip the whole
    directory there, and one that fails would stop the collection with the plugin's trace.
    Such a module is collected as pytest collects it, which reports its skip (or failure) as
    the module's and goes on."""
    outcome = yield
    if outcome.excinfo is not None and isinstance(
            outcome.excinfo[1], (pytest.skip.Exception, pytest.fail.Exception)):
        outcome.force_result(pytest.Module.from_parent(parent, path=module_path))
