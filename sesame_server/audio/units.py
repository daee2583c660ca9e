"""The figures every layer shares, defined once."""

SAMPLE_RATE = 24_000  # Hz: CSM/Mimi's native rate, and the rate of every OpenAI format
FRAME_SECONDS = 0.08  # one CSM frame (1920 samples at 24 kHz); the progress unit of every backend
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # playback speeds a request may ask for (OpenAI's range)
