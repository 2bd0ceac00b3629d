"""Where servers run. One interface; `local` starts processes on this machine."""
