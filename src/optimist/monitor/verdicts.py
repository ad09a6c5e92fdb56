"""Verdicts: plain-word judgements of a run's signals, each with its evidence and advice.

:class:`Diagnoser` keeps the signal history (``key -> [(step, value)]``) and re-checks the rules
after each record; a verdict is recorded at the first step where its rule holds, and kept. Rules
ask for sustained evidence (a median over the last few readings), so one noisy reading does not
raise an alarm. The thresholds live in :class:`Thresholds`; their defaults were tuned on the
*tuning* seeds of ``benchmarks/monitor_accuracy.py`` and are reported on other seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = (
    "diverging",
    "stalled",
    "oscillating",
    "vanishing_gradients",
    "exploding_gradients",
    "update_ratio_high",
    "update_ratio_low",
    "dead_relus",
    "overfitting",
    "healthy",
)

LABELS = {
    "diverging": "diverging",
    "stalled": "stalled",
    "oscillating": "oscillating",
    "vanishing_gradients": "vanishing gradients",
    "exploding_gradients": "exploding gradients",
    "update_ratio_high": "update ratio too high",
    "update_ratio_low": "update ratio too low",
    "dead_relus": "dead ReLUs",
    "overfitting": "overfitting",
    "healthy": "healthy",
}
"""Each verdict in words, for report columns."""

LOSS_VERDICTS = ("diverging", "stalled", "oscillating")
"""The verdicts that need only the loss and the global gradient norm: all that applies where
there is no model (a 2-D test function), so no layers, update ratios or ReLUs."""

ADVICE = {
    "diverging": "lower the learning rate (try /10), clip gradients, and check the data for "
    "NaN/inf and unscaled inputs",
    "stalled": "raise the learning rate (try x10), add a schedule with warm-up, or try "
    "momentum / Adam",
    "oscillating": "lower the learning rate (try /3 to /10) or raise the batch size",
    "vanishing_gradients": "use ReLU-family activations, a He/Glorot initialisation, "
    "normalisation layers or residual connections, or fewer layers",
    "exploding_gradients": "clip gradients, lower the learning rate, and check the "
    "initialisation scale (He/Glorot) and the input scaling",
    "update_ratio_high": "the learning rate is too large for this layer: lower it, or give "
    "the layer its own parameter group with a smaller one",
    "update_ratio_low": "the learning rate is too small for this layer: raise it, or use an "
    "adaptive method (Adam, RMSprop)",
    "dead_relus": "lower the learning rate, initialise biases at 0 or slightly positive, "
    "or use LeakyReLU/GELU",
    "overfitting": "stop earlier (EarlyStopping), add weight decay, dropout or data "
    "augmentation, or use more data / a smaller model",
    "healthy": "nothing to change",
}


@dataclass(frozen=True)
class Verdict:
    """One judgement: ``name`` (one of :data:`VERDICTS`), the first ``step`` it held, the
    ``evidence`` (numbers, in words), the ``advice``, and the ``layer`` for per-layer verdicts."""

    name: str
    step: int
    evidence: str
    advice: str
    layer: str | None = None

    def __str__(self) -> str:
        where = f" in layer {self.layer}" if self.layer else ""
        return f"{self.name}{where} (step {self.step}): {self.evidence}. Try: {self.advice}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Thresholds:
    """Rule thresholds (defaults tuned on the benchmark's tuning seeds)."""

    window: int = 3  # readings a median is taken over ("sustained")
    diverge_loss_factor: float = 3.0  # a loss reading (a mean over `every` steps) > factor x first
    diverge_grad_factor: float = 1e3  # a grad-norm reading > factor x the first
    stall_min_readings: int = 10  # loss readings before a stall may be judged
    stall_min_drop: float = 0.05  # stalled if the loss fell by less than this fraction
    oscillate_window: int = 12
    oscillate_sign_changes: float = 0.6  # share of direction changes in the window
    oscillate_roughness: float = 0.15  # mean |change| / mean loss in the window
    oscillate_level: float = 0.5  # ... while the loss is still above this share of the first
    vanishing_ratio: float = 1e-4  # layer gradient RMS / largest layer RMS
    exploding_grad_rms: float = 1.0  # a reading of a layer's gradient RMS (per entry)
    min_layer_size: int = 64  # smaller layers: no absolute gradient scale or update ratio rule
    update_ratio_high: float = 0.1  # median of the last readings ...
    update_ratio_extreme: float = 1.0  # ... or one step that moved a layer by its own size
    update_ratio_low: float = 1e-5
    update_ratio_readings: int = 5
    dead_share: float = 0.5
    overfit_rise: float = 0.1  # val loss > (1 + rise) x its minimum ...
    overfit_readings: int = 2  # ... for this many readings after the minimum
    extra: dict[str, Any] = field(default_factory=dict)


Series = dict[str, list[tuple[int, float]]]


def _values(series: Series, key: str, last: int | None = None) -> list[float]:
    """The values of ``key`` (only the ``last`` ones if given: the rules look at the tail)."""
    points = series.get(key, [])
    return [v for _, v in (points[-last:] if last else points)]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)  # statistics.mean is exact, and slow


