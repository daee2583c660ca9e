"""Pipecat's ElevenLabsTTSService in a pipeline, fed an LLM reply token by token. Run with the
clients' virtualenv; prints JSON. Args: <base url> <text>."""

import asyncio
import json
import sys

import numpy as np
from pipecat.frames.frames import (EndFrame, LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame,
                                   TTSAudioRawFrame, TTSStoppedFrame)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService


class Collect(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.audio = bytearray()
        self.rate = None
        self.stopped = asyncio.Event()

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
            self.rate = frame.sample_rate
        elif isinstance(frame, TTSStoppedFrame):
            self.stopped.set()  # the server's isFinal for the turn's context
        await self.push_frame(frame, direction)


async def main(base: str, text: str) -> None:
    tts = ElevenLabsTTSService(api_key="local", url=base.replace("http://", "ws://"),
                               settings=ElevenLabsTTSService.Settings(voice="JoeEmbeddedPiper"))
    collect = Collect()
    task = PipelineTask(Pipeline([tts, collect]), params=PipelineParams(audio_out_sample_rate=24000))
    words = text.split()
    await task.queue_frames([LLMFullResponseStartFrame(),
                             *[LLMTextFrame(text=(" " if i else "") + word) for i, word in enumerate(words)],
                             LLMFullResponseEndFrame()])

    async def end_after_the_turn() -> None:
        await asyncio.wait_for(collect.stopped.wait(), 120)
        await task.queue_frame(EndFrame())

    ender = asyncio.create_task(end_after_the_turn())
    await PipelineRunner(handle_sigint=False).run(task)
    await ender
    audio = np.frombuffer(bytes(collect.audio), dtype=np.int16).astype(np.float32) / 32768
    print(json.dumps({"rate": collect.rate, "seconds": len(audio) / collect.rate,
                      "rms": float(np.sqrt(np.mean(audio ** 2)))}))


asyncio.run(main(sys.argv[1], sys.argv[2]))
