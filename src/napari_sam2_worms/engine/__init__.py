"""The tracking engine: a session of prompts, masks and skeletons over a backend."""
