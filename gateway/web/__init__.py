"""The pages people see: the desktop login page, the phone simulator, the camera landing page, and the
demo seed of `qrgate serve --demo`."""
