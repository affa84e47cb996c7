"""Allure results for the suites: labels, parameters and a link on every case, and the evidence of failures.

The pytest plugin adds an ``AllureAttacher`` to the runner's observers when
allure-pytest is active (``--alluredir``); it is called once per recorded draw,
inside the running test. Every test gets labels (epic ``Thud``, feature = the
relation, story = the probe, the model), a title that reads as a sentence, a
link to its corpus file and the parameters of the draw that decided it (its
first failing draw, else its first). Every failing or attached draw becomes a
step named by its edit and verdict, with its parameters; passing draws without
attachments make no step (a ``visual-only`` run has some 1300 of them, and each
would be serialised into the results).

Attachments (``--thud-attach``): ``failures`` attaches to failing draws (fail,
invalid, error), ``all`` to every draw, ``none`` to none. An attached draw gets
the prompt, both raw answers and the parsed and expected values (JSON). Media
(the edited and the original clip as small mp4 previews, and the waveform PNG)
go to the first attached draw of a test only, and with ``all`` also to the
first failing draw when the first draw passed; later draws get text. So a test
whose 8 draws all fail encodes 2 previews, not 16. Encoded media are memoised
by clip and edit, a clip's picture is encoded once for all its edits
(``preview.PreviewEncoder``), and the encoding runs in a worker process while
the tests go on (``deferred.DeferredFiles``).
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from thud_mt.clip import Clip
from thud_mt.report.deferred import DeferredFiles, Pending
from thud_mt.report.preview import PreviewEncoder, PreviewOptions, make_preview
from thud_mt.report.waveform import make_png, waveform_job
from thud_mt.runner import CaseEvidence

MODES = ("failures", "all", "none")
FAILING = ("fail", "invalid", "error")
EPIC = "Thud"
# Encoded previews and PNGs kept for reuse (tens of kB each): enough for every original clip of a corpus to be
# encoded once per session, however many suites and edits ask for it.
MEDIA_MEMO = 512


class ViolatedDraw(AssertionError):
    """How a failing draw's step is marked failed in Allure (a step's status comes from an exception)."""


class BrokenDraw(Exception):
    """How a draw whose model call errored is marked broken."""


@dataclass
class _TestState:
    """What the attacher has done for the running test (one pytest test, several Hypothesis draws)."""

    nodeid: str
    draws: int = 0
    media_draws: int = 0
    failed: bool = False
    failure_with_media: bool = False


def current_test() -> str:
    """The running pytest test's node id (``PYTEST_CURRENT_TEST`` without its phase), or ``""``."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def title_of(nodeid: str, evidence: CaseEvidence) -> str:
    """``test_muted_clip_has_no_sound[...]`` -> "Muted clip has no sound: presence of synth-0003 (visual-only)"."""
    function = nodeid.split("::")[-1].split("[")[0]
    words = function.removeprefix("test_").replace("_", " ").strip() or evidence.relation.name
    result = evidence.result
    return f"{words[0].upper()}{words[1:]}: {result.probe} of {result.clip} ({result.model})"


def clip_link(clip: Clip) -> str | None:
    """A ``file://`` URI of the corpus file the clip was read from (absolute, so it works from any report)."""
    return _file_uri(clip.provenance.source)


@cache
def _file_uri(source: str) -> str | None:
    path = Path(source)
    return path.resolve().as_uri() if path.is_file() else None


def _media_key(clip: Clip) -> tuple[str, ...]:
    return (clip.id, *(edit.describe() for edit in clip.edits))


