"""The METEOR jar's process (pycocoevalcap's Meteor): started once, reused, always stopped.

Why a session: the jar takes ~7 s to start and load its paraphrase table, and its EVAL call is stateless, so one
process gives the same numbers for every category (and every model) as one process each. pycocoevalcap's Meteor
holds a lock that compute_score does not release on error, and Meteor.__del__ then blocks on it forever at garbage
collection: `close` releases it and stops the process itself.

    with MeteorSession() as s:
        corpus, per_sample = s.meteor(gts, res)     # gts/res as nlg.coco_tokenize_pairs returns them
"""
from __future__ import annotations

import shutil
import subprocess

from medvl.metrics.errors import MetricUnavailable


def require_java(metric: str) -> str:
    """pycocoevalcap starts `java` from PATH; check first so the failure names the cause."""
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailable(metric, "no `java` executable on PATH; pycocoevalcap runs its PTBTokenizer and "
                                        "METEOR as Java jars (install a JRE, e.g. apt-get install default-jre-headless)")
    return java


def check_meteor_fields(gts: dict, res: dict) -> None:
    """Refuse text holding "|||", the METEOR jar's field separator (it would split into extra references)."""
    for k in gts:
        if any("|||" in t for t in list(gts[k]) + list(res[k])):
            raise MetricUnavailable("meteor", f"sample {k}: text contains '|||', the METEOR jar's field separator; "
                                              "tokenize with ptb_tokenize (it splits it) before scoring")


class MeteorSession:
    """One METEOR JVM, started on first use; `close` always stops it (see the module docstring)."""

    def __init__(self):
        self._meteor = None

    def meteor(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        """(corpus METEOR, per-segment scores) of tokenized input; MetricUnavailable naming the cause on failure."""
        require_java("meteor")
        check_meteor_fields(gts, res)
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor  # starts a JVM: only when METEOR is asked for

            try:
                self._meteor = Meteor()
            except OSError as e:
                raise MetricUnavailable("meteor", f"could not start the METEOR jar: {e!r}") from e
        m = self._meteor
        try:
            score, scores = m.compute_score(gts, res)
            return float(score), [float(s) for s in scores]
        except (OSError, ValueError) as e:  # broken pipe / empty line from a dead JVM
            proc, err = m.meteor_p, ""
            try:
                proc.wait(timeout=5)  # EOF on stdout can arrive just before the JVM has exited
            except subprocess.TimeoutExpired:
                pass
            status = proc.poll()
            if status is not None and proc.stderr is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:]
            self.close()
            raise MetricUnavailable("meteor", f"METEOR jar failed ({e!r}); exit status {status}; "
                                              f"stderr: {err.strip() or '<none>'}") from e

    def close(self) -> None:
        m, self._meteor = self._meteor, None
        if m is None:
            return
        if m.lock.locked():
            m.lock.release()
        try:
            m.meteor_p.stdin.close()
        except OSError:  # unflushed input to a JVM that already died
            pass
        m.meteor_p.kill()
        m.meteor_p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
