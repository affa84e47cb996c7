"""Values derived from a corpus (listener exemplars, swap donors) are computed once per content and code, then read."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import run_together
from thud_mt.cache import NullCache
from thud_mt.clip import Event
from thud_mt.corpus.manifest import Corpus, load_corpus
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.derived import DerivedCache, corpus_digest, derived_key
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.reference import Listener
from thud_mt.probes import question
from thud_mt.runner import CaseRunner


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return load_corpus(build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 5, progress=False))


def counting(value: object, calls: list[int]):
    def compute() -> object:
        calls.append(1)
        return value

    return compute


# ------------------------------------------------------------------------------------------------ the store


def test_a_value_is_computed_once_then_read_by_anyone_sharing_the_folder(tmp_path: Path) -> None:
    calls: list[int] = []
    first = DerivedCache(tmp_path).fetch_json("kind", "k1", counting({"ids": ["a", "b"]}, calls))
    again = DerivedCache(tmp_path).fetch_json("kind", "k1", counting({"ids": ["other"]}, calls))
    other_key = DerivedCache(tmp_path).fetch_json("kind", "k2", counting(["new"], calls))
    assert first == again == {"ids": ["a", "b"]}
    assert other_key == ["new"]
    assert len(calls) == 2


def _race(root: str, log: str, out: str, start) -> None:  # one process of the race below
    def compute() -> list[str]:
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(0.3)  # long enough that the others arrive while it works
        return ["donor-a", "donor-b"]

    start.wait()
    value = DerivedCache(root).fetch_json("race", "key", compute)
    with open(out, "a") as handle:
        handle.write(json.dumps(value) + "\n")


def test_processes_racing_for_a_value_compute_it_once_and_all_get_it(tmp_path: Path) -> None:
    log, out = tmp_path / "computed.log", tmp_path / "values.jsonl"
    run_together(_race, *[(str(tmp_path / "cache"), str(log), str(out))] * 3)
    assert log.read_text().splitlines() == ["computed"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [["donor-a", "donor-b"]] * 3


def test_a_damaged_file_is_computed_again_and_replaced(tmp_path: Path) -> None:
    store = DerivedCache(tmp_path)
    store.path("kind", "key").parent.mkdir(parents=True)
    store.path("kind", "key").write_bytes(b'["cut off')  # a foreign or truncated file
    calls: list[int] = []
    with pytest.warns(UserWarning, match="unreadable cached derived value"):
        assert store.fetch_json("kind", "key", counting([1, 2], calls)) == [1, 2]
    assert json.loads(store.path("kind", "key").read_text()) == [1, 2]
    assert store.fetch_json("kind", "key", counting([9], calls)) == [1, 2]
    assert len(calls) == 1


def test_an_unusable_cache_folder_costs_the_reuse_not_the_value(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="derived-value cache unusable"):
        assert DerivedCache(blocker / "derived").fetch_json("kind", "key", lambda: {"ok": True}) == {"ok": True}


def test_keys_follow_the_code_and_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    key = derived_key("listener-exemplars", "corpus-a", "settings-1")
    assert key == derived_key("listener-exemplars", "corpus-a", "settings-1")
    assert key != derived_key("listener-exemplars", "corpus-b", "settings-1")
    assert key != derived_key("listener-exemplars", "corpus-a", "settings-2")
    monkeypatch.setattr("thud_mt.derived.code_digest", lambda: "edited code")
    assert key != derived_key("listener-exemplars", "corpus-a", "settings-1")


def test_the_corpus_digest_follows_media_bytes_and_annotations_not_paths(tmp_path: Path) -> None:
    def corpus_of(files: dict[str, bytes], heard_at: float = 1.0) -> SimpleNamespace:
        entries = []
        for name, data in files.items():
            path = tmp_path / f"{len(list(tmp_path.iterdir()))}-{name}.mp4"
            path.write_bytes(data)
            entries.append(SimpleNamespace(id=name, path=path, events=(Event("dog", 1.0, heard_at, "bark"),)))
        return SimpleNamespace(entries=tuple(entries))

    base = corpus_digest(corpus_of({"a": b"AAAA", "b": b"BBBB"}))
    assert corpus_digest(corpus_of({"a": b"AAAA", "b": b"BBBB"})) == base  # other files, same content
    assert corpus_digest(corpus_of({"a": b"AAAA", "b": b"BBBX"})) != base
    assert corpus_digest(corpus_of({"a": b"AAAA", "b": b"BBBB"}, heard_at=1.5)) != base
    gone = corpus_of({"a": b"AAAA", "b": b"BBBB"})
    gone.entries[1].path.unlink()
    assert corpus_digest(gone) != base  # a missing clip is part of what a value was derived from


# ------------------------------------------------------------------------------------------------ the listener


def test_the_listener_reads_back_exactly_what_it_learned(corpus: Corpus, tmp_path: Path) -> None:
    learner = Listener(corpus, cache=DerivedCache(tmp_path))
    reader = Listener(corpus, cache=DerivedCache(tmp_path))
    reader._learn_exemplars = lambda: pytest.fail("learned again although the corpus and code are unchanged")
    uncached = Listener(corpus)
    assert learner.fingerprint == reader.fingerprint == uncached.fingerprint
    for got, want in zip(reader.exemplars.exemplars, uncached.exemplars.exemplars, strict=True):
        assert (got.sound, got.source) == (want.sound, want.source)
        np.testing.assert_array_equal(got.features, want.features)  # bit-exact, NaNs included
    assert reader.skipped == uncached.skipped


def test_another_corpus_is_learned_afresh(corpus: Corpus, tmp_path: Path) -> None:
    _ = Listener(corpus, cache=DerivedCache(tmp_path)).fingerprint  # learns and stores
    without_corpus = Listener(None, cache=DerivedCache(tmp_path))
    assert without_corpus.fingerprint == Listener(None).fingerprint
    assert len(list((tmp_path / "listener-exemplars").glob("[!.]*"))) == 2


# ------------------------------------------------------------------------------------------------ swap donors


class Silent:
    name = "silent"
    fingerprint = "silent-1"
    capabilities = Capabilities()

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.threads: list[int] = []

    def answer(self, queries: list[Query]) -> list[Answer]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay_s)
        return [Answer(text="no") for _ in queries]


def test_swap_donors_are_screened_once_per_corpus_content(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screened = CaseRunner(model=Silent(), corpus=corpus, cache=NullCache())
    first = CaseRunner(model=Silent(), corpus=corpus, cache=NullCache(), derived=DerivedCache(tmp_path))
    want = {e.id: screened.donors(screened.clip(e.id)) for e in corpus.entries}
    assert {e.id: first.donors(first.clip(e.id)) for e in corpus.entries} == want
    assert any(want.values())

    def no_screening(*args: object, **kwargs: object) -> None:
        raise AssertionError("donors screened again although the corpus and code are unchanged")

    monkeypatch.setattr("thud_mt.runner.eligible_donors", no_screening)
    later = CaseRunner(model=Silent(), corpus=corpus, cache=NullCache(), derived=DerivedCache(tmp_path))
    assert {e.id: later.donors(later.clip(e.id)) for e in corpus.entries} == want


# ------------------------------------------------------------------------------------------------ model calls


def test_model_calls_share_one_thread_and_a_timed_out_call_leaves_it_behind(corpus: Corpus) -> None:
    model = Silent()
    runner = CaseRunner(model=model, corpus=corpus, cache=NullCache(), timeout_s=0.2)
    clip = runner.clip(corpus.entries[0].id)
    queries = [Query(clip, question("presence", 0), 0, "case")]
    runner.ask(queries)
    runner.ask(queries)
    assert len(model.threads) == 2 and model.threads[0] == model.threads[1] != threading.get_ident()
    model.delay_s = 1.0
    timed_out = runner.ask(queries)
    assert timed_out[0].error == "model call timed out after 0.2 s"
    model.delay_s = 0.0
    answered = runner.ask(queries)  # the hung call still holds the old thread: a new one answers
    assert answered[0].error is None and answered[0].text == "no"
    assert model.threads[-1] != model.threads[0]
