"""Voices shared across nodes (VOICES_DIR on a shared disk): a voice cloned on one node is
found on the others at once (a miss looks on disk) or within VOICES_RESCAN_SECONDS (the
listing), a voice deleted elsewhere is forgotten and refused, and a cloned voice's Mimi
codes are kept next to it, written whole, so no second node encodes it again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from sesame_server.backends.csm.voice_prompts import VoicePromptStore, reference_prompt_source, write_codes
from sesame_server.backends.base import Voice, VoiceUnavailable
from sesame_server.config import load_settings
from sesame_server.voices.catalogue import VoiceCatalogue, VoiceNotFound
from sesame_server.voices.custom import CustomVoiceStore
from sesame_server.voices.shared import SharedVoices
from tests.cluster_nodes import Node, reference_wav

RESCAN = 5.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class View:
    """One node's view: its catalogue following a shared voices folder, on a fake clock."""

    def __init__(self, root: Path, clock: Clock):
        self.store = CustomVoiceStore(root)
        self.catalogue = VoiceCatalogue([Voice(id="builtin", name="Built in")], "builtin")
        self.forgotten: list[str] = []
        self.shared = SharedVoices(self.store, self.catalogue, rescan_seconds=RESCAN,
                                   forget=self.forgotten.append, clock=clock)
        self.shared.load()

    def listed(self) -> set[str]:
        return {voice.id for voice in self.catalogue}


