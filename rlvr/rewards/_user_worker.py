"""Worker process of `rlvr.rewards.user.IsolatedReward`: loads a user's reward function, then scores.

Run by path through runpy (rlvr.rewards.worker). The first line it reads names the function, the
parent's sys.path and working directory (applied before rlvr itself is imported, so the worker
finds what the trainer finds); each later line is one call. See `rlvr.rewards.user.serve`.
"""

import json
import os
import sys

if __name__ == "__main__":
    hello = json.loads(sys.stdin.readline())
    sys.path[:] = hello["sys_path"]
    os.chdir(hello["cwd"])
    from rlvr.rewards.user import serve
    from rlvr.rewards.worker import reply_stream

    serve(hello, sys.stdin, reply_stream())
