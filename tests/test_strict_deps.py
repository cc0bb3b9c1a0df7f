"""A missing test dependency skips on a developer's machine and fails under CI (tests/strict_deps.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE = textwrap.dedent('''
    import pytest

    missing = pytest.importorskip("no_such_package_for_tests")

    def test_uses_it():
        pass

    def test_optional_inside():
        pytest.importorskip("llama_cpp_not_really")

    def test_allowed_optional():
        pytest.importorskip("llama_cpp.no_such_submodule_for_tests")
''')


def _run(tmp_path, ci: str | None) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.strict_deps", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_missing_dependency_skips_locally_and_fails_under_ci(tmp_path):
    local = _run(tmp_path, None)
    assert "1 skipped" in local and "failed" not in local, local
    ci = _run(tmp_path, "true")
    assert "1 error" in ci and "no_such_package_for_tests" in ci, ci


@pytest.mark.slow
def test_only_llama_cpp_may_be_missing_under_ci(tmp_path):
    sample = tmp_path / "test_inner.py"
    sample.write_text(SAMPLE.replace('missing = pytest.importorskip("no_such_package_for_tests")\n', ""),
                      encoding="utf-8")
    env = dict(os.environ, CI="true")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.strict_deps", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(sample)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert "1 failed" in out and "1 skipped" in out and "2 passed" not in out, out
