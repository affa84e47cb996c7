"""The Allure HTML report: ``allure generate`` over a ``--alluredir`` folder, through the Allure command line.

The command line is Allure 2 (Java) as npm's ``allure-commandline`` ships it.
It is looked for in this order: ``$THUD_ALLURE`` (the executable), the
project's ``node_modules/.bin/allure`` (what ``.ci/run`` installs: ``npm install
--no-save allure-commandline``; the current folder, then the checkout), and
``allure`` on ``PATH``. Analytics are off (``ALLURE_NO_ANALYTICS=true``). The
report is generated into a temporary folder beside the target and moved into
place only when complete, so a failed run leaves the previous report intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from thud_mt.errors import ThudError

CHECKOUT = Path(__file__).resolve().parents[2]
NPM_LAUNCHER = Path("node_modules/allure-commandline/dist/bin/allure")
INSTALL_HINT = (
    "install it with `npm install --no-save allure-commandline` in the project folder (Node.js: "
    "`apt-get install nodejs npm`), or set THUD_ALLURE to an allure executable"
)
JAVA_HINT = "the Allure command line needs Java 8 or newer: `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME"


class AllureError(ThudError):
    """The Allure command line is missing, cannot run, or failed on the results."""


@dataclass(frozen=True)
class AllureReport:
    """A generated report: its folder, the page to open, and how long ``allure generate`` took."""

    folder: Path
    index: Path
    seconds: float


def find_allure(env: Mapping[str, str] | None = None, roots: tuple[Path, ...] | None = None) -> Path:
    """The allure executable (see the module docstring for the order); ``AllureError`` saying how to install it."""
    env = os.environ if env is None else env
    explicit = env.get("THUD_ALLURE")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AllureError(f"THUD_ALLURE={explicit}: not an executable file")
        return path
    for root in roots if roots is not None else (Path.cwd(), CHECKOUT):
        # The package's own launcher (a shell script: no Node.js needed to run it), else npm's bin link.
        for local in (root / NPM_LAUNCHER, root / "node_modules" / ".bin" / "allure"):
            if local.is_file() and os.access(local, os.X_OK):
                return local
    on_path = shutil.which("allure", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    places = " and ".join(str(r / "node_modules/.bin/allure") for r in (roots or (Path.cwd(), CHECKOUT)))
    raise AllureError(
        f"the Allure command line was not found (THUD_ALLURE unset, no {places}, none on PATH): " + INSTALL_HINT
    )


def find_java(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    home = env.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    on_path = shutil.which("java", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    raise AllureError("Java was not found (no JAVA_HOME, no java on PATH): " + JAVA_HINT)


def _check_results(results: Path) -> None:
    if not results.is_dir():
        raise AllureError(f"--allure {results}: no such folder (run the suites with --alluredir {results})")
    if not any(results.glob("*-result.json")):
        raise AllureError(
            f"--allure {results}: no Allure results in it (*-result.json); run the suites with --alluredir {results}"
        )


def generate(
    results: Path,
    out: Path,
    *,
    single_file: bool = False,
    allure: Path | None = None,
    timeout_s: float = 600.0,
) -> AllureReport:
    """Turn the Allure results in ``results`` into the HTML report in ``out`` (replaced when complete)."""
    import time

    results, out = Path(results), Path(out)
    _check_results(results)
    allure = allure or find_allure()
    find_java()
    env = {**os.environ, "ALLURE_NO_ANALYTICS": "true"}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    command = [str(allure), "generate", str(results), "-o", str(staging), "--clean"]
    if single_file:
        command.append("--single-file")
    started = time.perf_counter()
    try:
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AllureError(f"allure generate {results} took over {timeout_s:g} s and was stopped") from None
        except OSError as exc:
            raise AllureError(f"{allure}: cannot run it ({exc}); " + INSTALL_HINT) from exc
        index = staging / "index.html"
        if done.returncode != 0 or not index.is_file():
            said = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise AllureError(f"allure generate {results} failed (exit code {done.returncode}): {said}")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return AllureReport(out, out / "index.html", time.perf_counter() - started)