def tone(seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(24000 * seconds)) / 5)).astype(np.float32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_voice_cloned_elsewhere_is_found_on_a_miss_at_once_and_listed_after_a_rescan(tmp_path, clock):
    a, b = View(tmp_path, clock), View(tmp_path, clock)
    first = a.store.add("First", tone())
    assert first.voice_id not in b.listed()  # the listing is not due yet: one clock read, no disk
    assert b.catalogue.resolve(first.voice_id).name == "First"  # a request naming it: looked for on disk
    second = a.store.add("Second", tone())
    clock.now += RESCAN - 0.1
    assert second.voice_id not in b.listed()
    clock.now += 0.1
    assert {first.voice_id, second.voice_id} <= b.listed()  # re-listed: new folders read and added
    assert b.catalogue.get(second.voice_id).category == "cloned"


def test_a_rescan_lists_the_folder_and_reads_only_new_voices(tmp_path, clock, monkeypatch):
    a, b = View(tmp_path, clock), View(tmp_path, clock)
    ids = [a.store.add(f"Voice {n}", tone()).voice_id for n in range(3)]
    read = []
    original = CustomVoiceStore.find
    monkeypatch.setattr(CustomVoiceStore, "find",
                        lambda self, voice_id: read.append(voice_id) or original(self, voice_id))
    clock.now += RESCAN
    assert set(ids) <= b.listed() and sorted(read) == sorted(ids)
    read.clear()
    clock.now += RESCAN
    assert set(ids) <= b.listed() and read == []  # known voices: nothing read again
    for name in ("alloy", "conversational_b", "builtin", "no such voice"):  # never stored voices: no disk access
        try:
            b.catalogue.resolve(name)
        except VoiceNotFound:
            pass
    assert read == []


def test_a_voice_deleted_elsewhere_is_refused_at_once_and_forgotten_once(tmp_path, clock):
    a, b = View(tmp_path, clock), View(tmp_path, clock)
    voice = a.store.add("Doomed", tone())
    assert b.catalogue.get(voice.voice_id) is not None
    assert a.store.delete(voice.voice_id)
    assert b.catalogue.get(voice.voice_id) is None  # a request naming it: its folder is gone
    with pytest.raises(VoiceNotFound):
        b.catalogue.resolve(voice.voice_id)
    assert b.forgotten == [voice.voice_id]  # the backend drops its codes and KV prefix
    assert voice.voice_id not in b.listed()
    clock.now += RESCAN
    b.listed()
    assert b.forgotten == [voice.voice_id]


def test_a_deletion_elsewhere_is_noticed_by_the_listing_too(tmp_path, clock):
    a, b = View(tmp_path, clock), View(tmp_path, clock)
    voice = a.store.add("Doomed", tone())
    clock.now += RESCAN
    assert voice.voice_id in b.listed()
    a.store.delete(voice.voice_id)
    assert voice.voice_id in b.listed()  # within the rescan interval
    clock.now += RESCAN
    assert voice.voice_id not in b.listed() and b.forgotten == [voice.voice_id]


def test_broken_folders_are_unusable_staging_is_ignored_and_a_double_delete_is_fine(tmp_path, clock):
    a, b = View(tmp_path, clock), View(tmp_path, clock)
    broken = a.store.add("Broken", tone()).voice_id
    (tmp_path / broken / "voice.json").write_text("{ not json")
    (tmp_path / ".incoming-someone-uploading").mkdir()  # another node's upload in progress
    (tmp_path / "lost+found").mkdir()  # a volume's own folder
    clock.now += RESCAN
    b.listed()
    assert set(b.catalogue.unusable) == {broken}
    assert (tmp_path / ".incoming-someone-uploading").is_dir()  # a rescan never removes anything
    assert a.store.delete(broken) and not b.store.delete(broken)  # both nodes deleting: no error
    clock.now += RESCAN
    b.listed()
    assert b.catalogue.unusable == {}


def test_the_voices_dir_is_settable_and_defaults_to_the_cache(tmp_path):
    default = load_settings({"CACHE_DIR": str(tmp_path)}, env_file=None)
    assert default.voices_dir == tmp_path / "voices" and default.voices_rescan_seconds == 5.0
    shared = load_settings({"CACHE_DIR": str(tmp_path), "VOICES_DIR": str(tmp_path / "nfs"),
                            "VOICES_RESCAN_SECONDS": "2"}, env_file=None)
    assert shared.voices_dir == tmp_path / "nfs" and shared.voices_rescan_seconds == 2.0
    empty = load_settings({"CACHE_DIR": str(tmp_path), "VOICES_DIR": ""}, env_file=None)
    assert empty.voices_dir == tmp_path / "voices"


# -- the codes kept next to a cloned voice ----------------------------------------------------

class Encoder:
    def __init__(self):
        self.calls = 0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.arange(4 * 6, dtype=np.int32).reshape(4, 6) + len(audio) % 7


def prompts(cache: Path, encoder: Encoder, codec: str = "mimi-a") -> VoicePromptStore:
    return VoicePromptStore(lambda voice_id: None, encoder, 4, cache, codec)


def cloned(tmp_path: Path):
    store = CustomVoiceStore(tmp_path / "voices")
    voice = store.add("Mine", tone(), transcript="Hello there.")
    return store, store.reference(voice.voice_id)


def test_a_second_node_reads_the_codes_the_first_kept_next_to_the_voice(tmp_path):
    store, reference = cloned(tmp_path)
    first, second = Encoder(), Encoder()
    made = prompts(tmp_path / "cache-a", first).get(reference.voice_id, reference_prompt_source(reference))
    files = list((store.root / reference.voice_id).glob("codes-*.npz"))
    assert first.calls == 1 and len(files) == 1
    assert not list((store.root / reference.voice_id).glob(".*"))  # no temporary file left
    stamp = files[0].stat()
    read = prompts(tmp_path / "cache-b", second).get(reference.voice_id, reference_prompt_source(reference))
    assert second.calls == 0 and np.array_equal(read.codes, made.codes) and read.text == "Hello there."
    assert (files[0].stat().st_ino, files[0].stat().st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    other = prompts(tmp_path / "cache-c", Encoder(), codec="another-mimi")  # other Mimi weights: other codes
    other.get(reference.voice_id, reference_prompt_source(reference))
    assert len(list((store.root / reference.voice_id).glob("codes-*.npz"))) == 2


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),  # half written
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(b"PK\x03\x04 not really a zip"),
    lambda path: write_codes(path, np.zeros((2, 6), np.int32), "wrong codebooks"),
    lambda path: write_codes(path, np.zeros((4, 0), np.int32), "no frames"),
])
def test_a_damaged_codes_file_is_a_miss_encoded_again_and_rewritten(tmp_path, damage):
    _, reference = cloned(tmp_path)
    prompts(tmp_path / "cache", Encoder()).get(reference.voice_id, reference_prompt_source(reference))
    [path] = (Path(reference.audio_path).parent).glob("codes-*.npz")
    damage(path)
    again = Encoder()
    prompt = prompts(tmp_path / "cache", again).get(reference.voice_id, reference_prompt_source(reference))
    assert again.calls == 1 and prompt.codes.shape == (4, 6)
    rewritten = Encoder()  # the file was rewritten whole: the next node reads it
    prompts(tmp_path / "cache", rewritten).get(reference.voice_id, reference_prompt_source(reference))
    assert rewritten.calls == 0


