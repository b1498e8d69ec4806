"""The optional local model backend: a Messages API adapter over llama.cpp (see server.py).

Reverie reaches it as it reaches Claude (ANTHROPIC_BASE_URL, REVERIE_MODEL_BACKEND=local); the
adapter process imports neither Django nor the rest of Reverie.
"""