def _plain(value: object) -> object:
    """JSON for parsed values (numpy scalars, tuples) without failing on anything odd."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


class AllureAttacher:
    """A case observer (``thud_mt.runner.CaseObserver``) that writes through allure-pytest's dynamic API."""

    def __init__(
        self,
        mode: str = "failures",
        *,
        results_dir: Path,
        previews: PreviewOptions | None = None,
        media_per_test: int = 1,
        executor: Executor | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"attach mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self.media_per_test = media_per_test
        self.encoder = PreviewEncoder(previews)
        self._files = DeferredFiles(results_dir, executor)  # executor: the media worker process by default
        self._media: OrderedDict[tuple, Future[bytes] | str] = OrderedDict()
        self._test = _TestState("\0")

    def close(self) -> list[str]:
        """Wait until every media file is written (the plugin calls it at the end of the session)."""
        return self._files.close()

    # ------------------------------------------------------------ per case

    def __call__(self, evidence: CaseEvidence) -> None:
        import allure

        nodeid = current_test()
        if nodeid != self._test.nodeid:
            self._test = _TestState(nodeid)
            self._label(evidence, nodeid)
        test = self._test
        test.draws += 1
        result = evidence.result
        failing = result.verdict in FAILING
        if test.draws == 1 or (failing and not test.failed):
            # The test shows the parameters of the draw that decides it: the first failing one, else the first.
            for name, value in self.parameters(evidence).items():
                allure.dynamic.parameter(name, value, excluded=True)  # draws vary with --thud-explore: not history
        test.failed = test.failed or failing
        attach = self.mode == "all" or (failing and self.mode == "failures")
        if attach or failing:  # a passing draw without attachments is summed up by the test's parameters
            self._step(evidence, attach, attach and self._wants_media(test, failing))

    def _wants_media(self, test: _TestState, failing: bool) -> bool:
        first_failure = failing and not test.failure_with_media
        if test.media_draws >= self.media_per_test and not (self.mode == "all" and first_failure):
            return False
        test.media_draws += 1
        test.failure_with_media = test.failure_with_media or failing
        return True

    @staticmethod
    def parameters(evidence: CaseEvidence) -> dict[str, object]:
        """The draw's edit parameters (offset, donor) and paraphrase, as Allure shows them."""
        shown: dict[str, object] = {}
        for name, value in evidence.result.params.items():
            shown[name] = round(value, 4) if isinstance(value, float) else value
        shown["paraphrase"] = evidence.result.paraphrase
        return shown

    def _label(self, evidence: CaseEvidence, nodeid: str) -> None:
        import allure

        result = evidence.result
        allure.dynamic.title(title_of(nodeid, evidence))
        allure.dynamic.epic(EPIC)
        allure.dynamic.feature(result.relation)
        allure.dynamic.story(result.probe)
        allure.dynamic.label("model", result.model)
        allure.dynamic.tag(result.model)  # the relation is a tag already (its pytest marker)
        allure.dynamic.parent_suite(f"model: {result.model}")  # one report may hold several models' runs
        link = clip_link(evidence.source)
        if link is not None:
            allure.dynamic.link(link, name=f"clip {result.clip}")

    # ------------------------------------------------------------ one draw as a step

    def _step(self, evidence: CaseEvidence, attach: bool, media: bool) -> None:
        from allure_commons import plugin_manager

        result = evidence.result
        title = f"draw {self._test.draws}: {result.edit}, paraphrase {result.paraphrase}: {result.verdict}"
        params = {k: str(v) for k, v in self.parameters(evidence).items()}
        step = uuid.uuid4().hex
        plugin_manager.hook.start_step(uuid=step, title=title, params=params)
        problem: Exception | None = None
        if result.verdict in ("fail", "invalid"):
            problem = ViolatedDraw(evidence.message)
        elif result.verdict == "error":
            problem = BrokenDraw(evidence.message)
        try:
            if media:
                self._attach_media(evidence)
            if attach:
                self._attach_text(evidence)
        finally:
            plugin_manager.hook.stop_step(
                uuid=step, title=title, exc_type=type(problem) if problem else None, exc_val=problem, exc_tb=None
            )

    def _attach_text(self, evidence: CaseEvidence) -> None:
        import allure

        result = evidence.result
        # One text for the prompt and both answers: read together, and one file fewer per failure to write.
        text = (
            f"prompt:\n{evidence.question.text.strip()}\n\n"
            f"answer on the original clip:\n{_answer_text(evidence.source_answer)}\n\n"
            f"answer on the edited clip ({result.edit}):\n{_answer_text(evidence.followup_answer)}\n"
        )
        allure.attach(text, name="prompt and raw answers", attachment_type=allure.attachment_type.TEXT)
        values = {
            "verdict": result.verdict,
            "reason": result.reason,
            "edit": result.edit,
            "params": _plain(dict(result.params)),
            "truth on the original": _plain(result.source_truth),
            "parsed on the original": _plain(result.source_value),
            "expected on the edited": _plain(result.expected),
            "parsed on the edited": _plain(result.followup_value),
        }
        body = json.dumps(values, indent=2, ensure_ascii=False)
        allure.attach(body, name="parsed and expected", attachment_type=allure.attachment_type.JSON)

    def _attach_media(self, evidence: CaseEvidence) -> None:
        """The clips and the PNG: described here, made by the media worker (``deferred.py``), attached now and
        their files filled in when ready."""
        import allure

        result = evidence.result
        kinds = allure.attachment_type
        for name, clip in (("edited clip", evidence.followup), ("original clip", evidence.source)):
            made = self._made(("mp4", *_media_key(clip)), functools.partial(self.encoder.job, clip), make_preview)
            self._attach_made(made, f"{name}.mp4", kinds.MP4, result.case)
        key = ("png", *_media_key(evidence.source), "|", *_media_key(evidence.followup))
        job = functools.partial(waveform_job, evidence.source, evidence.followup, result.edit)
        self._attach_made(self._made(key, job, make_png), "waveforms.png", kinds.PNG, result.case)

    def _attach_made(self, made: Future[bytes] | str, name: str, kind: object, case: str) -> None:
        import allure

        if isinstance(made, str):  # no preview (too large even at half size): say why instead
            allure.attach(
                f"{name} of {case}: {made}", name=f"{name} (not attached)", attachment_type=allure.attachment_type.TEXT
            )
        else:
            allure.attach(Pending(made, f"{case}: {name}"), name=name, attachment_type=kind)

    def _made(self, key: tuple, job: Callable[[], object], make: Callable[[object], bytes]) -> Future[bytes] | str:
        """The bytes to come for ``key``, memoised (an edit's clip is asked about with several probes), or why there
        are none. ``job()`` runs here and describes the work; ``make(job)`` runs on the media worker."""
        if key in self._media:
            self._media.move_to_end(key)
            return self._media[key]
        try:
            spec = job()
        except Exception as exc:  # one odd clip must not cost the case its other evidence
            spec = f"could not be prepared: {type(exc).__name__}: {exc}"
        made = spec if isinstance(spec, str) else self._files.submit(make, spec)
        self._media[key] = made
        if len(self._media) > MEDIA_MEMO:
            self._media.popitem(last=False)
        return made


def _answer_text(answer) -> str:  # answer: thud_mt.models.base.Answer
    if answer.error:
        return f"(no answer: {answer.error})"
    text = answer.text if answer.text.strip() else "(empty)"
    if answer.scores:
        text += "\nscores: " + json.dumps(_plain(dict(answer.scores)))
    return text