def _first(series: Series, key: str, n: int = 1) -> list[float]:
    return [v for _, v in series.get(key, [])[:n]]


def _median_last(values: list[float], n: int) -> float:
    tail = sorted(values[-n:])  # statistics.median, without its per-call overhead
    mid = len(tail) // 2
    return tail[mid] if len(tail) % 2 else (tail[mid - 1] + tail[mid]) / 2


class Diagnoser:
    """Signal history plus the rules; :meth:`add` a record, then read :attr:`found`."""

    def __init__(
        self, thresholds: Thresholds | None = None, layer_sizes: dict[str, int] | None = None
    ):
        self.t = thresholds or Thresholds()
        self.layer_sizes = dict(layer_sizes or {})
        self.series: Series = {}
        self.found: dict[tuple[str, str | None], Verdict] = {}
        self.last_step = 0
        self._prefixed: dict[str, list[str]] = {}  # prefix -> layers (cleared on a new key)

    def _layers(self, prefix: str) -> list[str]:
        """The layers with a ``prefix`` signal (``grad_norm/`` -> ``["fc1", ...]``)."""
        found = self._prefixed.get(prefix)
        if found is None:
            found = [k[len(prefix) :] for k in self.series if k.startswith(prefix)]
            self._prefixed[prefix] = found
        return found

    def add(self, record: dict[str, Any]) -> list[Verdict]:
        """Adds one record (``step`` plus signal values); returns the verdicts new at this step."""
        step = int(record["step"])
        self.last_step = max(self.last_step, step)
        for key, value in record.items():
            if key not in ("step", "type") and isinstance(value, (int, float)):
                points = self.series.get(key)
                if points is None:
                    points = self.series[key] = []
                    self._prefixed.clear()
                points.append((step, float(value)))
        new = []
        for name, evidence, layer in self._check(record):
            if (name, layer) not in self.found:
                v = Verdict(name, step, evidence, ADVICE[name], layer)
                self.found[(name, layer)] = v
                new.append(v)
        return new

    def verdicts(self) -> list[Verdict]:
        """The verdicts found so far in order of steps, or ``[healthy]`` when none."""
        found = sorted(self.found.values(), key=lambda v: (v.step, VERDICTS.index(v.name)))
        if found:
            return found
        n = len(self.series.get("loss", [])) + len(self.series.get("grad_norm", []))
        evidence = f"no rule fired over {n} readings up to step {self.last_step}"
        return [Verdict("healthy", self.last_step, evidence, ADVICE["healthy"])]

    # ---- rules ---------------------------------------------------------------------------------
    def _check(self, record: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        # a rule runs on the records that can change its answer; a run-wide verdict already
        # found is not looked for again (each is recorded once)
        out: list[tuple[str, str, str | None]] = []
        keys, found = record.keys(), self.found
        if ("diverging", None) not in found and (
            "loss" in keys or "grad_norm" in keys or "nonfinite" in keys
        ):
            out += self._diverging()
        if "loss" in keys:
            if ("stalled", None) not in found:
                out += self._stalled()
            if ("oscillating", None) not in found:
                out += self._oscillating()
        if "val_loss" in keys and ("overfitting", None) not in found:
            out += self._overfitting()
        if "grad_norm" in keys:
            out += self._gradients() + self._update_ratio()
        if self._layers("dead/") and any(k.startswith("dead/") for k in keys):
            out += self._dead()
        return out

    def _diverging(self) -> list[tuple[str, str, str | None]]:
        t, series = self.t, self.series
        loss, grad, nonfinite = series.get("loss"), series.get("grad_norm"), series.get("nonfinite")
        if loss and not math.isfinite(loss[-1][1]):
            return [("diverging", f"the loss is {loss[-1][1]}", None)]
        if nonfinite and nonfinite[-1][1] > 0:
            share = nonfinite[-1][1]
            return [("diverging", f"{share:.1%} of the gradient entries are NaN/inf", None)]
        if loss:
            first, last = loss[0][1], loss[-1][1]
            if first > 0 and last > t.diverge_loss_factor * first:
                return [("diverging", f"the loss rose from {first:.4g} to {last:.4g}", None)]
        if grad:
            first, last = grad[0][1], grad[-1][1]
            if first > 0 and last > t.diverge_grad_factor * first:
                evidence = f"the gradient norm grew from {first:.3g} to {last:.3g}"
                return [("diverging", evidence, None)]
        return []

    def _stalled(self) -> list[tuple[str, str, str | None]]:
        t, points = self.t, self.series.get("loss", [])
        if len(points) < t.stall_min_readings:
            return []
        recent = [v for _, v in points[-t.stall_min_readings :]]
        head = [v for _, v in points[: t.window]]
        if not all(map(math.isfinite, recent + head)):
            return []
        first = _mean(head)
        now = _mean(recent[-t.window :])
        if not (first > 0 and now > (1.0 - t.stall_min_drop) * first):
            return []
        rough = _mean([abs(b - a) for a, b in zip(recent, recent[1:], strict=False)])
        if rough < t.oscillate_roughness * abs(_mean(recent)):  # else: oscillating
            steps = points[-1][0] - points[0][0]
            evidence = f"the loss moved from {first:.4g} to {now:.4g} in {steps} steps"
            return [("stalled", evidence, None)]
        return []

    def _oscillating(self) -> list[tuple[str, str, str | None]]:
        t, loss = self.t, _values(self.series, "loss", self.t.oscillate_window)
        if len(loss) < t.oscillate_window or not all(map(math.isfinite, loss)):
            return []
        diffs = [b - a for a, b in zip(loss, loss[1:], strict=False)]
        changes = sum((a > 0) != (b > 0) for a, b in zip(diffs, diffs[1:], strict=False)) / (
            len(diffs) - 1
        )
        if changes < t.oscillate_sign_changes:
            return []
        level = _mean([abs(v) for v in loss])
        rough = _mean([abs(d) for d in diffs]) / level if level > 0 else 0.0
        half = len(loss) // 2
        first = self.series["loss"][0][1]
        no_progress = (
            _mean(loss[half:]) >= 0.9 * _mean(loss[:half]) and level >= t.oscillate_level * first
        )
        if rough >= t.oscillate_roughness and no_progress:
            evidence = (
                f"the loss changed direction at {changes:.0%} of the last {len(loss)} readings, "
                f"by {rough:.0%} of its level on average, without net progress"
            )
            return [("oscillating", evidence, None)]
        return []

    def _rms(self, layer: str) -> tuple[float | None, float | None]:
        """A layer's gradient RMS per entry: (the latest reading, the median of the last
        ``window``); ``None`` while there are too few readings."""
        values = _values(self.series, f"grad_norm/{layer}", self.t.window)
        if not values:
            return None, None
        root = math.sqrt(self.layer_sizes.get(layer, 1))
        median = None
        if len(values) >= self.t.window:
            median = _median_last(values, self.t.window) / root
        return values[-1] / root, median

    def _dead_now(self) -> bool:
        for layer in self._layers("dead/"):
            values = _values(self.series, f"dead/{layer}", self.t.window)
            if (
                len(values) >= self.t.window
                and _median_last(values, self.t.window) >= self.t.dead_share
            ):
                return True
        return False

    def _gradients(self) -> list[tuple[str, str, str | None]]:
        t = self.t
        out: list[tuple[str, str, str | None]] = []
        rms: dict[str, float] = {}
        for layer in self._layers("grad_norm/"):
            last, median = self._rms(layer)
            if (
                self.layer_sizes.get(layer, 0) >= t.min_layer_size
                and last
                and last > t.exploding_grad_rms
            ):
                evidence = f"its gradient RMS reached {last:.3g} per entry"
                out.append(("exploding_gradients", evidence, layer))
            if median is not None and math.isfinite(median):
                rms[layer] = median
        # zero gradients behind dead ReLUs are the dead-ReLU verdict's, not this one's
        if len(rms) >= 2:
            top_layer = max(rms, key=rms.__getitem__)
            top = rms[top_layer]
            low = [layer for layer, r in rms.items() if top > 0 and r < t.vanishing_ratio * top]
            if low and not self._dead_now():
                for layer in low:
                    r = rms[layer]
                    evidence = (
                        f"its gradient RMS {r:.2e} is {r / top:.1e} of layer {top_layer}'s "
                        f"({top:.2e})"
                    )
                    out.append(("vanishing_gradients", evidence, layer))
        return out

    def _update_ratio(self) -> list[tuple[str, str, str | None]]:
        t, out = self.t, []
        for layer in self._layers("update_ratio/"):
            if self.layer_sizes.get(layer, 0) < t.min_layer_size:
                continue
            values = _values(self.series, f"update_ratio/{layer}", t.update_ratio_readings)
            if values and values[-1] > t.update_ratio_extreme:
                evidence = f"one step changed its weights by {values[-1]:.2g}x their norm"
                out.append(("update_ratio_high", evidence, layer))
                continue
            if len(values) < t.update_ratio_readings or not all(map(math.isfinite, values)):
                continue
            m = _median_last(values, t.update_ratio_readings)
            if m > t.update_ratio_high:
                out.append(
                    ("update_ratio_high", f"||dw||/||w|| is {m:.2g} (~1e-3 is usual)", layer)
                )
            elif m < t.update_ratio_low and not self._dead_now():
                out.append(("update_ratio_low", f"||dw||/||w|| is {m:.2g} (~1e-3 is usual)", layer))
        return out

    def _dead(self) -> list[tuple[str, str, str | None]]:
        t, out = self.t, []
        for layer in self._layers("dead/"):
            values = _values(self.series, f"dead/{layer}", t.window)
            if len(values) >= t.window and _median_last(values, t.window) >= t.dead_share:
                m = _median_last(values, t.window)
                out.append(
                    ("dead_relus", f"{m:.0%} of its units output 0 for whole batches", layer)
                )
        return out

    def _overfitting(self) -> list[tuple[str, str, str | None]]:
        t, val = self.t, self.series.get("val_loss", [])
        if len(val) < 3:
            return []
        values = [v for _, v in val]
        i_min = min(range(len(values)), key=values.__getitem__)
        best, after = values[i_min], values[i_min + 1 :]
        if (
            len(after) >= t.overfit_readings
            and all(v > (1 + t.overfit_rise) * best for v in after[-t.overfit_readings :])
            and math.isfinite(best)
        ):
            train = self.series.get("loss", [])
            at_best = [v for s, v in train if s <= val[i_min][0]]
            now = train[-1][1] if train else math.nan
            if not at_best or now < at_best[-1]:
                evidence = (
                    f"validation loss rose from {best:.4g} (step {val[i_min][0]}) to "
                    f"{values[-1]:.4g} while the training loss fell to {now:.4g}"
                )
                return [("overfitting", evidence, None)]
        return []


def health(verdicts: list[Verdict]) -> tuple[str, list[str]]:
    """One word for a report column, and the verdict names: ``("healthy", [])``,
    ``("diverged", [...])`` when diverging is among them, else ``("warning", [...])``."""
    names = [v.name for v in verdicts if v.name != "healthy"]
    if not names:
        return "healthy", []
    names = list(dict.fromkeys(names))
    return ("diverged" if "diverging" in names else "warning"), names
