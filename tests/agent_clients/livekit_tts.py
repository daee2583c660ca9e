"""LiveKit Agents' ElevenLabs plugin, TTS.stream(), as a voice agent uses it: the LLM's reply
pushed word by word (or TTS.synthesize(), the whole text over HTTP). Run with the clients'
virtualenv; prints JSON. Args: <base url> <text> [model] [stream|synthesize]. eleven_v3*
models go to the text-to-dialogue endpoints."""

import asyncio
import json
import sys

import aiohttp
import numpy as np
from livekit.plugins import elevenlabs


async def main(base: str, text: str, model: str, how: str) -> None:
    async with aiohttp.ClientSession() as session:
        tts = elevenlabs.TTS(base_url=f"{base}/v1", api_key="local", voice_id="JoeEmbeddedPiper",
                             http_session=session, model=model)
        if how == "synthesize":
            stream = tts.synthesize(text)
        else:
            stream = tts.stream()
            for word in text.split():
                stream.push_text(word + " ")
                await asyncio.sleep(0.02)
            stream.end_input()
        samples, rate = [], None
        async for event in stream:
            rate = event.frame.sample_rate
            samples.append(np.frombuffer(event.frame.data, dtype=np.int16))
        await stream.aclose()
        await tts.aclose()
    audio = np.concatenate(samples).astype(np.float32) / 32768
    print(json.dumps({"rate": rate, "seconds": len(audio) / rate, "rms": float(np.sqrt(np.mean(audio ** 2)))}))


asyncio.run(main(sys.argv[1], sys.argv[2], *(sys.argv[3:5] or ["eleven_turbo_v2_5", "stream"])))
