"""One metamorphic case end to end: edit, ask (through the cache), parse, judge, record.

The pytest plugin owns one ``CaseRunner`` per session; ``thud threshold`` and
other commands can use it without pytest.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from relations import NO_TRUTH, MetamorphicRelation, RelationContext, RelationOptions, truth
from relations.base import Judgement, Params
from thud_mt.cache import Cache, cache_key, media_digest
from thud_mt.clip import Clip
from thud_mt.corpus.donors import eligible_donors
from thud_mt.corpus.manifest import Corpus
from thud_mt.derived import DerivedCache, corpus_digest, derived_key
from thud_mt.errors import ThudError
from thud_mt.models.base import Answer, Model, Query
from thud_mt.probes import Parsed, ProbeKind, Question, parse, parse_choice, question
from thud_mt.results import CaseResult, ResultsWriter
from thud_mt.stats import majority, wilson

# Edited clips kept for reuse; each holds its own audio (frames are shared), ~0.25 MB for a 4 s clip.
FOLLOWUP_MEMO = 256


@dataclass(frozen=True)
class CaseSpec:
    """What a suite test checks: a relation, a clip and a probe; the edit's parameters are drawn later."""

    relation: str
    clip: str
    probe: ProbeKind

    @property
    def id(self) -> str:
        return f"{self.clip} {self.probe}"


@dataclass(frozen=True)
class CanaryReport:
    """Whether muting a clip changes anything the model says: if never, audio may not reach it."""

    model: str
    clips: tuple[str, ...]
    compared: int
    changed: int

    @property
    def audio_reaches_model(self) -> bool:
        return self.changed > 0

    def describe(self) -> str:
        if not self.compared:
            return f"canary: no readable clip with a sound to check {self.model} on"
        if self.audio_reaches_model:
            return f"canary: audio reaches {self.model} ({self.changed} of {self.compared} answers changed when muted)"
        return (
            f"AUDIO DOES NOT REACH THE MODEL? {self.model} gave the same answers and scores to "
            f"{self.compared} questions about {len(self.clips)} clips and their muted copies "
            f"({', '.join(self.clips)}): check the adapter's audio path before reading the results "
            "(a model that ignores sound entirely looks the same)"
        )


CANARY_PROBES: tuple[ProbeKind, ...] = ("presence", "source")


@dataclass(frozen=True)
class CaseEvidence:
    """Everything behind one finished case, for observers (Allure attachments, preference pairs).

    ``source`` / ``followup`` are the original and edited clips exactly as the
    model received them; the answers are the ones the verdict was read from.
    """

    result: CaseResult
    relation: MetamorphicRelation
    question: Question
    source: Clip
    followup: Clip
    source_answer: Answer
    followup_answer: Answer
    message: str


# An observer sees every recorded case; what it raises is turned into a warning (a report or a
# harvest must never cost the run its results).
CaseObserver = Callable[[CaseEvidence], None]


@dataclass(frozen=True)
class Outcome:
    """A finished case: the record and the message a failing test shows."""

    result: CaseResult
    message: str


def _jsonable(value: object) -> object:
    return None if value is NO_TRUTH else value


def read_answer(q: Question, answer: Answer) -> Parsed:
    """How the suites read an answer: its text, or (a scored answer with no text) the best-scored choice."""
    if not answer.text.strip() and answer.scores:
        return parse_choice(q, max(answer.scores, key=lambda c: answer.scores[c]))  # type: ignore[index]
    return parse(q, answer.text)


