#!/usr/bin/env python3
"""An authenticator app for tests: pyotp reads the otpauth:// URI that BeginTotpEnrollment returns
(secret, digits, step, algorithm) and computes the codes, independently of the server's own TOTP
code. Used by client.py, and from the command line by .ci/readme-session:

    python authenticator.py 'otpauth://totp/...' --state FILE   # prints a fresh code

The server accepts a code within one time step (30 s) either side of its clock, and each step
once: a code already used is refused. A check needs several codes within seconds, so this takes
consecutive steps, starting at the oldest one the server still accepts for the next MARGIN
seconds; `--state` keeps the last step used between runs.
"""

import argparse
import time
from pathlib import Path

import pyotp

MARGIN = 5  # seconds: far longer than the RPCs between computing a code and its check


class Authenticator:
    def __init__(self, uri, last_step=None):
        self.totp = pyotp.parse_uri(uri)
        if not isinstance(self.totp, pyotp.TOTP):
            raise ValueError(f"not a TOTP URI: {uri.split('?')[0]}")
        if (self.totp.digits, self.totp.interval) != (6, 30):
            raise ValueError(f"{self.totp.digits} digits every {self.totp.interval} s, want 6 every 30 s")
        self.last_step = last_step

    def fresh_code(self):
        """A code of a time step not used before that the server accepts now."""
        interval = self.totp.interval
        now = time.time()
        oldest = int((now + MARGIN) // interval) - 1
        step = oldest if self.last_step is None else max(self.last_step + 1, oldest)
        # Only when every step the server accepts now was used already (the check came to the
        # end of a step): wait for the computed time (under MARGIN) until the clock is within
        # one step of this one. Not a synchronisation with the server: the clock must move on.
        ready_at = (step - 1) * interval
        if ready_at > now:
            time.sleep(ready_at - now)
        self.last_step = step
        return self.totp.at(step * interval)


def main():
    parser = argparse.ArgumentParser(description="Prints a fresh TOTP code for an otpauth:// URI.")
    parser.add_argument("uri")
    parser.add_argument("--state", type=Path, help="file keeping the last time step used")
    args = parser.parse_args()
    last = int(args.state.read_text()) if args.state and args.state.exists() else None
    app = Authenticator(args.uri, last)
    print(app.fresh_code())
    if args.state:
        args.state.write_text(str(app.last_step))


if __name__ == "__main__":
    main()