def test_two_nodes_writing_the_same_codes_at_once_leave_a_whole_file(tmp_path):
    path = tmp_path / "codes-x.npz"
    codes = np.arange(32 * 200, dtype=np.int32).reshape(32, 200)
    barrier = threading.Barrier(4)

    def write(seed: int) -> None:
        barrier.wait()
        for _ in range(10):
            assert write_codes(path, codes + seed, f"writer {seed}")

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with np.load(path) as stored:  # the last rename won; whichever it was, it is whole
        seed = int(str(stored["text"]).split()[-1])
        assert np.array_equal(stored["codes"], codes + seed)
    assert [p.name for p in tmp_path.iterdir()] == ["codes-x.npz"]


def test_codes_for_a_voice_deleted_meanwhile_are_not_kept_and_its_folder_not_remade(tmp_path):
    store, reference = cloned(tmp_path)
    folder = store.root / reference.voice_id
    source = reference_prompt_source(reference)  # hashed before the deletion, as a request would
    store.delete(reference.voice_id)
    with pytest.raises(VoiceUnavailable):  # its recording went with it: a 4xx naming the voice
        prompts(tmp_path / "cache", Encoder()).get(reference.voice_id, source)
    assert write_codes(folder / "codes-x.npz", np.zeros((4, 6), np.int32), "late") is False  # logged, no crash
    assert not folder.exists()  # never re-created: other nodes would list a broken voice


# -- two real servers sharing one VOICES_DIR ---------------------------------------------------

@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    shared = {"VOICES_DIR": str(tmp / "voices"), "VOICES_RESCAN_SECONDS": "1"}
    nodes = [Node(name, tmp, **shared) for name in ("node-a", "node-b")]  # a CACHE_DIR each
    try:
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.process.kill()
            node.process.wait()


def model_status(node) -> dict:
    return requests.get(f"{node.url}/health", timeout=10).json()["model"]


def test_a_voice_cloned_on_one_node_speaks_on_another_without_encoding_again(two_nodes):
    from elevenlabs import ElevenLabs
    from elevenlabs.core import ApiError

    a, b = two_nodes
    on_a, on_b = ElevenLabs(base_url=a.url, api_key="local"), ElevenLabs(base_url=b.url, api_key="local")
    voice_id = on_a.voices.ivc.create(name="Shared", files=[("me.wav", reference_wav(), "audio/wav")]).voice_id
    [codes] = (Path(a.env["VOICES_DIR"]) / voice_id).glob("codes-*.npz")
    stamp = codes.stat()

    started = time.monotonic()
    audio = b"".join(on_b.text_to_speech.convert(voice_id, text="Hello from B.", output_format="pcm_24000"))
    assert audio and time.monotonic() - started < 30
    status = model_status(b)
    assert voice_id in status["voices_prefilled"]  # spoken in the cloned voice, not the default
    assert status["mimi_encodes"] == 0  # B read A's codes: no Mimi encode on B at all
    assert (codes.stat().st_ino, codes.stat().st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    assert on_b.voices.get(voice_id).name == "Shared"

    later = on_a.voices.ivc.create(name="Listed", files=[("me.wav", reference_wav(2.0), "audio/wav")]).voice_id
    deadline = time.monotonic() + 10
    while later not in [v.voice_id for v in on_b.voices.get_all().voices]:  # the listing, VOICES_RESCAN_SECONDS=1
        assert time.monotonic() < deadline, "node B never listed a voice cloned on node A"
        time.sleep(0.2)

    on_a.voices.delete(voice_id)
    with pytest.raises(ApiError) as refused:
        on_b.voices.get(voice_id)
    assert refused.value.status_code == 404 and refused.value.body["detail"]["status"] == "voice_not_found"
    openai_style = requests.post(f"{b.url}/v1/audio/speech", timeout=30,
                                 json={"model": "tts-1", "voice": voice_id, "input": "Gone?"})
    assert openai_style.status_code == 400 and openai_style.json()["error"]["code"] == "voice_not_found"
    deadline = time.monotonic() + 10
    while voice_id in model_status(b)["voices_prefilled"]:  # forgotten on B's inference thread
        assert time.monotonic() < deadline, "node B kept the deleted voice's KV prefix"
        time.sleep(0.1)
    assert voice_id not in requests.get(f"{b.url}/health", timeout=10).json()["voices"]
