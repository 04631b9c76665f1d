"""Peers that run in their own process: DeepSpeed's CPU optimizers, bitsandbytes', torch's fused.

Both bring their own native code and OpenMP runtime (DeepSpeed builds its cpu_adam op with ninja at
first use; both run on torch, whose libgomp is not ours), so they are timed in a separate Python
process: this file, run by path (`python .../_peer.py`, never importing gradfuse, so no second
OpenMP runtime of ours is loaded there), possibly by another interpreter (--peer-python: a venv
where deepspeed and bitsandbytes are installed).

The parent drives it over a pipe, one JSON object per line, so that the peers' samples interleave
with the in-process implementations of the same row (measure_interleaved calls
PeerStep.timed(number) where it would call a local step):

  {"cmd": "probe", "peers": [...]}            -> {peer: {"available", "version" | "reason", ...}}
  {"cmd": "setup", "key", "peer", "algorithm", "kwargs", "shapes", "dtype", "threads"}
                                              -> {"ok": true} or {"ok": false, "reason"}
  {"cmd": "time", "key", "number"}            -> {"seconds": total for `number` steps}
  {"cmd": "drop", "key"}                      -> {"ok": true}

Setup builds the optimizer and steps it once, so a JIT build or first-touch allocation is never
inside a timed sample. A peer that cannot import or cannot build that algorithm answers with its
reason: the parent reports a skipped cell, never an error.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time

# peer -> (module that must import, the algorithms it implements)
PEERS = {
    # torch.optim's fused CPU kernels without gradfuse's OpenMP runtime in the process: the in-process
    # torch rows of bench optim share the cores with our thread pool; these do not
    "torch-process": ("torch", ("Adam", "AdamW", "SGD", "Adagrad")),
    "deepspeed": ("deepspeed", ("Adam", "AdamW", "Adagrad")),
    "bnb": ("bitsandbytes", ("Adam", "AdamW", "SGD", "Adagrad", "RMSprop")),
    "bnb-8bit": ("bitsandbytes", ("Adam", "AdamW")),
}


def peer_algorithms(peer: str) -> tuple:
    return PEERS[peer][1]


# ---- the server side (runs in the peer process) --------------------------------------------------------
def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _probe(peer: str) -> dict:
    module = PEERS[peer][0] if peer in PEERS else None
    if module is None:
        return {"available": False, "reason": f"unknown peer {peer!r}"}
    try:
        import torch

        mod = __import__(module)
    except ImportError as exc:
        return {"available": False, "reason": f"not installed ({_describe(exc)})"}
    except Exception as exc:  # noqa: BLE001 - a broken install is a missing peer
        return {"available": False, "reason": f"import failed ({_describe(exc)})"}
    info = {
        "available": True,
        "version": getattr(mod, "__version__", None),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    if peer == "deepspeed":
        # the cpu_adam / cpu_adagrad ops are C++ built with ninja at first use: build them here, untimed
        t0 = time.perf_counter()
        try:
            from deepspeed.ops.op_builder import CPUAdagradBuilder, CPUAdamBuilder

            CPUAdamBuilder().load(verbose=False)
            CPUAdagradBuilder().load(verbose=False)
        except Exception as exc:  # noqa: BLE001
            return {"available": False, "reason": f"op build failed ({_describe(exc)})", **info}
        info["op_load_s"] = time.perf_counter() - t0
    return info


def _optimizer(peer: str, algorithm: str, params: list, kwargs: dict):
    if algorithm not in PEERS[peer][1]:
        raise NotImplementedError(f"{peer} has no {algorithm}")
    if peer == "torch-process":
        import torch

        return getattr(torch.optim, algorithm)(params, fused=True, **kwargs)
    if peer == "deepspeed":
        if algorithm == "Adagrad":
            from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad

            return DeepSpeedCPUAdagrad(params, **kwargs)
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        # DeepSpeedCPUAdam is AdamW unless told otherwise
        return DeepSpeedCPUAdam(params, adamw_mode=algorithm == "AdamW", **kwargs)
    import bitsandbytes as bnb

    name = algorithm + ("8bit" if peer == "bnb-8bit" else "")
    return getattr(bnb.optim, name)(params, **kwargs)


class _Server:
    def __init__(self):
        self.steps = {}

    def probe(self, peers):
        return {peer: _probe(peer) for peer in peers}

    def setup(self, key, peer, algorithm, kwargs, shapes, dtype, threads=None, seed=0):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.steps.pop(key, None)
        try:
            gen = torch.Generator().manual_seed(seed)
            tdtype = getattr(torch, dtype)
            params = []
            for shape in shapes:
                p = torch.nn.Parameter(torch.randn(*shape, generator=gen, dtype=tdtype))
                p.grad = torch.randn(*shape, generator=gen, dtype=tdtype)
                params.append(p)
            opt = _optimizer(peer, algorithm, params, kwargs)
            opt.step()
        except Exception as exc:  # noqa: BLE001 - the parent reports it as a skipped cell
            return {"ok": False, "reason": _describe(exc)}
        self.steps[key] = opt.step
        return {"ok": True}

    def time(self, key, number):
        step = self.steps[key]
        t0 = time.perf_counter()
        for _ in range(number):
            step()
        return {"seconds": time.perf_counter() - t0}

    def drop(self, key):
        self.steps.pop(key, None)
        return {"ok": True}


def serve() -> None:
    # the protocol owns the real stdout; whatever the libraries print goes to stderr
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    server = _Server()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "exit":
            break
        try:
            reply = getattr(server, cmd)(**msg)
        except Exception as exc:  # noqa: BLE001 - answered, so the parent never hangs
            reply = {"ok": False, "error": _describe(exc)}
        out.write(json.dumps(reply) + "\n")


# ---- the client side (the benchmark process) ------------------------------------------------------------
class PeerProcess:
    """The peer process, started on first use; every call waits for its one-line answer."""

    def __init__(self, python: str | None = None, setup_timeout_s: float = 900.0, script: str | None = None):
        # setup_timeout_s bounds every answer: the slowest is the probe, which builds DeepSpeed's op
        self.python = python or sys.executable
        self.setup_timeout_s = setup_timeout_s
        self._proc = None
        self._log = None
        self._keys = 0
        self._script = script or os.path.abspath(__file__)  # the server (another only in tests)
        self.dead: str | None = None  # why the process is gone

    def _start(self):
        env = dict(os.environ)
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed: the CPU accelerator, no CUDA probing
        self._log = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [self.python, self._script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            bufsize=1,
        )

    def call(self, cmd: str, **msg) -> dict:
        if self.dead:
            raise RuntimeError(self.dead)
        if self._proc is None:
            try:
                self._start()
            except OSError as exc:
                self.dead = f"peer process did not start ({_describe(exc)})"
                raise RuntimeError(self.dead) from exc
        self._proc.stdin.write(json.dumps({"cmd": cmd, **msg}) + "\n")
        self._proc.stdin.flush()
        # one request, one line back: nothing stays buffered, so select() on the pipe is reliable
        ready, _, _ = select.select([self._proc.stdout], [], [], self.setup_timeout_s)
        if not ready:
            self._proc.kill()
            self.dead = f"peer process did not answer {cmd!r} within {self.setup_timeout_s:.0f} s (killed)"
            raise RuntimeError(self.dead)
        line = self._proc.stdout.readline()
        if not line:
            self._log.seek(0)
            tail = self._log.read()[-500:].strip().splitlines()
            self.dead = "peer process exited" + (f": {tail[-1]}" if tail else "")
            raise RuntimeError(self.dead)
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def probe(self, peers) -> dict:
        try:
            return self.call("probe", peers=list(peers))
        except (RuntimeError, OSError, ValueError) as exc:
            return {peer: {"available": False, "reason": str(exc)} for peer in peers}

    def step(self, peer: str, algorithm: str, kwargs: dict, shapes, dtype: str, threads=None) -> PeerStep:
        """A callable for measure_interleaved; raises RuntimeError(reason) if the peer cannot."""
        self._keys += 1
        key = f"{peer}-{self._keys}"
        reply = self.call(
            "setup",
            key=key,
            peer=peer,
            algorithm=algorithm,
            kwargs=kwargs,
            shapes=[list(s) for s in shapes],
            dtype=dtype,
            threads=threads,
        )
        if not reply.get("ok"):
            raise RuntimeError(reply.get("reason", "setup failed"))
        return PeerStep(self, key)

    def close(self):
        if self._proc is not None:
            try:
                if self._proc.poll() is None:
                    self._proc.stdin.write('{"cmd": "exit"}\n')
                    self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class PeerStep:
    """One optimizer in the peer process. Calling it steps once; timed(n) is what the harness uses."""

    def __init__(self, process: PeerProcess, key: str):
        self.process, self.key = process, key

    def timed(self, number: int) -> float:
        return self.process.call("time", key=self.key, number=number)["seconds"]

    def __call__(self):
        self.timed(1)

    def drop(self):
        try:
            self.process.call("drop", key=self.key)
        except RuntimeError:
            pass


if __name__ == "__main__":
    serve()
