"""Guarding secrets: one sequence for every secret check (throttle, lock, captcha, attempt reservation,
verdict), the image captchas, per-key throttles and argon2id hashing. Below accounts and units, which
both use it."""