@dataclass
class CaseRunner:
    model: Model
    corpus: Corpus
    cache: Cache
    options: RelationOptions = field(default_factory=RelationOptions)
    samples: int = 1
    timeout_s: float | None = None
    settings: Mapping[str, object] = field(default_factory=dict)
    writer: ResultsWriter | None = None
    observers: list[CaseObserver] = field(default_factory=list)
    derived: DerivedCache | None = None  # swap donor lists, kept for other processes and later runs
    _clips: dict[str, Clip] = field(default_factory=dict)
    _errors: dict[str, ThudError] = field(default_factory=dict)
    _donors: dict[str, list[str]] = field(default_factory=dict)
    _recorded: set[str] = field(default_factory=set)
    _followups: OrderedDict[tuple[str, str, str], Clip] = field(default_factory=OrderedDict)
    _pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_pid: int = 0
    calls: int = 0

    # ------------------------------------------------------------ corpus access

    @property
    def sound_labels(self) -> tuple[str, ...]:
        return self.corpus.sound_labels

    def clip(self, clip_id: str) -> Clip:
        """The decoded clip; a clip that cannot be read raises its error for every case that uses it."""
        if clip_id in self._errors:
            raise self._errors[clip_id]
        if clip_id not in self._clips:
            try:
                self._clips[clip_id] = self.corpus.load_clip(clip_id)
            except ThudError as exc:
                self._errors[clip_id] = exc
                raise
        return self._clips[clip_id]

    def annotated(self, clip_id: str) -> Clip:
        """A media-less stand-in with the manifest's events, for deciding which cases apply without decoding."""
        import numpy as np

        entry = self.corpus.entry(clip_id)
        return Clip(
            id=clip_id,
            video=np.zeros((1, 2, 2, 3), np.uint8),
            fps=1 / 3600,
            audio=np.zeros((1, 1)),
            sample_rate=1,
            events=entry.events,
        )

    def donors(self, clip: Clip) -> list[str]:
        """Ids of the corpus clips fit to donate audio to ``clip`` (a corpus clip, named by its id)."""
        if clip.id not in self._donors:
            if self.derived is None:
                self._donors[clip.id] = self._screen_donors(clip)
            else:  # screening decodes and correlates every clip: done once per corpus content, not per process
                key = derived_key("swap-donors", corpus_digest(self.corpus), clip.id)
                ids = self.derived.fetch_json("swap-donors", key, lambda: self._screen_donors(clip))
                self._donors[clip.id] = [str(i) for i in ids]
        return self._donors[clip.id]

    def _screen_donors(self, clip: Clip) -> list[str]:
        candidates = []
        for entry in self.corpus.entries:
            try:
                candidates.append(self.clip(entry.id))
            except ThudError:
                continue  # an unreadable clip is nobody's donor; its own cases report the error
        return [c.id for c in eligible_donors(clip, candidates)]

    def context(self) -> RelationContext:
        return RelationContext(options=self.options, clip=self.clip, donors=self.donors)

    # ------------------------------------------------------------ asking

    def ask(self, queries: Sequence[Query]) -> list[Answer]:
        """Answers in order: cached ones free, the rest in one batch call under the timeout."""
        keys = [self._key(q) for q in queries]
        answers: list[Answer | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            fresh = self._call([queries[i] for i in missing])
            for i, answer in zip(missing, fresh, strict=True):
                answers[i] = answer
                self.cache.put(keys[i], answer)
        return [a for a in answers if a is not None]

    def _key(self, query: Query) -> str:
        return cache_key(
            fingerprint=self.model.fingerprint,
            probe=query.question.probe,
            prompt=query.question.text,
            media=media_digest(query.clip),
            settings=self.settings,
            sample=query.sample,
        )

    def _call(self, queries: list[Query]) -> list[Answer]:
        self.calls += len(queries)
        pool = self._model_thread()
        future = pool.submit(self.model.answer, queries)
        try:
            answers = future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            # The call goes on in the pool's only thread: leave that pool to it; the next call gets a new one.
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return [Answer(text="", error=f"model call timed out after {self.timeout_s:g} s") for _ in queries]
        except Exception as exc:  # a model that raises makes an error case, never a dead session
            return [Answer(text="", error=f"model raised {type(exc).__name__}: {exc}") for _ in queries]
        if not isinstance(answers, list) or len(answers) != len(queries):
            got = len(answers) if isinstance(answers, list) else type(answers).__name__
            return [Answer(text="", error=f"model returned {got} answers for {len(queries)} queries") for _ in queries]
        return answers

    def _model_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread model calls run on (so a call can time out); kept: a thread per call cost ~0.3 ms."""
        if self._pool is None or self._pool_pid != os.getpid():  # a forked child has no thread of its own
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="thud-model")
            self._pool_pid = os.getpid()
        return self._pool

    # ------------------------------------------------------------ one case

    def followup(self, relation: MetamorphicRelation, clip: Clip, params: Params) -> Clip:
        """The edited clip, memoised: every probe and paraphrase of a case edits the same way (identity
        is an AAC encode, swap a resample), so one edit serves them all."""
        key = (relation.name, clip.id, json.dumps(dict(params), sort_keys=True, default=str))
        if key in self._followups:
            self._followups.move_to_end(key)
            return self._followups[key]
        edited = relation.transform(clip, params, self.context())
        self._followups[key] = edited
        if len(self._followups) > FOLLOWUP_MEMO:
            self._followups.popitem(last=False)
        return edited

    def expectation(self, relation: MetamorphicRelation, spec: CaseSpec, params: Params) -> tuple[Clip, Clip, object]:
        clip = self.clip(spec.clip)
        followup = self.followup(relation, clip, params)
        expected = relation.expected(clip, followup, spec.probe, self.context())
        return clip, followup, expected

    def run(self, relation: MetamorphicRelation, spec: CaseSpec, params: Params, paraphrase: int, case: str) -> Outcome:
        started = time.perf_counter()
        clip, followup, expected = self.expectation(relation, spec, params)
        q = question(spec.probe, paraphrase, sound_labels=self.sound_labels)
        source_truth = truth(clip, spec.probe, self.options)
        n = max(1, self.samples if self.model.capabilities.samples else 1)
        queries = [Query(clip, q, i, case) for i in range(n)] + [Query(followup, q, i, case) for i in range(n)]
        answers = self.ask(queries)
        sources, followups = answers[:n], answers[n:]
        judgements = [
            self._judge(relation, spec.probe, q, s, f, source_truth, expected)
            for s, f in zip(sources, followups, strict=True)
        ]
        verdicts = [j[0].verdict for j in judgements]
        verdict = majority(verdicts)
        chosen = verdicts.index(verdict)
        judgement, source_parsed, followup_parsed = judgements[chosen]
        passes = verdicts.count("pass")
        mode = relation.mode(spec.probe)
        result = CaseResult(
            case=case,
            model=self.model.name,
            fingerprint=self.model.fingerprint,
            relation=relation.name,
            probe=spec.probe,
            clip=spec.clip,
            params=dict(params),
            paraphrase=paraphrase,
            question=q.text,
            edit=relation.describe(params),
            source_answer=sources[chosen].text if sources[chosen].error is None else None,
            followup_answer=followups[chosen].text if followups[chosen].error is None else None,
            source_value=source_parsed.value if source_parsed.valid else None,
            followup_value=followup_parsed.value if followup_parsed.valid else None,
            source_truth=_jsonable(source_truth),
            expected=_jsonable(source_parsed.value if mode == "invariant" else expected),
            source_correct=judgement.source_correct,
            followup_correct=judgement.followup_correct,
            verdict=judgement.verdict,
            reason=judgement.reason,
            samples=n,
            pass_rate=passes / n if n > 1 else None,
            interval=wilson(passes, n) if n > 1 else None,
            seconds=time.perf_counter() - started,
        )
        message = self.message(relation, result, followups[chosen])
        if self.record(result):
            self.notify(CaseEvidence(result, relation, q, clip, followup, sources[chosen], followups[chosen], message))
        return Outcome(result, message)

    def notify(self, evidence: CaseEvidence) -> None:
        for observer in self.observers:
            try:
                observer(evidence)
            except Exception as exc:  # any observer bug becomes a warning; the case stands
                warnings.warn(
                    f"{evidence.result.case}: {type(observer).__name__} failed: {type(exc).__name__}: {exc}",
                    stacklevel=2,
                )

    def _judge(
        self,
        relation: MetamorphicRelation,
        probe: ProbeKind,
        q: Question,
        source: Answer,
        followup: Answer,
        source_truth: object,
        expected: object,
    ) -> tuple[Judgement, Parsed, Parsed]:
        if source.error or followup.error:
            reason = "; ".join(
                f"{which}: {a.error}" for which, a in (("original", source), ("edited", followup)) if a.error
            )
            bad = Parsed(probe, None, False, reason)
            return Judgement("error", reason, None, None), bad, bad
        src, fol = read_answer(q, source), read_answer(q, followup)
        reference = src.value if relation.mode(probe) == "invariant" else expected
        return relation.judge(probe, src, fol, source_truth, reference, self.context()), src, fol

    def canary(self, n_clips: int) -> CanaryReport:
        """Ask about ``n_clips`` clips with a sound and their muted copies; count answers that changed."""
        from thud_mt.interventions import mute

        clips: list[Clip] = []
        for entry in self.corpus.entries:
            if len(clips) == n_clips:
                break
            if any(e.audio_time is not None for e in entry.events):
                try:
                    clips.append(self.clip(entry.id))
                except ThudError:
                    continue  # its own cases report it
        queries = []
        for clip in clips:
            silent = mute(clip)
            for probe in CANARY_PROBES:
                q = question(probe, 0, sound_labels=self.sound_labels)
                queries += [Query(clip, q, 0, "canary"), Query(silent, q, 0, "canary")]
        answers = self.ask(queries)
        pairs = [
            (a, b) for a, b in zip(answers[::2], answers[1::2], strict=True) if a.error is None and b.error is None
        ]
        changed = sum(
            a.text.strip() != b.text.strip() or dict(a.scores or {}) != dict(b.scores or {}) for a, b in pairs
        )
        return CanaryReport(self.model.name, tuple(c.id for c in clips), len(pairs), changed)

    def record(self, result: CaseResult) -> bool:
        """Append once: Hypothesis replays a failing example, which must not count twice. True if new."""
        key = f"{result.case}|{sorted(result.params.items())}|{result.paraphrase}"
        if key in self._recorded:
            return False
        self._recorded.add(key)
        if self.writer is not None:
            self.writer.write(result)
        return True

    @staticmethod
    def message(relation: MetamorphicRelation, result: CaseResult, followup: Answer) -> str:
        """What a person reads when the case fails."""
        if result.verdict == "error":
            return f"{result.edit}: {result.reason}"
        said = (followup.text or "").strip().replace("\n", " ")
        if len(said) > 160:
            said = said[:157] + "..."
        if result.verdict == "invalid":
            asked = _first_line(result.question)
            return f'{result.edit}: could not read the model\'s answer to "{asked}": {result.reason}'
        still = "still " if result.verdict == "fail" and result.source_value == result.followup_value else ""
        expected = result.expected
        return (
            f'{result.edit}: model {still}answered "{said}" to "{_first_line(result.question)}"'
            f" (expected {expected!r}; {result.reason})"
        )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
